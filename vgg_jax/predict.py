"""Classifying image files with ImageNet weights: read, preprocess as the weights expect, batch, decode.

`scripts/predict.py` is the command line over `classify`. Centre crop (the
usual evaluation: short side to 256/224 of the crop, centre crop) or the
paper's dense evaluation (short side to 256, the whole image through the
fully-convolutional net, class scores averaged).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from PIL import Image

from vgg_jax import data as data_lib
from vgg_jax import imagenet
from vgg_jax import weights as weights_lib
from vgg_jax.model import VGG
from vgg_jax.perceptual import infer_model
from vgg_jax.warm_start import init_image_size

DENSE_SCALE = 256  # the paper's test scale Q for dense evaluation of 224-pixel models


def read_image(path: str) -> np.ndarray:
    """An RGB uint8 array from a JPEG or PNG (grey, palette and RGBA converted); ValueError naming the file."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"image {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"image {path} could not be read ({error})") from None


def centre_view(image: np.ndarray, size: int) -> np.ndarray:
    """Short side to size * 256 / 224, then the centre size x size crop: torchvision's and Keras's evaluation."""
    return data_lib.center_crop(data_lib.rescale_short_side(image, round(size * 256 / 224)), size)


def load_model(model: str, source: str = "torchvision", config: Optional[str] = None) -> tuple[VGG, Any, str]:
    """(model, variables, preprocess mode) for a published name (`vgg16`) or a weights file (`--config` if it can't tell)."""
    from vgg_jax import zoo

    if not os.path.exists(model):
        info = zoo.weights_info(model, source)
        vgg, variables = zoo.pretrained(model, source)
        return vgg, variables, info.preprocess
    loaded = weights_lib.load(model, config or "D")
    mode = "caffe" if model.lower().endswith(".h5") else "torch"
    return infer_model(loaded, config), loaded, mode


def classify(
    model: VGG, variables: Mapping[str, Any], paths: Sequence[str], mode: str = "torch", top: int = 5, dense: bool = False,
    batch_size: int = 16, mean_rgb: Optional[tuple[float, float, float]] = None,
) -> list[dict[str, Any]]:
    """Top classes of each image file: `[{"image": path, "top": [{"index", "name", "probability"}, ...]}, ...]`.

    The model must have ImageNet's 1,000 classes. Centre-crop views are
    batched `batch_size` at a time; dense evaluation runs each image at its
    own size.
    """
    if model.num_classes != imagenet.NUM_CLASSES:
        raise ValueError(f"these weights have {model.num_classes} classes, not ImageNet's {imagenet.NUM_CLASSES}; names cannot be given")
    images = [read_image(path) for path in paths]  # every file is read before anything is computed
    size = init_image_size(variables["params"], model.config, model.width_scale)
    apply = jax.jit(lambda v, x: model.apply(v, x, dense=dense))
    logits = []
    if dense:
        for image in images:
            view = data_lib.rescale_short_side(image, round(size * DENSE_SCALE / 224))
            logits.append(np.asarray(apply(variables, weights_lib.preprocess(view[None], mode, mean_rgb))))
    else:
        views = np.stack([centre_view(image, size) for image in images])
        for start in range(0, len(views), batch_size):
            logits.append(np.asarray(apply(variables, weights_lib.preprocess(views[start : start + batch_size], mode, mean_rgb))))
    decoded = imagenet.decode_predictions(np.concatenate(logits), top=top)
    return [
        {"image": path, "top": [{"index": index, "name": name, "probability": probability} for index, name, probability in best]}
        for path, best in zip(paths, decoded)
    ]
