"""ImageNet's 1,000 class names, in the order of the published weights' fc8 rows, and top-k decoding.

`imagenet_classes.txt` ships inside the package (no download): one name per
line, index 0 to 999, the ILSVRC-2012 synsets in sorted WNID order, with the
short names torchvision publishes (`torchvision.models._meta`, BSD-3-Clause),
where the two names WordNet uses twice are told apart ("crane bird" 134 and
"crane" 517, "maillot" 638 and "maillot tank suit" 639). The torchvision and
Keras VGG weights use this order.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any, Optional, Sequence

import numpy as np

NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class names; `class_names()[i]` is the name of fc8's output i."""
    text = (
        importlib.resources.files("vgg_jax.weights")
        .joinpath("imagenet_classes.txt")
        .read_text(encoding="utf-8")
    )
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != NUM_CLASSES:
        raise RuntimeError(
            f"vgg_jax/imagenet_classes.txt holds {len(names)} names, not {NUM_CLASSES}; reinstall vgg_jax"
        )
    return names


def decode_predictions(
    logits: Any, top: int = 5, names: Optional[Sequence[str]] = None
) -> list[list[tuple[int, str, float]]]:
    """The `top` classes of each image, best first, as `(index, name, probability)`.

    Args:
        logits: (N, C) or (C,) scores (softmax is applied here; probabilities
            that already sum to one pass through it unchanged in order, not in value).
        top: how many classes per image, 1 to C.
        names: the C class names; default ImageNet's 1,000 (`class_names()`).

    Returns:
        One list per image (a single list of lists for a 1-D input too).
    """
    names = class_names() if names is None else tuple(names)
    scores = np.asarray(logits, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[None]
    if scores.ndim != 2 or scores.shape[-1] != len(names):
        what = "ImageNet's classes" if len(names) == NUM_CLASSES else f"{len(names)} class names"
        raise ValueError(
            f"decode_predictions needs logits of shape (N, {len(names)}) for {what}, got {np.shape(logits)}"
        )
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= len(names):
        raise ValueError(f"top must be an integer from 1 to {len(names)}, got {top!r}")
    if not np.isfinite(scores).all():
        raise ValueError("decode_predictions got NaN or Inf logits")
    shifted = scores - scores.max(axis=-1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    best = np.argsort(-probabilities, axis=-1, kind="stable")[:, :top]
    return [[(int(i), names[i], float(row[i])) for i in indices] for row, indices in zip(probabilities, best)]
