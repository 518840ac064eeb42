"""Weights and the zoo: file formats, published ImageNet weights, naming a model, and prediction.

Imports the model and `vgg_jax.util`, never training, the benchmark or research code.

- `formats`: torchvision, timm and Keras layouts, `.msgpack`/`.safetensors`/Orbax files with
  metadata (`load`, `save`, `read_metadata`); the pixel conventions are `vgg_jax.util.images`.
- `hub`: verified, resumable downloads into the cache; `zoo`: the registry and `pretrained`.
- `runs`: a training run's directory read as a weights source (its checkpoints, config and classes).
- `resolve`: one spec (a published name, a file, a run) to a model, its variables and its pixels.
- `imagenet`: the 1000 class names; `predict`: classify images with any of the above.
"""

from vgg_jax.weights.formats import (
    LoadReport,
    from_keras,
    from_torchvision,
    load,
    read_metadata,
    save,
    to_torchvision,
)

__all__ = [
    "LoadReport",
    "from_keras",
    "from_torchvision",
    "load",
    "read_metadata",
    "save",
    "to_torchvision",
]
