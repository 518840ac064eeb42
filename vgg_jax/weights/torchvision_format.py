"""torchvision's VGG state_dicts (and timm's copies of them) to and from vgg_jax variables.

Explicit name maps with shape checks. The classic trap is fc6's input order:
torchvision flattens the 7x7x512 map as (C, H, W), vgg_jax as (H, W, C), so
fc6's rows are permuted on the way in and out.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from vgg_jax.model.configs import CONFIGS, LRN, TORCHVISION_NAMES, conv_layers, resolve_config
from vgg_jax.weights.layout import FC_WINDOW, LoadReport, as_numpy, checked, set_in, variable_shapes

CONVS_TO_CONFIG = {
    len(conv_layers(config)): config for config in TORCHVISION_NAMES
}  # 8: A, 10: B, 13: D, 16: E


def _torchvision_names(config: str, batch_norm: bool) -> list[tuple[str, str]]:
    """(torchvision module prefix, our layer name) for every conv, BN and FC layer."""
    names, index = [], 0
    for block_index, block in enumerate(CONFIGS[config], start=1):
        conv_index = 0
        for layer in block:
            if isinstance(layer, LRN):
                raise ValueError(
                    f"torchvision has no config {config} (no LRN); it has "
                    f"{', '.join(TORCHVISION_NAMES.values())}"
                )
            if layer.kernel_size != 3:
                raise ValueError(
                    f"torchvision has no config {config} (no 1x1 convs); it has "
                    f"{', '.join(TORCHVISION_NAMES.values())}"
                )
            conv_index += 1
            names.append((f"features.{index}", f"conv{block_index}_{conv_index}"))
            if batch_norm:
                names.append((f"features.{index + 1}", f"conv{block_index}_{conv_index}_bn"))
            index += 3 if batch_norm else 2
        index += 1  # the block's max-pool
    return names + [("classifier.0", "fc6"), ("classifier.3", "fc7"), ("classifier.6", "fc8")]


def guess_torchvision_config(state_dict: Mapping[str, Any]) -> tuple[Optional[str], bool]:
    """(config, batch_norm) that a torchvision state_dict holds, from its conv count; config None if
    unknown."""
    convs = [k for k in state_dict if k.startswith("features.") and len(_shape_of(state_dict[k])) == 4]
    batch_norm = any(k.endswith("running_mean") for k in state_dict)
    return CONVS_TO_CONFIG.get(len(convs)), batch_norm


def _shape_of(tensor: Any) -> tuple:
    return tuple(getattr(tensor, "shape", np.shape(tensor)))


def _fc6_from_torch(weight: np.ndarray) -> np.ndarray:
    """(out, C*H*W) in C, H, W order -> (H*W*C, out) in H, W, C order."""
    out, flat = weight.shape
    channels = flat // (FC_WINDOW * FC_WINDOW)
    return weight.reshape(out, channels, FC_WINDOW, FC_WINDOW).transpose(2, 3, 1, 0).reshape(flat, out)


def _fc6_to_torch(kernel: np.ndarray) -> np.ndarray:
    flat, out = kernel.shape
    channels = flat // (FC_WINDOW * FC_WINDOW)
    return kernel.reshape(FC_WINDOW, FC_WINDOW, channels, out).transpose(3, 2, 0, 1).reshape(out, flat)


def _expected_torch_shapes(
    config: str, batch_norm: bool, num_classes: int, fc_width: int = 4096
) -> dict[str, tuple]:
    """torchvision's key -> shape for a config: ours, in torch's layouts (O,I,H,W convs, (out, in)
    linears)."""
    params = variable_shapes(config, batch_norm, num_classes, fc_width)["params"]
    shapes = {}
    for prefix, name in _torchvision_names(config, batch_norm):
        if name.endswith("_bn"):
            for suffix in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.{suffix}"] = params[name]["scale"]
            shapes[f"{prefix}.num_batches_tracked"] = ()
            continue
        kernel = params[name]["kernel"]
        shapes[f"{prefix}.weight"] = (
            kernel[::-1] if len(kernel) == 2 else (kernel[3], kernel[2], kernel[0], kernel[1])
        )
        shapes[f"{prefix}.bias"] = params[name]["bias"]
    return shapes


def from_torchvision(
    state_dict: Mapping[str, Any],
    config: str,
    batch_norm: bool = False,
    strict: bool = True,
    num_classes: Optional[int] = None,
) -> dict[str, Any]:
    """vgg_jax variables from a torchvision `vgg11/13/16/19` (or `_bn`) state_dict.

    Tensors may be torch tensors or NumPy arrays. BN running statistics go to
    `batch_stats`. The variables are those of a model initialised at 224 pixels
    (fc6 takes 7x7x512). num_classes follows fc8's shape in the file unless
    given, in which case a file with other classes is an error. With
    `strict=False` the differences are a `LoadWarning` and what matched is
    returned (`convert_torchvision` gives the report itself).
    """
    return checked(*convert_torchvision(state_dict, config, batch_norm, num_classes), strict)


def convert_torchvision(
    state_dict: Mapping[str, Any], config: str, batch_norm: bool = False, num_classes: Optional[int] = None
) -> tuple[dict[str, Any], LoadReport]:
    """`from_torchvision`'s variables, with the `LoadReport` of every difference instead of raising."""
    config = resolve_config(config)
    state = {key: value for key, value in state_dict.items()}
    fc8 = state.get("classifier.6.weight")
    file_classes = _shape_of(fc8)[0] if fc8 is not None else 1000
    num_classes = file_classes if num_classes is None else num_classes
    fc_width = _shape_of(state["classifier.3.weight"])[0] if "classifier.3.weight" in state else 4096
    expected = _expected_torch_shapes(config, batch_norm, num_classes, fc_width)
    report = LoadReport(source="the torchvision state_dict")
    report.missing = [key for key in expected if key not in state]
    report.unexpected = [key for key in state if key not in expected]
    report.mismatched = [
        (key, expected[key], _shape_of(state[key]))
        for key in expected
        if key in state and _shape_of(state[key]) != expected[key]
    ]
    hint = (
        f"\nThe file's fc8 has {file_classes} classes, not {num_classes}: pass num_classes={file_classes}, "
        "or strict=False and re-initialise fc8"
        if file_classes != num_classes
        else ""
    )
    guessed, guessed_bn = guess_torchvision_config(state)
    if not report.ok:
        if guessed is not None and (guessed, guessed_bn) != (config, batch_norm):
            variant = TORCHVISION_NAMES[guessed] + ("_bn" if guessed_bn else "")
            hint += f"\nThe file holds torchvision's {variant}: pass config={guessed!r}" + (
                ", batch_norm=True" if guessed_bn else ", batch_norm=False"
            )
    variables: dict[str, dict] = {"params": {}}
    wrong = {key for key, _, _ in report.mismatched}
    for prefix, name in _torchvision_names(config, batch_norm):

        def get(suffix):
            key = f"{prefix}.{suffix}"
            if key in state and key not in wrong:
                report.mapped.append((key, name))
                return as_numpy(state[key])
            return None

        if name.endswith("_bn"):
            scale, bias, mean, var = (get(s) for s in ("weight", "bias", "running_mean", "running_var"))
            if f"{prefix}.num_batches_tracked" in state:
                report.mapped.append((f"{prefix}.num_batches_tracked", "(unused)"))
            for collection, leaf, value in (
                ("params", "scale", scale),
                ("params", "bias", bias),
                ("batch_stats", "mean", mean),
                ("batch_stats", "var", var),
            ):
                if value is not None:
                    set_in(variables, (collection, name, leaf), value)
            continue
        weight, bias = get("weight"), get("bias")
        if weight is not None:
            kernel = (
                _fc6_from_torch(weight)
                if name == "fc6"
                else (weight.T if name.startswith("fc") else weight.transpose(2, 3, 1, 0))
            )
            set_in(variables, ("params", name, "kernel"), np.ascontiguousarray(kernel))
        if bias is not None:
            set_in(variables, ("params", name, "bias"), bias)
    report.hint = hint
    return variables, report


