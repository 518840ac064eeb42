"""vgg_jax: the six VGG configs of Simonyan & Zisserman (2014) in JAX and Flax.

Importing vgg_jax before JAX starts a backend adds XLA:CPU convolution flags to
XLA_FLAGS (see `vgg_jax.util.xla_flags`; `VGG_JAX_XLA_CPU_FLAGS=0` turns that off).
"""

from vgg_jax.util import xla_flags  # noqa: F401 (first: XLA reads XLA_FLAGS when a backend starts)

# isort: split
from vgg_jax.model import (
    ALIASES,
    CONFIGS,
    LRN,
    VGG,
    Conv,
    LocalResponseNorm,
    count_macs,
    count_params,
    layer_names,
    resolve_config,
)
from vgg_jax.research.perceptual import lpips, perceptual_loss
from vgg_jax.research.warm_start import (  # the function; the module stays importable by its path
    WarmStartReport,
    warm_start,
)
from vgg_jax.util.images import preprocess
from vgg_jax.weights.formats import load
from vgg_jax.weights.imagenet import class_names, decode_predictions
from vgg_jax.weights.keras_format import from_keras
from vgg_jax.weights.torchvision_format import from_torchvision, to_torchvision
from vgg_jax.weights.zoo import pretrained, weights_info

__version__ = "0.1.0"

__all__ = [
    "ALIASES",
    "CONFIGS",
    "Conv",
    "LRN",
    "LocalResponseNorm",
    "VGG",
    "class_names",
    "count_macs",
    "count_params",
    "decode_predictions",
    "from_keras",
    "from_torchvision",
    "layer_names",
    "load",
    "lpips",
    "perceptual_loss",
    "preprocess",
    "pretrained",
    "resolve_config",
    "to_torchvision",
    "warm_start",
    "weights_info",
    "WarmStartReport",
]
