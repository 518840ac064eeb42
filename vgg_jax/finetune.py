"""Transfer learning: start a run from a weights file or a pretrained name, and freeze the layers up to one.

`scripts/train.py --init-from` takes a run's workdir (the coarse-to-fine warm
start), a weights file (`.pth`, `.pt`, `.safetensors`, `.h5`, `.msgpack`) or a
pretrained name (`torchvision:vgg16`, `keras:vgg16`). From the same config,
every layer whose shape matches is copied; fc8 is initialised anew when the
class counts differ, and the run's log says so. `--freeze LAYER` trains only
the layers after LAYER: the frozen parameters get no update and no optimiser
state (`optax.multi_transform` with `optax.set_to_zero`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import jax

from vgg_jax.configs import conv_layers, layer_names, resolve_config
from vgg_jax.model import CLASSIFIER

WEIGHT_FILES = (".pth", ".pt", ".safetensors", ".h5", ".msgpack")


def pretrained_spec(spec: str) -> Optional[tuple[str, str]]:
    """`("torchvision", "vgg16")` for "torchvision:vgg16"; None when `spec` is not SOURCE:NAME."""
    from vgg_jax.zoo import SOURCES

    source, sep, name = spec.partition(":")
    return (source, name) if sep and source in SOURCES and name else None


def weights_preprocess(spec: str) -> str:
    """The pixel convention ("torch" or "caffe") the pretrained weights `spec` names expect."""
    from vgg_jax.zoo import weights_info

    source, name = pretrained_spec(spec)
    return weights_info(name, source).preprocess


def describe_init_from(spec: str) -> Optional[str]:
    """What kind of source `spec` is ("run", "file", "pretrained"), or None when it is none of them."""
    if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "config.json")):
        return "run"
    if os.path.isfile(spec) and spec.lower().endswith(WEIGHT_FILES):
        return "file"
    if pretrained_spec(spec):
        return "pretrained"
    return None


def read_init_source(spec: str, config: str, read_run: Callable[[str], tuple[dict, dict]]) -> tuple[dict[str, Any], str, str]:
    """`(variables, source config, description)` for `--init-from spec`; a file is read as `config`.

    `read_run` reads a run's workdir (`vgg_jax.loop.load_params`).
    """
    from vgg_jax import weights, zoo

    kind = describe_init_from(spec)
    if kind == "run":
        variables, saved = read_run(spec)
        return variables, saved["config"], f"run {spec}"
    if kind == "file":
        loaded, report = weights.load(spec, config, strict=False)
        if report.mismatched or report.unexpected:
            weights.load(spec, config, strict=True)  # raises, naming every problem
        return loaded, config, f"{spec} (read as config {config})"
    if kind == "pretrained":
        source, name = pretrained_spec(spec)
        model, variables = zoo.pretrained(name, source)
        return variables, model.config, f"{source}:{name}"
    raise ValueError(
        f"--init-from {spec}: not a run's workdir (no config.json), a weights file ({', '.join(WEIGHT_FILES)}) "
        "or a pretrained name such as torchvision:vgg16"
    )


def _layer_position(config: str) -> dict[str, int]:
    names = layer_names(config)
    return {name: names.index(name) for name in [n for n, _, _ in conv_layers(config)] + list(CLASSIFIER)}


def check_freeze(config: str, freeze: Optional[str]) -> None:
    """Refuses a --freeze that is not a layer of the config, or that leaves nothing to train."""
    if freeze is None:
        return
    names = layer_names(resolve_config(config))
    if freeze not in names:
        raise ValueError(f"--freeze {freeze!r} is not a layer of config {resolve_config(config)}; choose one of {', '.join(names)}")
    if freeze == names[-1]:
        raise ValueError(f"--freeze {freeze} freezes every layer; choose an earlier one (pool5 trains the classifier alone)")


def frozen_layers(config: str, freeze: Optional[str]) -> list[str]:
    """The parameter layers at or before `freeze` (convs, their BN, FC layers), in network order."""
    if freeze is None:
        return []
    config = resolve_config(config)
    check_freeze(config, freeze)
    limit = layer_names(config).index(freeze)
    return [name for name, position in _layer_position(config).items() if position <= limit]


def param_labels(config: str, freeze: Optional[str]) -> Callable[[Any], Any]:
    """For `optax.multi_transform`: params -> the same tree of "frozen" / "train" labels."""
    frozen = set(frozen_layers(config, freeze))

    def labels(params: Any) -> Any:
        return {
            name: jax.tree.map(lambda _: "frozen" if name.removesuffix("_bn") in frozen else "train", layer)
            for name, layer in params.items()
        }

    return labels
