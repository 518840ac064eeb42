"""vgg_jax: the six VGG configs of Simonyan & Zisserman (2014) in JAX and Flax.

Importing vgg_jax changes no process-wide setting. `apply_xla_cpu_flags()`,
called before JAX starts a backend, adds the XLA:CPU flags that make its
convolutions faster (`vgg_jax.util.xla_flags`); the commands call it.
"""

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
from vgg_jax.util.xla_flags import apply as apply_xla_cpu_flags
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
    "apply_xla_cpu_flags",
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
