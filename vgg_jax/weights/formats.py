"""Weights from torchvision and Keras, exact preprocessing, and one `load` for any file.

Converters are explicit name maps with shape checks, strict by default: any
missing, unexpected or wrongly shaped tensor raises a ValueError that lists
each by name with both shapes; `strict=False` returns `(variables, report)`
instead. torch is only needed to read `.pth` files.

The classic trap is fc6's input order: torchvision flattens the 7x7x512 map as
(C, H, W), Keras and vgg_jax as (H, W, C), so torchvision's fc6 rows are
permuted on the way in and out.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import warnings
from typing import Any, Mapping, Optional

import numpy as np

from vgg_jax.model.configs import CONFIGS, LRN, TORCHVISION_NAMES, conv_layers, resolve_config
from vgg_jax.model.infer import config_of

CONVS_TO_CONFIG = {
    len(conv_layers(config)): config for config in TORCHVISION_NAMES
}  # 8: A, 10: B, 13: D, 16: E
FC_WINDOW = 7  # torchvision pools to 7x7 before fc6; Keras's top expects 224 images


@dataclasses.dataclass
class LoadReport:
    """What a conversion mapped, and every difference from the target layout."""

    mapped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        lines = [f"  missing: {name}" for name in self.missing]
        lines += [f"  unexpected: {name}" for name in self.unexpected]
        lines += [
            f"  wrong shape: {name}: expected {want}, file has {got}" for name, want, got in self.mismatched
        ]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])

    def summary(self) -> str:
        return f"mapped {len(self.mapped)} tensors" + ("" if self.ok else "\n" + self.problems())


def _numpy(tensor: Any) -> np.ndarray:
    """A NumPy copy of a torch tensor or array-like, without needing torch."""
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        tensor = tensor.numpy()
    return np.asarray(tensor)


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


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


@functools.lru_cache(maxsize=32)
def variable_shapes(
    config: str, batch_norm: bool = False, num_classes: int = 1000, fc_width: int = 4096
) -> dict[str, Any]:
    """`{collection: {layer: {leaf: shape}}}` of a model initialised at 224 pixels (fc6 takes 7x7xC).

    From `jax.eval_shape(model.init, ...)`: the model itself says what its
    weights look like, and nothing is computed. Every converter checks
    against these shapes. The result is cached: do not change it.
    """
    import jax
    import jax.numpy as jnp
    from flax.core import unfreeze

    from vgg_jax.model.vgg import VGG

    model = VGG(config=config, batch_norm=batch_norm, num_classes=num_classes, fc_width=fc_width)
    abstract = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    )
    return jax.tree.map(lambda leaf: tuple(leaf.shape), unfreeze(abstract))


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


def _finish(variables: dict, report: LoadReport, strict: bool, source: str, hint: str = ""):
    if strict:
        if not report.ok:
            raise ValueError(f"{source} does not match the model:\n{report.problems()}{hint}")
        for note in report.notes:
            warnings.warn(note, stacklevel=3)
        return variables
    return variables, report


def from_torchvision(
    state_dict: Mapping[str, Any],
    config: str,
    batch_norm: bool = False,
    strict: bool = True,
    num_classes: Optional[int] = None,
):
    """vgg_jax variables from a torchvision `vgg11/13/16/19` (or `_bn`) state_dict.

    Tensors may be torch tensors or NumPy arrays. BN running statistics go to
    `batch_stats`. The variables are those of a model initialised at 224 pixels
    (fc6 takes 7x7x512). num_classes follows fc8's shape in the file unless
    given, in which case a file with other classes is an error.

    Returns:
        variables; with `strict=False`, `(variables, LoadReport)`.
    """
    config = resolve_config(config)
    state = {key: value for key, value in state_dict.items()}
    fc8 = state.get("classifier.6.weight")
    file_classes = _shape_of(fc8)[0] if fc8 is not None else 1000
    num_classes = file_classes if num_classes is None else num_classes
    fc_width = _shape_of(state["classifier.3.weight"])[0] if "classifier.3.weight" in state else 4096
    expected = _expected_torch_shapes(config, batch_norm, num_classes, fc_width)
    report = LoadReport()
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
                return _numpy(state[key])
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
                    _set(variables, (collection, name, leaf), value)
            continue
        weight, bias = get("weight"), get("bias")
        if weight is not None:
            kernel = (
                _fc6_from_torch(weight)
                if name == "fc6"
                else (weight.T if name.startswith("fc") else weight.transpose(2, 3, 1, 0))
            )
            _set(variables, ("params", name, "kernel"), np.ascontiguousarray(kernel))
        if bias is not None:
            _set(variables, ("params", name, "bias"), bias)
    return _finish(variables, report, strict, "the torchvision state_dict", hint)


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
            value = _numpy(value)
            if leaf == "weight" and value.ndim == 4:
                value = value.reshape(value.shape[0], -1)
            key = f"{TIMM_CLASSIFIER[prefix]}.{leaf}"
        converted[key] = value
    return converted


def to_torchvision(variables: Mapping[str, Any], config: str) -> dict[str, np.ndarray]:
    """The exact inverse of `from_torchvision`: a torchvision state_dict of NumPy arrays.

    `{k: torch.from_numpy(v) for k, v in ...}` loads into torchvision's model
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


