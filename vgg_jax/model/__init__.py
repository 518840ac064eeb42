"""The model: the six configs as one table, the layers, the convolution and the Flax `VGG` module.

The bottom of the package: it imports nothing from vgg_jax but itself.

- `configs`: Table 1 of the paper (`CONFIGS`, `resolve_config`), parameter and MAC counts, layer names.
- `layers`: local response normalisation, the output-masked ReLU, reshape max-pooling.
- `conv`: the 3x3 convolution implementations (`conv_impl`).
- `vgg`: `VGG`, its initialisers and the implementation choices.
- `infer`: the model a parameter tree belongs to (`infer_model`) and the image size it was built for.
"""

from vgg_jax.model.configs import (
    ALIASES,
    CONFIGS,
    LRN,
    Conv,
    count_macs,
    count_params,
    layer_names,
    resolve_config,
)
from vgg_jax.model.infer import infer_model, init_image_size
from vgg_jax.model.layers import LocalResponseNorm
from vgg_jax.model.vgg import (
    CLASSIFIER,
    COMPUTE_DTYPES,
    CONV_IMPLS,
    INIT_SCHEMES,
    POOL_IMPLS,
    RELU_IMPLS,
    VGG,
)

__all__ = [
    "ALIASES",
    "CLASSIFIER",
    "COMPUTE_DTYPES",
    "CONFIGS",
    "CONV_IMPLS",
    "Conv",
    "INIT_SCHEMES",
    "LRN",
    "LocalResponseNorm",
    "POOL_IMPLS",
    "RELU_IMPLS",
    "VGG",
    "count_macs",
    "count_params",
    "infer_model",
    "init_image_size",
    "layer_names",
    "resolve_config",
]
