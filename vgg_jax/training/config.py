"""A training run's settings: `TrainConfig`, one field per `scripts/train.py` flag, and its validation.

Each field's docstring is its flag's help, and its type (a `Literal` of the
choices, a `comma(...)` list) says what the flag takes; `tyro` builds the
command line from them (`vgg_jax.cli`), so a field added here is a flag with
no other edit, with the same default.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Annotated, Callable, Literal, Optional, Union

import numpy as np
import optax
import tyro

from vgg_jax.model.configs import MIN_IMAGE_SIZE, resolve_config
from vgg_jax.model.vgg import COMPUTE_DTYPES, VGG, ModelConfig, model_from
from vgg_jax.research.warm_start import LAYER_CHOICES
from vgg_jax.training import data as data_lib
from vgg_jax.training import evaluate as evaluate_lib
from vgg_jax.training import finetune
from vgg_jax.training import step as train_lib
from vgg_jax.util.images import NORMALIZE_MODES
from vgg_jax.util.options import FieldError, comma, one, resumable
from vgg_jax.weights import runs


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run; saved as the workdir's config.json.

    Every field is a flag of scripts/train.py, named after the field (dashes
    for underscores) or as its annotation says (`--lr` for `learning_rate`,
    the field's own spelling still accepted), with the same default. The model's settings are held
    whole in `model` (`vgg_jax.model.vgg.ModelConfig`; their flags are
    `--width-scale`, `--dropout`, ..., without a prefix).
    """

    workdir: str
    """where config.json, metrics.jsonl and checkpoints go"""
    config: str = "A"
    """config or alias"""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: str = "digits"
    """digits | synthetic | folder:PATH | packed:PATH (scripts/pack_images.py)"""
    image_size: int = 32
    """training crop size in pixels (at least 32)"""
    epochs: int = resumable(1)
    """passes over the training set"""
    batch_size: int = 16
    """the global batch, split over the devices"""
    max_steps: Optional[int] = resumable(None)
    """stop after this many steps (before the epochs are done)"""
    learning_rate: Annotated[float, tyro.conf.arg(name="lr", aliases=("--learning-rate",))] = 1e-2
    """learning rate (the paper's 1e-2)"""
    lr_policy: Literal[train_lib.LR_POLICIES] = "paper"
    """paper (divide by 10 when validation accuracy stalls), step or cosine"""
    plateau_patience: int = 3
    """evaluations without improvement before --lr-policy paper divides the rate by 10"""
    optimizer: Literal[train_lib.OPTIMIZERS] = "sgd"
    """sgd (the paper's: momentum, L2 decay added to the gradient) or adamw (decoupled weight decay)"""
    momentum: float = 0.9
    """SGD momentum (the paper's 0.9)"""
    weight_decay: float = 5e-4
    """weight decay on kernels: L2 with sgd (the paper's 5e-4), decoupled with adamw"""
    label_smoothing: float = 0.0
    """smooth the targets by EPS (optax.smooth_labels; 0.1 is usual)"""
    accumulate: int = 1
    """average the gradients of N steps into one update: each update sees N x --batch-size images"""
    ema_decay: Optional[float] = None
    """keep an exponential moving average of the parameters with this decay (0.999, say), checkpointed;
    evaluation and export use it"""
    dtype: Literal[tuple(COMPUTE_DTYPES)] = "float32"
    """compute dtype; parameters stay float32"""
    seed: int = 0
    """seeds the init, the dropout and the data order"""
    scale: Annotated[Optional[list[int]], comma("S[,S_MAX]", int, kind=list)] = None
    """training short side S, or S_min,S_max for scale jittering (default: the image size)"""
    flip: bool = True
    """random horizontal flips (--no-flip turns them off)"""
    pca_std: float = 0.0
    """AlexNet's PCA colour shift std (the paper's 0.1)"""
    subtract_mean: bool = True
    """subtract the training set's mean RGB (--no-subtract-mean keeps the pixels as they are)"""
    preprocess: Optional[Literal[NORMALIZE_MODES]] = None
    """the pixel convention of pretrained weights, torch or caffe, instead of mean subtraction (default with
    a pretrained --init-from: the weights' own)"""
    mean_rgb: Annotated[Optional[list[float]], comma("R,G,B", float, kind=list)] = None
    """the mean RGB to subtract, 0-255 (default: computed from the training set)"""
    eval_method: Annotated[
        Literal[evaluate_lib.METHODS], tyro.conf.arg(name="eval", aliases=("--eval-method",))
    ] = resumable("center")
    """the final evaluation: the paper's Sec. 3.2 methods"""
    eval_scales: Annotated[Optional[list[int]], comma("Q[,Q...]", int, kind=list)] = resumable(None)
    """test scales Q (default: the image size)"""
    eval_every: int = resumable(0)
    """steps between evaluations (0: once per epoch)"""
    checkpoint_every: int = resumable(0)
    """steps between checkpoints (0: at each evaluation)"""
    keep: int = resumable(3)
    """checkpoints kept"""
    log_every: int = resumable(10)
    """steps between metrics.jsonl lines (and plain progress lines without a terminal)"""
    workers: Annotated[Union[str, int], one("auto|N", data_lib.workers_flag)] = resumable("auto")
    """Grain worker processes for the input: auto (one per core this process may use, less one, for image
    folders; none for data in memory), or a number (0: load in this process)"""
    init_from: Annotated[Optional[str], tyro.conf.arg(metavar="WORKDIR|FILE|NAME")] = None
    """start from a run's newest checkpoint (coarse-to-fine), a weights file (.pth, .safetensors, .h5,
    .msgpack) or a pretrained name (torchvision:vgg16); fc8 is initialised anew when the class counts
    differ"""
    warm_start_layers: Literal[LAYER_CHOICES] = "paper"
    """which layers --init-from copies: paper (the first 4 convs and the 3 FC layers) or matching (every
    shared one)"""
    skip_nonfinite: Annotated[int, tyro.conf.arg(metavar="N")] = resumable(0)
    """skip (and count) up to N steps whose loss or gradients are NaN/Inf before stopping (0: stop at the
    first)"""
    devices: Optional[int] = resumable(None)
    """use this many devices (default: all; an equal share per process)"""
    shard_fc: bool = resumable(False)
    """split the FC kernels and their optimizer state over the devices"""
    remat: bool = resumable(False)
    """recompute each conv block in the backward pass: less activation memory, more time"""