KERAS_TOP = {"fc1": "fc6", "fc2": "fc7", "predictions": "fc8"}


def _read_keras(path: str) -> list[tuple[str, list[np.ndarray]]]:
    """(Keras layer name, [kernel, bias]) in file order, from a Keras 2 or Keras 3 HDF5 file."""
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path} is not a readable HDF5 file ({error})") from None
    with file:
        group = file["model_weights"] if "model_weights" in file else file
        if "layer_names" in group.attrs:  # Keras 2 layout, and Keras 3's legacy .h5
            layers = []
            for raw in group.attrs["layer_names"]:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                weight_names = [
                    w.decode() if isinstance(w, bytes) else str(w)
                    for w in group[name].attrs.get("weight_names", [])
                ]
                if weight_names:
                    layers.append((name, [np.asarray(group[name][w]) for w in weight_names]))
            return layers
        if "layers" in file:  # Keras 3 .weights.h5: layers named by class, in creation order

            def order(name):
                match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
                return (match.group(1), int(match.group(2) or 0)) if match else (name, 0)

            layers = []
            for name in sorted(file["layers"], key=order):
                vars_group = file["layers"][name].get("vars")
                if vars_group is not None and len(vars_group):
                    layers.append(
                        (name, [np.asarray(vars_group[key]) for key in sorted(vars_group, key=int)])
                    )
            return layers
    raise ValueError(
        f"{path} is an HDF5 file but not a Keras weights file (no layer_names and no layers group)"
    )


def _keras_targets(keras_convs: list, keras_dense: list, convs: list[str]) -> list[tuple[str, str, Any]]:
    """(Keras name, our name, weights) for each layer: by Keras 2's names (`block1_conv1`, `fc1`), else
    by position (Keras 3 names layers by class: the k-th conv is our k-th conv)."""
    if all(re.fullmatch(r"block\d+_conv\d+", name) for name, _ in keras_convs):
        named = [
            (name, "conv{}_{}".format(*re.fullmatch(r"block(\d+)_conv(\d+)", name).groups()), weights)
            for name, weights in keras_convs
        ]
        return named + [(name, KERAS_TOP.get(name, name), weights) for name, weights in keras_dense]
    ours_convs = convs + [f"extra_conv_{i}" for i in range(len(keras_convs))]
    ours_dense = ["fc6", "fc7", "fc8"] + [f"extra_dense_{i}" for i in range(len(keras_dense))]
    return [(name, ours, weights) for (name, weights), ours in zip(keras_convs, ours_convs)] + [
        (name, ours, weights) for (name, weights), ours in zip(keras_dense, ours_dense)
    ]


