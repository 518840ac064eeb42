"""The paper's Table 1 as data: one table for all six VGG configs.

Every config is a tuple of five blocks; a block is a tuple of layers, each a
`Conv` (3x3 or 1x1) or an `LRN`. A 2x2 stride-2 max-pool follows every block and
the classifier (fc6, fc7, fc8) follows the last pool. Config C's 1x1 convs and
A-LRN's LRN are entries here, not special cases in the model.

Parameter and MAC counts are computed analytically from the same table.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Union

from vgg_jax.util.options import FieldError


@dataclasses.dataclass(frozen=True)
class Conv:
    """A stride-1 'SAME' convolution followed (after optional BN) by ReLU."""

    features: int
    kernel_size: int = 3


@dataclasses.dataclass(frozen=True)
class LRN:
    """AlexNet's local response normalisation (no parameters)."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0


Layer = Union[Conv, LRN]
Block = tuple[Layer, ...]

_C64, _C128, _C256, _C512 = Conv(64), Conv(128), Conv(256), Conv(512)

CONFIGS: Mapping[str, tuple[Block, ...]] = {
    "A": ((_C64,), (_C128,), (_C256, _C256), (_C512, _C512), (_C512, _C512)),
    # LRN after conv1_1's ReLU, before pool1.
    "A-LRN": ((_C64, LRN()), (_C128,), (_C256, _C256), (_C512, _C512), (_C512, _C512)),
    "B": ((_C64, _C64), (_C128, _C128), (_C256, _C256), (_C512, _C512), (_C512, _C512)),
    # The third conv of blocks 3, 4 and 5 is a 1x1 conv.
    "C": (
        (_C64, _C64),
        (_C128, _C128),
        (_C256, _C256, Conv(256, 1)),
        (_C512, _C512, Conv(512, 1)),
        (_C512, _C512, Conv(512, 1)),
    ),
    "D": (
        (_C64, _C64),
        (_C128, _C128),
        (_C256, _C256, _C256),
        (_C512, _C512, _C512),
        (_C512, _C512, _C512),
    ),
    "E": (
        (_C64, _C64),
        (_C128, _C128),
        (_C256,) * 4,
        (_C512,) * 4,
        (_C512,) * 4,
    ),
}

ALIASES: Mapping[str, str] = {
    "vgg11": "A",
    "vgg11-lrn": "A-LRN",
    "vgg13": "B",
    "vgg16-c": "C",
    "vgg16": "D",
    "vgg19": "E",
}

NUM_POOLS = 5
MIN_IMAGE_SIZE = 2**NUM_POOLS  # five 2x2 pools need at least 32 pixels
TORCHVISION_NAMES = {
    "A": "vgg11",
    "B": "vgg13",
    "D": "vgg16",
    "E": "vgg19",
}  # the configs torchvision (and Keras, D and E) publish


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


_LOOKUP = {_normalise(n): n for n in CONFIGS} | {_normalise(a): c for a, c in ALIASES.items()}


def resolve_config(name: str) -> str:
    """Returns the canonical config name ("A" ... "E") for a name or alias.

    Names and aliases are case-insensitive, and '_' is accepted for '-'.

    Raises:
        ValueError: if the name is neither a config nor an alias.
    """
    if not isinstance(name, str) or _normalise(name) not in _LOOKUP:
        valid = ", ".join(f"{a!r} ({c})" for a, c in ALIASES.items())
        raise ValueError(
            f"unknown VGG config {name!r}; valid configs are "
            f"{', '.join(repr(c) for c in CONFIGS)}, and the aliases {valid}"
        )
    return _LOOKUP[_normalise(name)]


def scaled(channels: int, width_scale: float) -> int:
    """Conv channel count after `width_scale` (at least one channel)."""
    return max(1, int(round(channels * width_scale)))


def conv_layers(config: str) -> list[tuple[str, int, Conv]]:
    """The convs of a config as (name, block, spec), in order: conv1_1, conv1_2, ..."""
    layers = []
    for block_index, block in enumerate(CONFIGS[resolve_config(config)], start=1):
        convs = [layer for layer in block if isinstance(layer, Conv)]
        for index, conv in enumerate(convs, start=1):
            layers.append((f"conv{block_index}_{index}", block_index, conv))
    return layers


