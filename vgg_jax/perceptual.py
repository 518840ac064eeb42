"""Research use of the features: the perceptual loss, and reading a model's shape off its variables."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from vgg_jax.configs import CONFIGS, conv_layers, resolve_config
from vgg_jax.model import VGG

PERCEPTUAL_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def infer_model(variables: Mapping[str, Any], config: Optional[str] = None) -> VGG:
    """The VGG whose parameters these are: config, BN, widths and classes read off the tree.

    A and A-LRN have the same parameters: pass `config="A-LRN"` for the latter.
    """
    params = variables["params"]
    if config is None:
        convs = {name: params[name]["kernel"].shape[0] for name in params if name.startswith("conv") and not name.endswith("_bn")}
        for candidate in CONFIGS:
            if convs == {name: spec.kernel_size for name, _, spec in conv_layers(candidate)}:
                config = candidate
                break
        if config is None:
            raise ValueError(f"these parameters match no VGG config (convs {sorted(convs)}); pass config=")
    config = resolve_config(config)
    first = conv_layers(config)[0]
    width_scale = params[first[0]]["kernel"].shape[-1] / first[2].features
    return VGG(
        config=config,
        num_classes=params["fc8"]["kernel"].shape[-1] if "fc8" in params else 1000,
        fc_width=params["fc7"]["kernel"].shape[-1] if "fc7" in params else 4096,
        width_scale=width_scale,
        batch_norm=any(name.endswith("_bn") for name in params),
    )


def perceptual_loss(
    variables: Mapping[str, Any],
    x: jax.Array,
    y: jax.Array,
    layers: Sequence[str] = PERCEPTUAL_LAYERS,
    weights: Optional[Sequence[float]] = None,
    config: Optional[str] = None,
) -> jax.Array:
    """Sum over layers of weight x mean squared difference of the VGG features of `x` and `y`.

    Built on `VGG.features` (one pass each, stopping at the deepest layer), so
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