def from_keras(path: str, config: str = "D", strict: bool = True, num_classes: Optional[int] = None):
    """vgg_jax variables from a Keras applications VGG16/VGG19 HDF5 weight file.

    Reads Keras 2 files (`vgg16_weights_tf_dim_ordering_tf_kernels.h5`, with
    or without the top, and `model.save("x.h5")`) and Keras 3 `.weights.h5`,
    with h5py. `block{b}_conv{i}` maps to `conv{b}_{i}`, fc1/fc2/predictions to
    fc6/fc7/fc8; Keras's layout is already NHWC, (H, W, C) flattened. A no-top
    file yields the conv layers only, and the report (a warning when strict)
    says so. The weights expect `preprocess(images, "caffe")`: BGR input.
    """
    config = resolve_config(config)
    if not os.path.isfile(path):
        raise ValueError(f"Keras weights file {path} does not exist")
    layers = _read_keras(path)
    convs = [name for name, _, _ in conv_layers(config)]
    report = LoadReport()
    keras_convs = [(n, w) for n, w in layers if len(w) == 2 and np.ndim(w[0]) == 4]
    keras_dense = [(n, w) for n, w in layers if len(w) == 2 and np.ndim(w[0]) == 2]
    targets = _keras_targets(keras_convs, keras_dense, convs)
    fc_width, classes = (
        (keras_dense[0][1][0].shape[1], keras_dense[-1][1][0].shape[1]) if keras_dense else (4096, 1000)
    )
    # the top's widths come from the file
    if keras_dense and num_classes is not None and num_classes != classes:
        report.notes.append(
            f"the file's predictions layer has {classes} classes, not {num_classes}: pass "
            f"num_classes={classes}, or strict=False"
        )
        classes = num_classes
    params = variable_shapes(config, num_classes=classes, fc_width=fc_width)["params"]
    shapes = {
        name: (leaf["kernel"], leaf["bias"])
        for name, leaf in params.items()
        if keras_dense or not name.startswith("fc")
    }
    variables: dict[str, dict] = {"params": {}}
    found = set()
    for keras_name, ours, (kernel, bias) in targets:
        if ours not in shapes:
            report.unexpected.append(keras_name)
        elif (kernel.shape, bias.shape) != shapes[ours]:
            report.mismatched.append((f"{keras_name} -> {ours}", shapes[ours], (kernel.shape, bias.shape)))
        else:
            variables["params"][ours] = {"kernel": kernel, "bias": bias}
            report.mapped.append((keras_name, ours))
            found.add(ours)
    report.missing = [name for name in convs if name not in found]
    top = [name for name in ("fc6", "fc7", "fc8") if name in found]
    if not keras_dense:
        report.notes.append(
            f"{path} has no classifier (a Keras include_top=False file): loaded the {len(found)} conv layers "
            "only; fc6, fc7 and fc8 are not in the variables"
        )
    elif len(top) != 3:
        report.missing += [name for name in ("fc6", "fc7", "fc8") if name not in found]
    hint = ""
    if len(keras_convs) != len(convs):
        holds = {13: "VGG16: pass config='D'", 16: "VGG19: pass config='E'"}.get(
            len(keras_convs), "an unknown VGG"
        )
        hint = (
            f"\nThe file holds {len(keras_convs)} convs, config {config} has {len(convs)}; it is Keras's "
            f"{holds}."
        )
    return _finish(variables, report, strict, f"Keras file {path}", hint)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        flat.update(_flatten(value, path) if isinstance(value, Mapping) else {path: np.asarray(value)})
    return flat


