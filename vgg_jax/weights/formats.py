"""vgg_jax's own weight files, and one `load` for any file: `.pth`/`.pt` and `.safetensors` state_dicts
(torchvision's, timm's), Keras `.h5`, `.msgpack`, `.safetensors` and Orbax directories of variables.

Loading is strict by default: any missing, unexpected or wrongly shaped
tensor raises a ValueError that lists each by name with both shapes;
`strict=False` warns instead (`LoadWarning`), and `read` returns the
`LoadReport` itself. torch is only needed to
read `.pth` files. The converters are `torchvision_format` and `keras_format`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, NamedTuple, Optional

import numpy as np

from vgg_jax.model.configs import resolve_config
from vgg_jax.model.infer import config_of
from vgg_jax.weights.keras_format import convert_keras
from vgg_jax.weights.layout import LoadReport, checked, flatten, unflatten, variable_shapes
from vgg_jax.weights.torchvision_format import convert_torchvision, is_timm_state, timm_to_torchvision

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
            {**({METADATA_KEY: text} if metadata else {}), **unflatten(flatten(variables))}
        )
        write_bytes(path, data)
    elif path.endswith(".safetensors"):
        from safetensors.numpy import save_file

        tensors = {k: np.ascontiguousarray(v) for k, v in flatten(variables).items()}
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
                checkpointer.save(os.path.join(staging, "checkpoint"), unflatten(flatten(variables)))
            if metadata:
                with open(os.path.join(staging, "checkpoint", METADATA_FILE), "w") as file:
                    file.write(text)
            os.rename(os.path.join(staging, "checkpoint"), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata `save` wrote into a file (empty for files that carry none: torchvision's, Keras's,
    older ones), read alone: a .msgpack's first entry, a .safetensors header."""
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
        elif os.path.isdir(path):
            text = _metadata_file(path)
    except Exception as error:
        raise ValueError(
            f"{path}: its metadata could not be read ({type(error).__name__}: {error})"
        ) from None
    return _parsed_metadata(text, path)


def _metadata_file(path: str) -> Optional[str]:
    """An Orbax directory's metadata file, if it has one."""
    if not os.path.isfile(os.path.join(path, METADATA_FILE)):
        return None
    with open(os.path.join(path, METADATA_FILE)) as file:
        return file.read()


def _parsed_metadata(text: Optional[str], path: str) -> dict[str, Any]:
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
) -> dict[str, Any]:
    """Variables from any supported file (`read`'s formats); any difference from the model's layout raises,
    listing each, or with `strict=False` is a `LoadWarning`."""
    return checked(*read(path, config, batch_norm, num_classes), strict)


def read(
    path: str,
    config: Optional[str] = None,
    batch_norm: Optional[bool] = None,
    num_classes: Optional[int] = None,
) -> tuple[dict[str, Any], LoadReport]:
    """Variables from any supported file, by its extension, and the report of every difference from the
    model's layout (`load` checks it).

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
    variables, report, _ = read_with_metadata(path, config, batch_norm, num_classes, recorded_first=False)
    return variables, report


def read_with_metadata(
    path: str,
    config: Optional[str] = None,
    batch_norm: Optional[bool] = None,
    num_classes: Optional[int] = None,
    recorded_first: bool = True,
) -> tuple[dict[str, Any], LoadReport, dict[str, Any]]:
    """`read`, and the file's metadata (`read_metadata`), from one reading of the file.

    `recorded_first`: the config the metadata records wins over `config`
    (which then stands for files that record none); else `config` wins.
    """
    if not os.path.exists(path):
        raise ValueError(f"weights file {path} does not exist")
    contents, metadata = _contents(path)
    recorded = metadata.get("config")
    chosen = (recorded or config) if recorded_first else (config or recorded)
    config = None if chosen is None else resolve_config(chosen)
    if contents.kind == "state_dict":
        return (*_from_state_dict(contents.value, config or "D", batch_norm, num_classes), metadata)
    if contents.kind == "keras":
        return (*convert_keras(path, config or "D", num_classes=num_classes), metadata)
    return (*_checked(contents.value, config, path), metadata)


class _Contents(NamedTuple):
    kind: str  # "state_dict" (torchvision's, timm's), "keras" (read by its converter) or "variables" (ours)
    value: Any


def _contents(path: str) -> tuple[_Contents, dict[str, Any]]:
    """What a weights file holds and its vgg_jax metadata, each file opened once."""
    lower = path.lower()
    if lower.endswith((".pth", ".pt")):
        return _Contents("state_dict", _torch_state(path)), {}
    if lower.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, "np") as file:
                text = (file.metadata() or {}).get(METADATA_KEY)
                flat = {key: file.get_tensor(key) for key in file.keys()}
        except Exception as error:
            raise ValueError(f"{path} is not a readable safetensors file ({error})") from None
        state = any(key.startswith(("features.", "classifier.")) for key in flat) or is_timm_state(flat)
        if state:
            return _Contents("state_dict", flat), _parsed_metadata(text, path)
        return _Contents("variables", unflatten(flat)), _parsed_metadata(text, path)
    if lower.endswith(".h5"):
        return _Contents("keras", None), {}
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
        return _Contents("variables", variables), _parsed_metadata(variables.pop(METADATA_KEY, None), path)
    if os.path.isdir(path):
        import orbax.checkpoint as ocp

        metadata = _parsed_metadata(_metadata_file(path), path)
        with ocp.StandardCheckpointer() as checkpointer:
            return _Contents("variables", checkpointer.restore(os.path.abspath(path))), metadata
    raise ValueError(
        f"cannot tell the format of {path}: expected .pth, .pt, .safetensors, .h5, .msgpack or an Orbax "
        "directory"
    )


def _torch_state(path: str) -> Mapping[str, Any]:
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"reading {path} needs torch: pip install -e '.[torch]' (or convert it to .safetensors elsewhere)"
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
    return state


def _from_state_dict(
    state: Mapping[str, Any], config: str, batch_norm: Optional[bool], num_classes: Optional[int]
) -> tuple[dict[str, Any], LoadReport]:
    if is_timm_state(state):
        state = timm_to_torchvision(state)
    if batch_norm is None:
        batch_norm = any(key.endswith("running_mean") for key in state)
    return convert_torchvision(state, config, batch_norm=batch_norm, num_classes=num_classes)


def _checked(
    variables: Mapping[str, Any], config: Optional[str], source: str
) -> tuple[dict[str, Any], LoadReport]:
    """vgg_jax variables from our own formats, checked against the config's layer names and conv shapes
    (`config=None`: the config their layer names say)."""
    if "params" not in variables:
        raise ValueError(f"{source} holds no 'params' collection; it is not a vgg_jax variables file")
    params = variables["params"]
    config = config or config_of(params) or "D"
    report = LoadReport(source=source)
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
    return dict(variables), report
