"""Reading a model off its parameters: the config, widths, classes and training image size a tree belongs
to."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

from vgg_jax.model.configs import CONFIGS, MIN_IMAGE_SIZE, conv_layers, resolve_config, scaled
from vgg_jax.model.vgg import VGG

# What `infer_model` reads off a tree besides its config: the fields that give the parameters' shapes.
SHAPE_FIELDS = ("num_classes", "fc_width", "width_scale", "batch_norm")


def config_of(params: Any) -> Optional[str]:
    """The config whose conv names and kernel sizes `params` has (A for A-LRN, which has A's), or None."""
    convs = {}
    for name, layer in params.items():
        if name.startswith("conv") and not name.endswith("_bn"):
            kernel = layer.get("kernel") if isinstance(layer, Mapping) else None
            if np.ndim(kernel) != 4:
                return None
            convs[name] = np.shape(kernel)[0]
    return next((c for c in CONFIGS if convs == {n: spec.kernel_size for n, _, spec in conv_layers(c)}), None)


def infer_model(variables: Any, config: Optional[str] = None, **model_kwargs: Any) -> VGG:
    """The VGG whose parameters these are: config, BN, widths and classes read off the tree.

    A and A-LRN have the same parameters: pass `config="A-LRN"` for the latter.
    `model_kwargs` are further `VGG` fields (dtype, dropout_rate, ...).
    """
    params = variables["params"]
    if config is None:
        config = config_of(params)
        if config is None:
            convs = sorted(name for name in params if name.startswith("conv") and not name.endswith("_bn"))
            raise ValueError(f"these parameters match no VGG config (convs {convs}); pass config=")
    config = resolve_config(config)
    first = conv_layers(config)[0]
    return VGG(
        config=config,
        num_classes=params["fc8"]["kernel"].shape[-1] if "fc8" in params else 1000,
        fc_width=params["fc7"]["kernel"].shape[-1] if "fc7" in params else 4096,
        width_scale=params[first[0]]["kernel"].shape[-1] / first[2].features,
        batch_norm=any(name.endswith("_bn") for name in params),
        **model_kwargs,
    )


def init_image_size(params: Any, config: str, width_scale: float = 1.0) -> int:
    """The square image size a model was initialised on, read from its fc6 kernel."""
    last_channels = scaled(conv_layers(config)[-1][2].features, width_scale)
    window = math.isqrt(params["fc6"]["kernel"].shape[0] // last_channels)
    return MIN_IMAGE_SIZE * window  # five 2x2 pools: one fc6 position per 32 pixels