def _unflatten(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        _set(tree, tuple(path.split("/")), np.asarray(value))
    return tree


METADATA_KEY = "__vgg_jax__"  # in .msgpack files: a JSON string beside the collections
METADATA_FILE = "vgg_jax_metadata.json"  # in an Orbax directory


def save(variables: Mapping[str, Any], path: str, metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Writes variables as `.msgpack` (Flax serialization), `.safetensors` ("params/conv1_1/kernel" keys)
    or, for any other path, an Orbax checkpoint directory. Refuses to replace an existing path.

    `metadata` (JSON values) travels inside the file: `config`, `preprocess`
    (the pixel convention: "torch", "caffe", or "paper" with `mean_rgb`),
    `classes` (class names), `image_size`, and where the weights came from.
    `read_metadata` reads it back. Every format is written aside and renamed,
    so a crash never leaves a half-written file.
    """
    from vgg_jax.util.files import atomic_write, write_bytes

    if os.path.exists(path):
        raise ValueError(f"{path} already exists; choose another output or remove it first")
    variables = {
        collection: dict(value) for collection, value in variables.items() if collection != METADATA_KEY
    }
    text = json.dumps(dict(metadata or {}), sort_keys=True)
    if path.endswith(".msgpack"):
        from flax import serialization

        # The metadata goes first, so that `read_metadata` reads a few bytes, not the whole file.
        data = serialization.msgpack_serialize(
            {**({METADATA_KEY: text} if metadata else {}), **_unflatten(_flatten(variables))}
        )
        write_bytes(path, data)
    elif path.endswith(".safetensors"):
        from safetensors.numpy import save_file

        tensors = {k: np.ascontiguousarray(v) for k, v in _flatten(variables).items()}
        atomic_write(
            path,
            lambda temporary: save_file(
                tensors, temporary, metadata={METADATA_KEY: text} if metadata else None
            ),
        )
    else:
        import shutil
        import tempfile

        import orbax.checkpoint as ocp

        target = os.path.abspath(path)
        staging = tempfile.mkdtemp(
            prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=os.path.dirname(target)
        )
        try:
            with ocp.StandardCheckpointer() as checkpointer:
                checkpointer.save(os.path.join(staging, "checkpoint"), _unflatten(_flatten(variables)))
            if metadata:
                with open(os.path.join(staging, "checkpoint", METADATA_FILE), "w") as file:
                    file.write(text)
            os.rename(os.path.join(staging, "checkpoint"), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata `save` wrote into a file (empty for files that carry none: torchvision's, Keras's,
    older ones)."""
    lower = path.lower()
    text = None
    try:
        # `save` writes the metadata as the map's first entry: only that is read
        if lower.endswith(".msgpack"):
            import msgpack

            with open(path, "rb") as file:
                unpacker = msgpack.Unpacker(file, raw=False, max_buffer_size=1 << 20)
                if unpacker.read_map_header() and unpacker.unpack() == METADATA_KEY:
                    text = unpacker.unpack()
        elif lower.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, "np") as file:
                text = (file.metadata() or {}).get(METADATA_KEY)
        elif os.path.isdir(path) and os.path.isfile(os.path.join(path, METADATA_FILE)):
            with open(os.path.join(path, METADATA_FILE)) as file:
                text = file.read()
    except Exception as error:
        raise ValueError(
            f"{path}: its metadata could not be read ({type(error).__name__}: {error})"
        ) from None
    if not text:
        return {}
    try:
        metadata = json.loads(text)
    except ValueError:
        raise ValueError(f"{path}: its vgg_jax metadata is not JSON; the file is damaged") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: its vgg_jax metadata is not an object; the file is damaged")
    return metadata


def load(
    path: str,
    config: Optional[str] = None,
    batch_norm: Optional[bool] = None,
    strict: bool = True,
    num_classes: Optional[int] = None,
):
    """Variables from any supported file, by its extension.

    - `.pth` / `.pt`: a torchvision state_dict (needs torch);
    - `.safetensors`: a torchvision or timm state_dict (timm's Hugging Face
      files, `timm/vgg16.tv_in1k`: torchvision's weights without torch), or
      variables written by `save`;
    - `.h5`: a Keras weights file (`from_keras`);
    - `.msgpack`: Flax-serialised variables; a directory: an Orbax checkpoint
      of variables.

    `config=None` reads the config from the file: the metadata `save` wrote,
    else our own formats' layer names; D for files that say nothing.
    `batch_norm=None` reads BN from the file (torchvision `_bn` files).
    """
    if not os.path.exists(path):
        raise ValueError(f"weights file {path} does not exist")
    config = _recorded_config(path) if config is None else resolve_config(config)
    lower = path.lower()
    if lower.endswith((".pth", ".pt")):
        try:
            import torch
        except ImportError:
            raise ValueError(
                f"reading {path} needs torch: pip install -e '.[torch]' (or convert it to .safetensors "
                "elsewhere)"
            ) from None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"{path} is not a readable torch file ({type(error).__name__}: {str(error)[:200]})"
            ) from None
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")
        return _from_state_dict(state, config or "D", batch_norm, strict, num_classes)
    if lower.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            flat = load_file(path)
        except Exception as error:
            raise ValueError(f"{path} is not a readable safetensors file ({error})") from None
        if any(key.startswith(("features.", "classifier.")) for key in flat) or is_timm_state(flat):
            return _from_state_dict(flat, config or "D", batch_norm, strict, num_classes)
        return _checked(_unflatten(flat), config, path, strict)
    if lower.endswith(".h5"):
        return from_keras(path, config or "D", strict=strict, num_classes=num_classes)
    if lower.endswith(".msgpack"):
        from flax import serialization

        try:
            with open(path, "rb") as file:
                variables = serialization.msgpack_restore(file.read())
        except Exception as error:
            raise ValueError(f"{path} is not a readable Flax msgpack file ({error})") from None
        if not isinstance(variables, dict):
            raise ValueError(
                f"{path} is not a Flax msgpack weights file: it holds a {type(variables).__name__}, "
                "not a map of collections"
            )
        variables.pop(METADATA_KEY, None)
        return _checked(variables, config, path, strict)
    if os.path.isdir(path):
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as checkpointer:
            return _checked(checkpointer.restore(os.path.abspath(path)), config, path, strict)
    raise ValueError(
        f"cannot tell the format of {path}: expected .pth, .pt, .safetensors, .h5, .msgpack or an Orbax "
        "directory"
    )


