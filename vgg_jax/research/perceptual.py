"""Research use of the features: the perceptual loss, LPIPS, and reading a model's shape off its variables."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax.model.infer import infer_model
from vgg_jax.model.vgg import VGG

PERCEPTUAL_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def perceptual_loss(
    variables: Mapping[str, Any],
    x: jax.Array,
    y: jax.Array,
    layers: Sequence[str] = PERCEPTUAL_LAYERS,
    weights: Optional[Sequence[float]] = None,
    config: Optional[str] = None,
) -> jax.Array:
    """Sum over layers of weight x mean squared difference of the VGG features of `x` and `y`.

    Built on `VGG.features` (one pass each, up to the block of the deepest layer), so
    `jax.grad` with respect to `x` works, as style-transfer and LPIPS-like code
    use it. Images are preprocessed already (see `vgg_jax.preprocess`).
    """
    model = infer_model(variables, config)
    layers = tuple(layers)
    weights = tuple(weights) if weights is not None else (1.0,) * len(layers)
    if len(weights) != len(layers):
        raise ValueError(f"weights has {len(weights)} entries for {len(layers)} layers")
    features_x = model.apply(variables, x, layers=layers, method=VGG.features)
    features_y = model.apply(variables, y, layers=layers, method=VGG.features)
    return sum(w * jnp.mean(jnp.square(features_x[n] - features_y[n])) for n, w in zip(layers, weights))


LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
# LPIPS v0.1's input scaling (its ScalingLayer): images in [-1, 1] become (x - shift) / scale.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_WEIGHTS_FILE = "lpips_vgg_v0.1.npz"


@functools.lru_cache(maxsize=1)
def lpips_weights() -> dict[str, np.ndarray]:
    """LPIPS v0.1's linear calibration for VGG-16: one non-negative weight per channel of each of the 5
    layers.

    1,472 numbers, converted from the `lpips` package's `weights/v0.1/vgg.pth`
    (Zhang et al. 2018, BSD-2-Clause licence) and shipped with vgg_jax. Read
    once per process (read-only arrays), not at every `lpips` call.
    """
    with (
        resources.files("vgg_jax.research").joinpath(LPIPS_WEIGHTS_FILE).open("rb") as file,
        np.load(file) as arrays,
    ):
        weights = {name: np.asarray(arrays[name], np.float32) for name in LPIPS_LAYERS}
    for array in weights.values():
        array.setflags(write=False)
    return weights


def lpips(
    images_a: jax.Array,
    images_b: jax.Array,
    variables: Mapping[str, Any],
    weights: Optional[Mapping[str, Any]] = None,
) -> jax.Array:
    """LPIPS (VGG variant, v0.1): the learned perceptual distance of each image pair, shape (N,).

    As the `lpips` package's `LPIPS(net="vgg")`: the images are scaled by
    LPIPS's shift and scale, each of relu1_2 ... relu5_3 is normalised to unit
    length over channels at every position, and the squared differences are
    weighted per channel by the calibration (`lpips_weights()`), averaged over
    positions and summed over the layers. Differentiable and jittable.

    Args:
        images_a, images_b: float NHWC RGB images in [-1, 1] (the package's
            convention; from [0, 1], pass 2 * x - 1; from uint8, x / 127.5 - 1),
            at least 32x32. Integer images, and float images outside [-1, 1]
            or not finite, are refused with a ValueError (outside `jit`, where
            the values are known), as `preprocess` refuses them.
        variables: VGG-16 variables (`vgg_jax.pretrained("vgg16")`, or any converter's).
        weights: the calibration, by layer name; default the published v0.1 weights.
    """
    images_a, images_b = _lpips_images(images_a, "images_a"), _lpips_images(images_b, "images_b")
    if images_a.shape != images_b.shape:
        raise ValueError(
            f"images_a and images_b must have the same shape, got {images_a.shape} and {images_b.shape}"
        )
    model = infer_model(variables, "D")
    weights = lpips_weights() if weights is None else weights
    shift, scale = jnp.asarray(LPIPS_SHIFT, jnp.float32), jnp.asarray(LPIPS_SCALE, jnp.float32)
    both = (jnp.concatenate([images_a, images_b]) - shift) / scale
    features = model.apply(variables, both, layers=LPIPS_LAYERS, method=VGG.features)
    count = images_a.shape[0]
    distance = jnp.zeros((count,), jnp.float32)
    for name in LPIPS_LAYERS:
        feature = features[name].astype(jnp.float32)
        unit = feature / (jnp.sqrt(jnp.sum(jnp.square(feature), axis=-1, keepdims=True)) + 1e-10)
        squared = jnp.square(unit[:count] - unit[count:])
        distance = distance + jnp.mean(squared @ jnp.asarray(weights[name], jnp.float32), axis=(1, 2))
    return distance


def _lpips_images(images: Any, name: str) -> jax.Array:
    """Float images in [-1, 1], or a ValueError that says how to get there (0-255 and uint8 images give
    wrong distances)."""
    array = jnp.asarray(images)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(
            f"lpips takes float images in [-1, 1], got {name} of dtype {array.dtype}: pass x / 127.5 - 1 for "
            "uint8 images"
        )
    try:
        finite = bool(jnp.all(jnp.isfinite(array)))
        low, high = (float(jnp.min(array)), float(jnp.max(array))) if array.size and finite else (0.0, 0.0)
    except jax.errors.ConcretizationTypeError:  # traced under jit: the caller keeps the contract
        return array
    if not finite:
        raise ValueError(f"lpips got NaN or Inf values in {name}")
    if low < -1.01 or high > 1.01:
        hint = "x / 127.5 - 1 for 0-255 images" if high > 2 else "2 * x - 1 for [0, 1] images"
        raise ValueError(f"lpips takes images in [-1, 1], got {name} from {low:g} to {high:g}: pass {hint}")
    return array