def layer_names(config: str) -> list[str]:
    """Every named activation of a config, in forward order (see `VGG.features`)."""
    names = []
    for block_index, block in enumerate(CONFIGS[resolve_config(config)], start=1):
        conv_index = 0
        for layer in block:
            if isinstance(layer, Conv):
                conv_index += 1
                names += [f"conv{block_index}_{conv_index}", f"relu{block_index}_{conv_index}"]
            else:
                names.append("lrn")
        names.append(f"pool{block_index}")
    return names + ["fc6", "fc7", "fc8"]


def frozen_layers(config: str, freeze: Optional[str]) -> list[str]:
    """The parameter layers (convs, then fc6-fc8) at or before the `freeze` activation, in order.

    The one rule of freezing: `VGG(freeze=...)` stops the gradient there, and
    the optimiser gives these layers (and their BN) no update. `freeze` must
    be an activation before fc8 (fc8 would freeze every layer).
    """
    if freeze is None:
        return []
    names = layer_names(config)
    if freeze == names[-1]:
        raise FieldError(
            "freeze",
            f"{freeze!r} freezes every layer; choose an earlier one (pool5 trains the classifier alone)",
        )
    if freeze not in names:
        raise FieldError(
            "freeze",
            f"{freeze!r} is not a layer of config {resolve_config(config)}; choose one of "
            f"{', '.join(names[:-1])}",
        )
    limit = names.index(freeze)
    layers = [name for name, _, _ in conv_layers(config)] + ["fc6", "fc7", "fc8"]
    return [name for name in layers if names.index(name) <= limit]


def feature_map_size(image_size: int) -> int:
    """Spatial size after the five floor-mode 2x2 pools (as torchvision)."""
    for _ in range(NUM_POOLS):
        image_size //= 2
    return image_size


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an int of at least {MIN_IMAGE_SIZE} (five 2x2 pools), got {image_size!r}"
        )


def count_params(
    config: str,
    num_classes: int = 1000,
    image_size: int = 224,
    batch_norm: bool = False,
    *,
    fc_width: int = 4096,
    width_scale: float = 1.0,
    in_channels: int = 3,
) -> int:
    """Trainable parameters of a config, computed from the table.

    BN adds a scale and a bias per channel; its running statistics are not
    parameters (as in torchvision, where they are buffers).
    """
    _check_image_size(image_size)
    total, channels = 0, in_channels
    for _, _, conv in conv_layers(config):
        out = scaled(conv.features, width_scale)
        total += conv.kernel_size**2 * channels * out + out
        if batch_norm:
            total += 2 * out
        channels = out
    flat = feature_map_size(image_size) ** 2 * channels
    for fan_in, fan_out in ((flat, fc_width), (fc_width, fc_width), (fc_width, num_classes)):
        total += fan_in * fan_out + fan_out
    return total


def layer_macs(
    config: str,
    image_size: int = 224,
    *,
    num_classes: int = 1000,
    fc_width: int = 4096,
    width_scale: float = 1.0,
    in_channels: int = 3,
) -> dict[str, int]:
    """Multiply-adds of one forward pass on one square image, per parameter layer (`conv3_2`, `fc6`), in
    forward order.

    Counts every output position of every conv (padding included), as the
    paper and torchvision do, and the three FC layers; pools, ReLU, LRN and
    biases are not counted.
    """
    _check_image_size(image_size)
    macs, channels = {}, in_channels
    for name, block, conv in conv_layers(config):
        size = image_size >> (block - 1)  # after block - 1 floor-mode 2x2 pools
        out = scaled(conv.features, width_scale)
        macs[name] = size * size * conv.kernel_size**2 * channels * out
        channels = out
    macs["fc6"] = feature_map_size(image_size) ** 2 * channels * fc_width
    macs["fc7"] = fc_width * fc_width
    macs["fc8"] = fc_width * num_classes
    return macs


def count_macs(
    config: str,
    image_size: int = 224,
    *,
    num_classes: int = 1000,
    fc_width: int = 4096,
    width_scale: float = 1.0,
    in_channels: int = 3,
) -> int:
    """Multiply-adds of one forward pass on one square image (2 FLOPs each): `layer_macs` summed."""
    return sum(
        layer_macs(
            config,
            image_size,
            num_classes=num_classes,
            fc_width=fc_width,
            width_scale=width_scale,
            in_channels=in_channels,
        ).values()
    )


def _validate_table() -> None:
    """Layer names must be unique: 'lrn' names the one LRN a config may have."""
    for config in CONFIGS:
        names = layer_names(config)
        if len(names) != len(set(names)):
            raise AssertionError(f"config {config} has duplicate layer names: {names}")


_validate_table()