def validate(cfg: TrainConfig) -> None:
    """Refuses a config that cannot run, before anything is written: a `FieldError` names the field (the
    command line puts its flag there)."""
    if not isinstance(cfg.workdir, str) or not cfg.workdir.strip():
        raise FieldError("workdir", f"must be a directory path, got {cfg.workdir!r}")
    resolve_config(cfg.config)
    _check_numbers(cfg)
    for field, options in (
        ("lr_policy", train_lib.LR_POLICIES),
        ("optimizer", train_lib.OPTIMIZERS),
        ("dtype", tuple(COMPUTE_DTYPES)),
        ("eval_method", evaluate_lib.METHODS),
        ("warm_start_layers", LAYER_CHOICES),
    ):
        if getattr(cfg, field) not in options:
            raise FieldError(field, f"must be one of {', '.join(options)}, got {getattr(cfg, field)!r}")
    try:
        data_lib.workers_flag(cfg.workers)
    except ValueError as error:
        raise FieldError("workers", str(error)) from None
    _check_sizes_and_pixels(cfg)
    if cfg.init_from is not None and (not isinstance(cfg.init_from, str) or not cfg.init_from.strip()):
        raise FieldError(
            "init_from", f"needs a run's workdir, a weights file or a pretrained name, got {cfg.init_from!r}"
        )
    try:
        model_from(cfg.model, config=cfg.config, num_classes=1)  # VGG's own checks, the one place made
    except TypeError as error:
        raise ValueError(str(error)) from None
    data_lib.parse_data(cfg.data)


# Each numeric field's range: integers as (min, max), numbers as (low, high, low_open, high_open); None
# passes where the field is optional.
_INTEGERS = {
    "image_size": (MIN_IMAGE_SIZE, 8192),
    **{name: (1, 2**31 - 1) for name in ("epochs", "batch_size", "plateau_patience", "keep", "log_every")},
    **{name: (0, 2**31 - 1) for name in ("eval_every", "checkpoint_every", "skip_nonfinite")},
    **{name: (1, 2**31 - 1) for name in ("max_steps", "devices")},
    "seed": (0, 2**32 - 1),
    "accumulate": (1, 2**16),
}
_NUMBERS = {
    "learning_rate": (0, math.inf, True, True),
    "momentum": (0, 1, False, True),
    "weight_decay": (0, math.inf, False, True),
    "pca_std": (0, math.inf, False, True),
    "label_smoothing": (0, 1, False, True),
    "ema_decay": (0, 1, True, True),
}
_OPTIONAL = ("max_steps", "devices", "ema_decay")