TIMM_CLASSIFIER = {
    "pre_logits.fc1": "classifier.0",
    "pre_logits.fc2": "classifier.3",
    "head.fc": "classifier.6",
}


def is_timm_state(state_dict: Mapping[str, Any]) -> bool:
    """Whether a state_dict has timm's VGG layout (`pre_logits.fc1` as a 7x7 conv, `head.fc`)."""
    return any(key.startswith(tuple(TIMM_CLASSIFIER)) for key in state_dict)


def timm_to_torchvision(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """timm's VGG state_dict (`timm/vgg16.tv_in1k` and siblings) in torchvision's layout.

    timm keeps torchvision's `features.*` and stores the classifier as convs:
    `pre_logits.fc1` is fc6 as a (4096, 512, 7, 7) kernel, whose C, H, W
    order is torchvision's flatten order, so a reshape to (4096, 25088) gives
    torchvision's `classifier.0`; `pre_logits.fc2` is fc7 as a 1x1 conv and
    `head.fc` is fc8. Tensors may be NumPy arrays (safetensors, no torch).
    """
    converted = {}
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in TIMM_CLASSIFIER:
            value = as_numpy(value)
            if leaf == "weight" and value.ndim == 4:
                value = value.reshape(value.shape[0], -1)
            key = f"{TIMM_CLASSIFIER[prefix]}.{leaf}"
        converted[key] = value
    return converted


def to_torchvision(variables: Mapping[str, Any], config: str) -> dict[str, np.ndarray]:
    """The exact inverse of `from_torchvision`: a torchvision state_dict of NumPy arrays.

    `{k: torch.fromas_numpy(v) for k, v in ...}` loads into torchvision's model
    with `load_state_dict` (BN's num_batches_tracked is written as 0).
    """
    config = resolve_config(config)
    params = variables["params"]
    batch_norm = any(name.endswith("_bn") for name in params)
    state: dict[str, np.ndarray] = {}
    for prefix, name in _torchvision_names(config, batch_norm):
        if name.endswith("_bn"):
            stats = variables["batch_stats"][name]
            state[f"{prefix}.weight"], state[f"{prefix}.bias"] = (
                np.asarray(params[name]["scale"]),
                np.asarray(params[name]["bias"]),
            )
            state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"] = (
                np.asarray(stats["mean"]),
                np.asarray(stats["var"]),
            )
            state[f"{prefix}.num_batches_tracked"] = np.array(0, np.int64)
            continue
        kernel = np.asarray(params[name]["kernel"])
        weight = (
            _fc6_to_torch(kernel)
            if name == "fc6"
            else (kernel.T if name.startswith("fc") else kernel.transpose(3, 2, 0, 1))
        )
        state[f"{prefix}.weight"] = np.ascontiguousarray(weight)
        state[f"{prefix}.bias"] = np.asarray(params[name]["bias"])
    return state
