"""One way to name a model: `resolve(spec)` gives the model, its variables and the pixels it expects.

A spec is one of:

- a published name, with an optional source prefix: `vgg16`, `D`,
  `torchvision:vgg16_bn`, `keras:vgg19`, `timm:vgg16` (`vgg_jax.pretrained`);
- a weights file (`.pth`, `.pt`, `.safetensors`, `.h5`, `.msgpack`) or an
  Orbax directory written by `vgg_jax.weights.save`;
- a training run's workdir (its newest checkpoint), or one of its step
  folders (`WORKDIR/checkpoints/N`, `WORKDIR/checkpoints/N/state`).

`--init-from`, `scripts/evaluate.py`, `scripts/predict.py --model` and
`scripts/convert_weights.py` all take it. The pixel convention travels with
the weights: the registry's for a published name, the file's own metadata
(written by `vgg_jax.weights.save` and `convert_weights.py`), a published
file recognised by its hash, or the run's own mean RGB or convention.
Where none of these says, `preprocess` is None and `require_pixels` refuses
with one line asking for `preprocess`: the convention is never guessed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax.model.configs import resolve_config
from vgg_jax.model.infer import SHAPE_FIELDS, config_of, infer_model, init_image_size
from vgg_jax.model.vgg import VGG
from vgg_jax.util.images import PIXEL_MODES
from vgg_jax.util.options import FieldError
from vgg_jax.weights import formats as weights_lib
from vgg_jax.weights import runs, zoo
from vgg_jax.weights.layout import checked
from vgg_jax.weights.named import Resolved
from vgg_jax.weights.torchvision_format import to_torchvision
from vgg_jax.weights.zoo import SOURCES, weights_info

WEIGHT_FILES = (".pth", ".pt", ".safetensors", ".h5", ".msgpack")
UNKNOWN_SPEC = (
    "is not a published name (vgg16, keras:vgg16, timm:vgg16_bn), a weights file ({files}), "
    "an Orbax weights directory, or a run's workdir (no config.json there)"
)


def unknown_spec(spec: str, argument: str = "") -> ValueError:
    """The one error for a spec that names nothing."""
    return ValueError(
        f"{argument + ' ' if argument else ''}{spec} {UNKNOWN_SPEC.format(files=', '.join(WEIGHT_FILES))}"
    )


def _not_found(spec: str, source: Optional[str], argument: str) -> ValueError:
    """The registry's own message for a name it does not publish (`vgg17`, `keras:vgg11`); else
    `unknown_spec`."""
    if not isinstance(spec, str) or os.sep in spec or os.path.splitext(spec)[1] or os.path.exists(spec):
        return unknown_spec(spec, argument)
    prefix, sep, name = spec.partition(":")
    if sep and prefix not in SOURCES:
        return unknown_spec(spec, argument)
    try:
        weights_info(name if sep else spec, prefix if sep else source or "torchvision")
    except ValueError as error:
        return ValueError(
            f"{argument + ' ' if argument else ''}{spec}: {error}; or name a weights file or a run's workdir"
        )
    return unknown_spec(spec, argument)


def pretrained_spec(spec: str, source: Optional[str] = None) -> Optional[tuple[str, str]]:
    """`(source, name)` when `spec` is a published name (`keras:vgg16`, or `vgg16` with `source`), else
    None."""
    if not isinstance(spec, str) or os.path.exists(spec):
        return None
    prefix, sep, name = spec.partition(":")
    if sep and prefix in SOURCES:
        return (prefix, name) if name else None
    if sep:
        return None
    try:
        weights_info(spec, source or "torchvision")
    except ValueError:
        return None
    return source or "torchvision", spec


def describe(spec: str, source: Optional[str] = None) -> Optional[str]:
    """ "run", "file" or "pretrained" for what `spec` names, or None when it names nothing."""
    if not isinstance(spec, str) or not spec.strip():
        return None
    if runs.run_of(spec):
        return "run"
    if (
        os.path.isfile(spec)
        and spec.lower().endswith(WEIGHT_FILES)
        or os.path.isdir(spec)
        and _is_orbax_weights(spec)
    ):
        return "file"
    return "pretrained" if pretrained_spec(spec, source) else None


def _is_orbax_weights(path: str) -> bool:
    return any(
        os.path.exists(os.path.join(path, name))
        for name in ("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt")
    )


def resolve(
    spec: str,
    config: Optional[str] = None,
    preprocess: Optional[str] = None,
    source: Optional[str] = None,
    argument: str = "",
    batch_norm: Optional[bool] = None,
    run_config: Optional[dict[str, Any]] = None,
    **model_kwargs: Any,
) -> Resolved:
    """The model, variables and pixel convention `spec` names (see the module's docstring).

    Args:
        spec: a published name, a weights file or directory, or a run's workdir or step folder.
        config: the config a weights file is read as where its metadata does not say (default: read off
            the layer names of our own formats, else D).
        preprocess: overrides the pixel convention the weights carry ("torch", "caffe", "paper").
        source: the source of a bare published name (default torchvision); a prefix in `spec` wins.
        argument: the argument that took the spec, for error messages ("--init-from").
        batch_norm: whether a torchvision state_dict is a `_bn` variant (default: read off the file).
        run_config: a run's config.json as the caller has read it, so that it is read once.
        **model_kwargs: `VGG` fields that do not change the variables (dtype, conv_impl, ...).
    """
    if preprocess is not None and preprocess not in PIXEL_MODES:
        raise FieldError("preprocess", f"must be one of {', '.join(PIXEL_MODES)}, got {preprocess!r}")
    kind = describe(spec, source)
    if kind == "run":
        resolved = _resolve_run(spec, argument, model_kwargs, run_config)
    elif kind == "file":
        resolved = _resolve_file(spec, config, batch_norm, model_kwargs, identify=preprocess is None)
    elif kind == "pretrained":
        resolved = _resolve_pretrained(spec, source, model_kwargs)
    else:
        raise _not_found(spec, source, argument)
    if preprocess is not None and preprocess != resolved.preprocess:
        mean = resolved.mean_rgb if preprocess == "paper" else None
        resolved = dataclasses.replace(resolved, preprocess=preprocess, mean_rgb=mean)
    check_finite(resolved.variables, resolved.description)
    return resolved


def check_finite(variables: Any, what: str) -> None:
    """Refuses weights that hold NaN or Inf, naming the first such parameter: checked once, where every
    command loads them, since a model computing with them answers nonsense (or 50% error) without a word."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            continue
        bad = int(jnp.size(leaf) - jnp.count_nonzero(jnp.isfinite(leaf)))
        if bad:
            name = "/".join(str(getattr(key, "key", key)) for key in path)
            raise ValueError(
                f"{what} holds non-finite weights: {name} has {bad} NaN or Inf value{'s' if bad > 1 else ''} "
                f"(of {jnp.size(leaf)}); the file is damaged or its run diverged: use another file or "
                "checkpoint"
            )


def _resolve_pretrained(spec: str, source: Optional[str], model_kwargs: dict[str, Any]) -> Resolved:
    source, name = pretrained_spec(spec, source)
    return zoo.pretrained(name, source, **model_kwargs)


def _resolve_file(
    path: str,
    config: Optional[str],
    batch_norm: Optional[bool],
    model_kwargs: dict[str, Any],
    identify: bool = True,
) -> Resolved:
    # one reading of the file: its variables and its metadata, whose config wins over `config`
    variables, report, metadata = weights_lib.read_with_metadata(path, config, batch_norm=batch_norm)
    config = resolve_config(metadata.get("config") or config or config_of(variables["params"]) or "D")
    if report.mismatched or report.unexpected or any(not name.startswith("fc") for name in report.missing):
        checked(variables, report, strict=True)  # raises, naming every problem (a convs-only file passes)
    variables = {collection: value for collection, value in variables.items() if value}
    model = _built(variables, config, metadata.get("model"), model_kwargs, f"{path}'s metadata")
    preprocess, mean = metadata.get("preprocess"), metadata.get("mean_rgb")
    classes = metadata.get("classes")
    if preprocess is None and identify:  # hashing a 500 MB file is only worth it when nothing else says
        entry = _published_entry(path)
        if entry is not None:
            preprocess = entry.preprocess
    if classes is None and model.num_classes == 1000:
        from vgg_jax.weights import imagenet

        classes = imagenet.class_names()
    size = metadata.get("image_size") or (
        init_image_size(variables["params"], config, model.width_scale)
        if "fc6" in variables["params"]
        else 224
    )
    return Resolved(
        model,
        variables,
        config,
        preprocess,
        None if mean is None else tuple(mean),
        classes,
        int(size),
        f"{path} (config {config})",
        "file",
    )


def _built(variables: Any, config: str, settings: Any, model_kwargs: dict[str, Any], where: str) -> VGG:
    """The model of these variables: its shapes read off them (`infer.SHAPE_FIELDS`), the rest of VGG's
    settings as stored with them (`settings`: a `ModelConfig` as a dict; None for files that carry none),
    and `model_kwargs` over both."""
    rest = {
        name: value for name, value in (settings or {}).items() if name not in SHAPE_FIELDS
    } | model_kwargs
    try:
        if settings is not None and not isinstance(settings, dict):
            raise TypeError(f"expected an object, got {settings!r}")
        return dataclasses.replace(infer_model(variables, config), **rest)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: its model settings cannot be used ({error}); restore the file") from None


def _published_entry(path: str) -> Any:
    """The registry entry whose published hash this file has (a torchvision or Keras download kept
    elsewhere), or None."""
    from vgg_jax.weights import hub

    if os.path.isdir(path) or not path.lower().endswith((".pth", ".pt", ".h5")):
        return None
    found = hub.digests(path)
    for entry in zoo.WEIGHTS.values():
        if (
            entry.sha256
            and found["sha256"].startswith(entry.sha256)
            or entry.md5
            and found["md5"] == entry.md5
        ):
            return entry
    return None


def _resolve_run(
    spec: str, argument: str, model_kwargs: dict[str, Any], saved: Optional[dict[str, Any]] = None
) -> Resolved:
    workdir, step = runs.run_of(spec)
    saved = runs.run_settings(workdir, argument or "the run", saved)
    step, state = runs.restore_state(workdir, argument or "the run", step)
    ema = state.get("ema_params")  # a run with --ema-decay is used through its parameters' average
    variables = {"params": ema or state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    config = resolve_config(saved["config"])
    model = _built(variables, config, saved["model"], model_kwargs, f"{workdir}/{runs.CONFIG}")
    if saved["preprocess"]:
        preprocess, mean = saved["preprocess"], None
    else:  # the run's mean RGB (none with --no-subtract-mean: the pixels as they are)
        preprocess, mean = "paper", tuple(saved["mean_rgb"] or (0.0, 0.0, 0.0))
    return Resolved(
        model,
        variables,
        config,
        preprocess,
        mean,
        runs.read_classes(workdir),
        saved["image_size"],
        f"run {workdir}, step {step}" + (", the parameters' EMA" if ema else ""),
        "run",
        saved,
    )


def export(
    spec: str,
    dst: str,
    config: Optional[str] = None,
    preprocess: Optional[str] = None,
    batch_norm: Optional[bool] = None,
    log: Callable[[str], None] = print,
) -> Resolved:
    """Writes the weights `spec` names to `dst`, by its extension, with the metadata that lets them be used
    alone.

    `.msgpack`, `.safetensors` and Orbax directories record the config, the
    pixel convention, the class names and the training crop
    (`weights.read_metadata`); `.pth` (torchvision's layout, needs torch)
    records nothing. An existing `dst` is never replaced.
    """
    if os.path.exists(dst):
        raise ValueError(f"{dst} already exists; choose another output or remove it first")
    named = resolve(spec, config, preprocess, batch_norm=batch_norm)
    if dst.lower().endswith((".pth", ".pt")):
        try:
            import torch
        except ImportError:
            raise ValueError(f"writing {dst} needs torch: pip install -e '.[torch]'") from None
        from vgg_jax.util.files import atomic_write

        state = {
            key: torch.from_numpy(np.array(value))
            for key, value in to_torchvision(named.variables, named.config).items()
        }
        atomic_write(dst, lambda temporary: torch.save(state, temporary))
    else:
        weights_lib.save(named.variables, dst, metadata=named.metadata())
    count = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(named.variables.get("params", {})))
    pixels = named.preprocess or "not known"
    log(
        f"{named.description} -> {dst}: config {named.config}, {count:,} parameters, pixels {pixels}"
        + (f", {len(named.classes)} class names" if named.classes else "")
    )
    if dst.lower().endswith((".pth", ".pt")):
        log("note: a .pth file records no pixel convention; pass --preprocess when you use it")
    elif named.preprocess is None:
        log(
            "note: the source does not say which pixels its weights expect, so neither does the output; pass "
            "--preprocess torch|caffe to record it"
        )
    return named
