"""Weights and the zoo: file formats, published ImageNet weights, naming a model, and prediction.

Imports the model and `vgg_jax.util`, never training, the benchmark or research code.

- `formats`: one `load` for any file, and vgg_jax's own `.msgpack`/`.safetensors`/Orbax files with
  metadata (`save`, `read_metadata`); `torchvision_format` (torchvision's and timm's state_dicts),
  `keras_format` (Keras's `.h5`) and `layout` (the shapes and the load report they share). The
  pixel conventions are `vgg_jax.util.images`.
- `hub`: verified, resumable downloads into the cache; `zoo`: the registry and `pretrained`.
- `runs`: a training run's directory read as a weights source (its checkpoints, config and classes).
- `resolve`: one spec (a published name, a file, a run) to a model, its variables and its pixels.
- `imagenet`: the 1000 class names; `predict`: classify images with any of the above.
"""

from vgg_jax.weights.formats import load, read_metadata, save
from vgg_jax.weights.keras_format import from_keras
from vgg_jax.weights.layout import LoadReport
from vgg_jax.weights.torchvision_format import from_torchvision, to_torchvision

__all__ = [
    "LoadReport",
    "from_keras",
    "from_torchvision",
    "load",
    "read_metadata",
    "save",
    "to_torchvision",
]
