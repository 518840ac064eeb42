"""Classifying image files with ImageNet weights: read, preprocess as the weights expect, batch, decode.

`scripts/predict.py` is the command line over `classify`. Centre crop (the
usual evaluation: short side to 256/224 of the crop, centre crop) or the
paper's dense evaluation (short side to 256, the whole image through the
fully-convolutional net, class scores averaged).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from vgg_jax.model.infer import init_image_size
from vgg_jax.model.vgg import VGG
from vgg_jax.util import images as images_lib
from vgg_jax.weights import imagenet, resolve
from vgg_jax.weights.named import require_pixels

DENSE_SCALE = 256  # the paper's test scale Q for dense evaluation of 224-pixel models
read_image = images_lib.read_image


def centre_view(image: np.ndarray, size: int, mode: Optional[str] = "torch") -> np.ndarray:
    """The centre `size` crop of the image's centre square at size * 256 / 224, resized by the rule of the
    pixels'
    peer: torchvision's `Resize` + `CenterCrop` for "torch" (and "paper"), Keras's
        `load_img(keep_aspect_ratio=True, interpolation="bilinear")`
    for "caffe" (`vgg_jax.util.images`)."""
    return images_lib.centre_view(image, size, rule=images_lib.resize_rule(mode))


def load_model(
    model: str, source: str = "torchvision", config: Optional[str] = None, preprocess: Optional[str] = None
) -> resolve.Resolved:
    """The model `model` names (`vgg_jax.weights.resolve`: a published name, a weights file, a run), with its
    pixel convention.

    A weights file that does not say which pixels it expects needs `preprocess`.
    """
    return require_pixels(resolve.resolve(model, config, preprocess, source=source))


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Image files, with each directory replaced by the images directly in it, sorted (as timm's
    inference.py takes a folder); a directory with none is an error naming it."""
    expanded = []
    for path in paths:
        if not os.path.isdir(path):
            expanded.append(path)
            continue
        found = sorted(
            os.path.join(path, name)
            for name in os.listdir(path)
            if name.lower().endswith(images_lib.IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name))
        )
        if not found:
            raise ValueError(
                f"{path} holds no image files ({', '.join(images_lib.IMAGE_EXTENSIONS)}) directly in it"
            )
        expanded.extend(found)
    return expanded


def _outputs(
    apply: Callable[[Any, Any], Any],
    variables: Mapping[str, Any],
    paths: Sequence[str],
    size: int,
    mode: str,
    dense: bool,
    batch_size: int,
    mean_rgb: Optional[tuple[float, float, float]],
) -> tuple[list[str], Optional[np.ndarray], dict[str, str]]:
    """`apply(variables, pixels)` over every readable image: (the paths read, their outputs stacked, the
    errors by path). Centre-crop views go `batch_size` at a time; dense evaluation one image at its size."""
    read, errors = [], {}
    for path in paths:
        try:
            read.append((path, images_lib.read_image(path)))
        except ValueError as error:
            errors[path] = str(error)
    outputs = []
    if dense:
        for _, image in read:
            view = images_lib.rescale_short_side(image, round(size * DENSE_SCALE / 224))
            outputs.append(np.asarray(apply(variables, images_lib.preprocess(view[None], mode, mean_rgb))))
    elif read:
        views = np.stack([centre_view(image, size, mode) for _, image in read])
        for start in range(0, len(views), batch_size):
            pixels = images_lib.preprocess(views[start : start + batch_size], mode, mean_rgb)
            outputs.append(np.asarray(apply(variables, pixels)))
    return [path for path, _ in read], np.concatenate(outputs) if outputs else None, errors


def embed(
    model: VGG,
    variables: Mapping[str, Any],
    paths: Sequence[str],
    mode: str = "torch",
    dense: bool = False,
    batch_size: int = 16,
    mean_rgb: Optional[tuple[float, float, float]] = None,
) -> tuple[list[str], Optional[np.ndarray], dict[str, str]]:
    """Pre-logits embeddings (`VGG.embed`: fc7 after its ReLU) of each readable image file, viewed as
    `classify` views them: (the paths embedded, (N, fc_width) float32 or None, the errors by path)."""
    size = init_image_size(variables["params"], model.config, model.width_scale)
    apply = jax.jit(lambda v, x: model.apply(v, x, dense=dense, method=VGG.embed))
    return _outputs(apply, variables, paths, size, mode, dense, batch_size, mean_rgb)


def classify(
    model: VGG,
    variables: Mapping[str, Any],
    paths: Sequence[str],
    mode: str = "torch",
    top: int = 5,
    dense: bool = False,
    batch_size: int = 16,
    mean_rgb: Optional[tuple[float, float, float]] = None,
    classes: Optional[Sequence[str]] = None,
) -> list[dict[str, Any]]:
    """Top classes of each image file: `[{"image": path, "top": [{"index", "name", "probability"}, ...]},
    ...]`.

    `classes` names the outputs (default: ImageNet's, for 1,000 classes; else
    the index). An unreadable file gets `{"image": path, "error": reason}`
    and the others are classified. Centre-crop views are batched
    `batch_size` at a time; dense evaluation runs each image at its own size.
    """
    if classes is None and model.num_classes == imagenet.NUM_CLASSES:
        classes = imagenet.class_names()
    if classes is not None and len(classes) != model.num_classes:
        raise ValueError(f"{len(classes)} class names for a model of {model.num_classes} classes")
    names = list(classes) if classes is not None else [str(index) for index in range(model.num_classes)]
    size = init_image_size(variables["params"], model.config, model.width_scale)
    apply = jax.jit(lambda v, x: model.apply(v, x, dense=dense))
    read, logits, errors = _outputs(apply, variables, paths, size, mode, dense, batch_size, mean_rgb)
    decoded = dict(zip(read, imagenet.decode_predictions(logits, top=top, names=names))) if read else {}
    return [
        {"image": path, "error": errors[path]}
        if path in errors
        else {
            "image": path,
            "top": [
                {"index": index, "name": name, "probability": probability}
                for index, name, probability in decoded[path]
            ],
        }
        for path in paths
    ]