def _check_numbers(cfg: TrainConfig) -> None:
    """Every integer and number field within its range (`_INTEGERS`, `_NUMBERS`)."""
    for field, (minimum, maximum) in _INTEGERS.items():
        value = getattr(cfg, field)
        if value is None and field in _OPTIONAL:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or not minimum <= value <= maximum
        ):
            raise FieldError(field, f"must be an integer from {minimum} to {maximum}, got {value!r}")
    for field, (low, high, low_open, high_open) in _NUMBERS.items():
        value = getattr(cfg, field)
        if value is None and field in _OPTIONAL:
            continue
        ok = (
            isinstance(value, (int, float, np.floating))
            and not isinstance(value, bool)
            and math.isfinite(value)
        )
        ok = (
            ok
            and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)
        )
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise FieldError(field, f"must be a finite number in {interval}, got {value!r}")


def _check_sizes_and_pixels(cfg: TrainConfig) -> None:
    """--scale and --eval-scales against the image size, and --mean-rgb."""
    if cfg.scale is not None:
        scale = list(cfg.scale)
        if (
            not 1 <= len(scale) <= 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s < cfg.image_size for s in scale)
            or scale != sorted(scale)
        ):
            raise FieldError(
                "scale",
                f"must be S or S_min,S_max with {cfg.image_size} (the image size) <= S_min <= S_max, got "
                f"{cfg.scale!r}",
            )
    if cfg.eval_scales is not None and (
        not cfg.eval_scales
        or any(isinstance(q, bool) or not isinstance(q, int) or q < cfg.image_size for q in cfg.eval_scales)
    ):
        raise FieldError(
            "eval_scales",
            f"must be test scales Q of at least the image size {cfg.image_size}, got {cfg.eval_scales!r}",
        )
    if cfg.mean_rgb is not None and (
        len(cfg.mean_rgb) != 3
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in cfg.mean_rgb)
    ):
        raise FieldError("mean_rgb", f"must be three finite numbers (0-255), got {cfg.mean_rgb!r}")
    if cfg.mean_rgb is not None and not cfg.subtract_mean:
        raise FieldError(
            "mean_rgb", "is a mean to subtract, but mean subtraction is off (--no-subtract-mean): pick one"
        )


def make_train_step(
    cfg: TrainConfig, model: VGG, total_steps: int
) -> tuple[optax.GradientTransformation, Callable]:
    """The optimiser and the (not yet jitted) train step of a run of `cfg`: what `train.py` runs and what
    `bench.py --mode train-step` times.

    The optimiser: `cfg.optimizer` (decay on kernels), the learning-rate
    policy over the run's updates (`total_steps` / `cfg.accumulate`), no
    update nor state for the layers `cfg.model.freeze` freezes. Its batches are
    `{"image": uint8 crops, "shift": (N, 3) colour shifts, "label"}`, turned
    into the model's pixels on the device (`data.device_pixels`, by
    `cfg.mean_rgb` or `cfg.preprocess`).
    """
    optimizer = train_lib.make_optimizer(
        cfg.optimizer,
        train_lib.learning_rate_schedule(cfg.lr_policy, cfg.learning_rate, total_steps // cfg.accumulate),
        cfg.momentum,
        cfg.weight_decay,
        param_labels=finetune.param_labels(cfg.config, cfg.model.freeze) if cfg.model.freeze else None,
        accumulate=cfg.accumulate,
    )
    pixels = data_lib.device_pixels(None if cfg.mean_rgb is None else tuple(cfg.mean_rgb), cfg.preprocess)
    return optimizer, train_lib.train_step(model, optimizer, pixels, cfg.label_smoothing, cfg.ema_decay)


def read_config(workdir: str, argument: str = "--resume") -> TrainConfig:
    """A run's saved TrainConfig, checked whole: one-line `RunConfigError`s name the file and the field.

    Garbled JSON, a key this version lacks, a missing field and a bad value
    are each refused; nothing is filled in but through `runs.migrate` (the
    older layout). A start refused here changes nothing in the run.
    """
    path = os.path.join(workdir, runs.CONFIG)
    saved = runs.read_config(workdir, argument)
    names = [field.name for field in dataclasses.fields(TrainConfig) if field.name != "workdir"]
    unknown = sorted(set(saved) - set(names) - {"workdir"})
    if unknown:
        raise runs.RunConfigError(
            f"{argument}: {path} has a key this version of vgg_jax does not know: {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + "; it was written by a newer version or edited by hand: remove the key, or use the version "
            "that wrote it"
        )
    runs.require_fields(saved, names, argument, path)
    runs.run_settings(workdir, argument, saved)  # the readers' checks: VGG's settings, the crop, the pixels
    cfg = TrainConfig(**{**saved, "workdir": workdir, "model": ModelConfig(**saved["model"])})
    try:
        validate(cfg)
    except ValueError as error:
        raise runs.config_error(argument, path, "the field " + str(error).replace("`", "")) from None
    return cfg
