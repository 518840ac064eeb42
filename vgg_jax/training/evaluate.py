"""The paper's evaluation (Sec. 3.2): centre crop, dense, multi-crop, and dense plus multi-crop.

Every method turns a batch of images into class probabilities; several test
scales Q average their softmax. Images come in as square float batches (the
`EvalTransform` of `vgg_jax.training.data`: short side rescaled, centre square) and are
rescaled to each Q here, on the device.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax.model.vgg import VGG

METHODS = ("center", "dense", "multi-crop", "dense+multi-crop")
GRID = 5  # multi-crop: a 5x5 grid of crops times 2 flips = 50 views per scale
VIEWS_PER_CALL = 256  # images are split so that one call of the network sees at most this many views


def views_per_image(method: str, scales: Sequence[int], flip: bool = False) -> int:
    """How many views of each image the network sees: its cost relative to one centre crop.

    Centre crop 1 (2 with `flip`), dense 2 (the image and its flip, each at
    full size), multi-crop 50 (5x5 crops, each flipped), dense+multi-crop 52;
    times the number of test scales.
    """
    per_scale = {
        "center": 2 if flip else 1,
        "dense": 2,
        "multi-crop": 2 * GRID * GRID,
        "dense+multi-crop": 2 + 2 * GRID * GRID,
    }
    if method not in per_scale:
        raise ValueError(f"unknown evaluation method {method!r}; choose from {', '.join(METHODS)}")
    return per_scale[method] * len(scales)


def _rescale(images: jax.Array, size: int) -> jax.Array:
    if images.shape[1] == size and images.shape[2] == size:
        return images
    return jax.image.resize(
        images, (images.shape[0], size, size, images.shape[3]), "bilinear", antialias=True
    )


def _flip(images: jax.Array) -> jax.Array:
    return images[:, :, ::-1]


def multi_crop_views(images: jax.Array, crop_size: int) -> jax.Array:
    """The 50 views of each image: a 5x5 grid of crops, each also flipped: (N, 50, crop, crop, C)."""
    _, height, width, _ = images.shape
    tops = np.linspace(0, height - crop_size, GRID).round().astype(int)
    lefts = np.linspace(0, width - crop_size, GRID).round().astype(int)
    crops = [images[:, top : top + crop_size, left : left + crop_size] for top in tops for left in lefts]
    views = crops + [_flip(crop) for crop in crops]
    return jnp.stack(views, axis=1)


def make_predict(
    model: VGG, method: str, scales: Sequence[int], crop_size: int, flip: bool = False
) -> Callable:
    """A jitted `(variables, images) -> probabilities` for one method over test scales Q.

    - "center": the centre `crop_size` crop at each Q (and its flip, if `flip`);
    - "dense": the whole image at each Q through the convolutional classifier,
      the softmax of the image and its flip averaged;
    - "multi-crop": 50 views per Q (5x5 grid, 2 flips);
    - "dense+multi-crop": the average of the two.
    """
    if method not in METHODS:
        raise ValueError(f"unknown evaluation method {method!r}; choose from {', '.join(METHODS)}")
    scales = tuple(int(q) for q in scales)
    if not scales or min(scales) < crop_size:
        raise ValueError(f"test scales Q must be at least the crop size {crop_size}, got {scales}")
    key = (model, method, scales, int(crop_size), bool(flip))
    try:
        hash(model)
    except TypeError:  # a module with unhashable fields: the same function, built afresh
        return _predict_function.__wrapped__(*key)
    return _predict_function(*key)


@functools.lru_cache(maxsize=16)
def _predict_function(
    model: VGG, method: str, scales: tuple[int, ...], crop_size: int, flip: bool
) -> Callable:
    """`make_predict`'s function, one per model and method: a training run's periodic evaluations reuse
    one jitted function and its compiled programs instead of compiling anew each time."""

    def softmax(variables, images, dense=False):
        return jax.nn.softmax(model.apply(variables, images, dense=dense), axis=-1)

    def center(variables, images):
        offset_y, offset_x = (images.shape[1] - crop_size) // 2, (images.shape[2] - crop_size) // 2
        crop = images[:, offset_y : offset_y + crop_size, offset_x : offset_x + crop_size]
        probs = softmax(variables, crop)
        return (probs + softmax(variables, _flip(crop))) / 2 if flip else probs

    def dense(variables, images):
        return (softmax(variables, images, dense=True) + softmax(variables, _flip(images), dense=True)) / 2

    def multi_crop(variables, images):
        views = multi_crop_views(images, crop_size)
        batch, count = views.shape[:2]
        probs = softmax(variables, views.reshape(batch * count, *views.shape[2:]))
        return probs.reshape(batch, count, -1).mean(axis=1)

    per_scale = {
        "center": center,
        "dense": dense,
        "multi-crop": multi_crop,
        "dense+multi-crop": lambda v, x: (dense(v, x) + multi_crop(v, x)) / 2,
    }[method]

    @jax.jit
    def predict(variables, images):
        return jnp.mean(jnp.stack([per_scale(variables, _rescale(images, q)) for q in scales]), axis=0)

    return predict


def topk_errors(probs: np.ndarray, labels: np.ndarray, k: int = 5) -> tuple[int, int]:
    """Counts of top-1 and top-k misses."""
    ranked = np.argsort(-probs, axis=-1)
    top1 = int(np.sum(ranked[:, 0] != labels))
    topk = int(np.sum(~np.any(ranked[:, :k] == labels[:, None], axis=-1)))
    return top1, topk


def evaluate(
    model: VGG,
    variables: dict[str, Any],
    batches: Iterable[dict[str, Any]],
    method: str = "center",
    scales: Sequence[int] = (224,),
    crop_size: int = 224,
    flip: bool = False,
    reduce: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> dict[str, Any]:
    """Top-1 and top-5 error (as fractions) of one method over every batch, as in Tables 3 to 5.

    `reduce` combines the counts (top-1 misses, top-5 misses, images) of
    several processes, each evaluating its own shard (`parallel.sum_over_processes`).
    Each batch is run in pieces of at most `VIEWS_PER_CALL` views (multi-crop
    sees 50 per image and scale), and `progress` is called with the views
    done after each piece.
    """
    predict = make_predict(model, method, scales, crop_size, flip)
    views = views_per_image(method, scales, flip)
    piece = max(1, VIEWS_PER_CALL // views)
    misses1 = misses5 = count = 0
    for batch in batches:
        images = np.asarray(batch["image"])
        parts = []
        for start in range(0, len(images), piece):
            parts.append(np.asarray(predict(variables, jnp.asarray(images[start : start + piece]))))
            if progress is not None:
                progress(len(parts[-1]) * views)
        probs = np.concatenate(parts)
        labels = np.asarray(batch["label"])
        top1, top5 = topk_errors(probs, labels, k=min(5, probs.shape[-1]))
        misses1, misses5, count = misses1 + top1, misses5 + top5, count + len(labels)
    if reduce is not None:
        misses1, misses5, count = (int(v) for v in reduce(np.array([misses1, misses5, count], np.int64)))
    if count == 0:
        raise ValueError("evaluation got no images")
    return {
        "method": method,
        "scales": list(scales),
        "top1_error": misses1 / count,
        "top5_error": misses5 / count,
        "count": count,
    }