def _recorded_config(path: str) -> Optional[str]:
    """The config a file's metadata records, or None (nothing recorded, or a damaged file: its loader
    then names what is wrong)."""
    try:
        config = read_metadata(path).get("config")
    except ValueError:
        return None
    return None if config is None else resolve_config(config)


def _from_state_dict(
    state: Mapping[str, Any],
    config: str,
    batch_norm: Optional[bool],
    strict: bool,
    num_classes: Optional[int],
):
    if is_timm_state(state):
        state = timm_to_torchvision(state)
    if batch_norm is None:
        batch_norm = any(key.endswith("running_mean") for key in state)
    return from_torchvision(state, config, batch_norm=batch_norm, strict=strict, num_classes=num_classes)


def _checked(variables: Mapping[str, Any], config: Optional[str], source: str, strict: bool):
    """vgg_jax variables from our own formats, checked against the config's layer names and conv shapes
    (`config=None`: the config their layer names say)."""
    if "params" not in variables:
        raise ValueError(f"{source} holds no 'params' collection; it is not a vgg_jax variables file")
    params = variables["params"]
    config = config or config_of(params) or "D"
    report = LoadReport()
    shapes = variable_shapes(config)["params"]
    expected = set(shapes)
    present = {name for name in params if not name.endswith("_bn")}
    report.missing = sorted(expected - present)
    report.unexpected = sorted(present - expected)
    for name in sorted(expected & present):  # widths may differ (width_scale, classes); kernel sizes may not
        shape, window = tuple(np.shape(params[name]["kernel"])), shapes[name]["kernel"][:-2]
        if shape[: len(window)] != window or len(shape) != len(shapes[name]["kernel"]):
            report.mismatched.append((f"{name}/kernel", (*window, "in", "out"), shape))
    report.mapped = [(name, name) for name in sorted(present & expected)]
    return _finish(dict(variables), report, strict, source)
