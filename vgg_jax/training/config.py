"""A training run's settings: `TrainConfig`, one field per `scripts/train.py` flag, and its validation.

Each field's metadata holds its help text, and where they differ from the
field, its flag spelling (`--lr` for `learning_rate`) and its choices;
`vgg_jax.cli.add_config_flags` builds the command line from them (`vgg_jax.util.options`), so a field
added here is a flag with no other edit, with the same default.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Optional, Union

import numpy as np
import optax

from vgg_jax.model.configs import MIN_IMAGE_SIZE, resolve_config
from vgg_jax.model.vgg import COMPUTE_DTYPES, VGG, ModelConfig, model_from
from vgg_jax.research.warm_start import LAYER_CHOICES
from vgg_jax.training import data as data_lib
from vgg_jax.training import evaluate as evaluate_lib
from vgg_jax.training import finetune
from vgg_jax.training import step as train_lib
from vgg_jax.util.images import NORMALIZE_MODES
from vgg_jax.util.options import option
from vgg_jax.weights import runs


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run; saved as the workdir's config.json.

    Every field is a `scripts/train.py` flag: `--field-name`, or the spelling
    in its metadata (`--lr` for `learning_rate`), with the same default. The
    model's own settings are held whole in `model` (`vgg_jax.model.vgg.ModelConfig`; their flags are
    `--width-scale`, `--dropout`, ..., without a prefix).
    """

    workdir: str = dataclasses.field(metadata={"help": "where config.json, metrics.jsonl and checkpoints go"})
    config: str = option("A", "config or alias")
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: str = option("digits", "digits | synthetic | folder:PATH | packed:PATH (scripts/pack_images.py)")
    image_size: int = option(32, "training crop size in pixels (at least 32)")
    epochs: int = option(1, "passes over the training set", resumable=True)
    batch_size: int = option(16, "the global batch, split over the devices")
    max_steps: Optional[int] = option(
        None, "stop after this many steps (before the epochs are done)", resumable=True
    )
    learning_rate: float = option(1e-2, "learning rate (the paper's 1e-2)", flag="--lr")
    lr_policy: str = option(
        "paper",
        "paper (divide by 10 when validation accuracy stalls), step or cosine",
        choices=train_lib.LR_POLICIES,
    )
    plateau_patience: int = option(
        3, "evaluations without improvement before --lr-policy paper divides the rate by 10"
    )
    optimizer: str = option(
        "sgd",
        "sgd (the paper's: momentum, L2 decay added to the gradient) or adamw (decoupled weight decay)",
        choices=train_lib.OPTIMIZERS,
    )
    momentum: float = option(0.9, "SGD momentum (the paper's 0.9)")
    weight_decay: float = option(
        5e-4, "weight decay on kernels: L2 with sgd (the paper's 5e-4), decoupled with adamw"
    )
    label_smoothing: float = option(0.0, "smooth the targets by EPS (optax.smooth_labels; 0.1 is usual)")
    accumulate: int = option(
        1, "average the gradients of N steps into one update: each update sees N x --batch-size images"
    )
    ema_decay: Optional[float] = option(
        None,
        "keep an exponential moving average of the parameters with this decay (0.999, say), checkpointed; "
        "evaluation and export use it",
    )
    dtype: str = option("float32", "compute dtype; parameters stay float32", choices=tuple(COMPUTE_DTYPES))
    seed: int = option(0, "seeds the init, the dropout and the data order")
    scale: Optional[list[int]] = option(
        None,
        "training short side S, or S_min,S_max for scale jittering (default: the image size)",
        metavar="S[,S_MAX]",
    )
    flip: bool = option(True, "random horizontal flips (--no-flip turns them off)")
    pca_std: float = option(0.0, "AlexNet's PCA colour shift std (the paper's 0.1)")
    subtract_mean: bool = option(
        True, "subtract the training set's mean RGB (--no-subtract-mean keeps the pixels as they are)"
    )
    preprocess: Optional[str] = option(
        None,
        "the pixel convention of pretrained weights, torch or caffe, instead of mean subtraction "
        "(default with a pretrained --init-from: the weights' own)",
        choices=NORMALIZE_MODES,
    )
    mean_rgb: Optional[list[float]] = option(
        None, "the mean RGB to subtract, 0-255 (default: computed from the training set)", metavar="R,G,B"
    )
    eval_method: str = option(
        "center",
        "the final evaluation: the paper's Sec. 3.2 methods",
        flag="--eval",
        choices=evaluate_lib.METHODS,
        resumable=True,
    )
    eval_scales: Optional[list[int]] = option(
        None, "test scales Q (default: the image size)", metavar="Q[,Q...]", resumable=True
    )
    eval_every: int = option(0, "steps between evaluations (0: once per epoch)", resumable=True)
    checkpoint_every: int = option(0, "steps between checkpoints (0: at each evaluation)", resumable=True)
    keep: int = option(3, "checkpoints kept", resumable=True)
    log_every: int = option(
        10, "steps between metrics.jsonl lines (and plain progress lines without a terminal)", resumable=True
    )
    workers: Union[str, int] = option(
        "auto",
        "Grain worker processes for the input: auto (one per core this process may use, less one, for image "
        "folders; none for data in memory), or a number (0: load in this process)",
        parse=data_lib.workers_flag,
        resumable=True,
    )
    init_from: Optional[str] = option(
        None,
        "start from a run's newest checkpoint (coarse-to-fine), a weights file (.pth, .safetensors, .h5, "
        ".msgpack) "
        "or a pretrained name (torchvision:vgg16); fc8 is initialised anew when the class counts differ",
        metavar="WORKDIR|FILE|NAME",
    )
    warm_start_layers: str = option(
        "paper",
        "which layers --init-from copies: paper (the first 4 convs and the 3 FC layers) or matching (every "
        "shared one)",
        choices=LAYER_CHOICES,
    )
    skip_nonfinite: int = option(
        0,
        "skip (and count) up to N steps whose loss or gradients are NaN/Inf before stopping (0: stop at the "
        "first)",
        metavar="N",
        resumable=True,
    )
    devices: Optional[int] = option(
        None, "use this many devices (default: all; an equal share per process)", resumable=True
    )
    shard_fc: bool = option(
        False, "split the FC kernels and their optimizer state over the devices", resumable=True
    )
    remat: bool = option(
        False,
        "recompute each conv block in the backward pass: less activation memory, more time",
        resumable=True,
    )


def validate(cfg: TrainConfig) -> None:
    """Refuses a config that cannot run, before anything is written; the message begins with the field's
    name (the command line puts its flag there, `cli.flagged`)."""
    if not isinstance(cfg.workdir, str) or not cfg.workdir.strip():
        raise ValueError(f"workdir must be a directory path, got {cfg.workdir!r}")
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
            raise ValueError(f"{field} must be one of {', '.join(options)}, got {getattr(cfg, field)!r}")
    try:
        data_lib.workers_flag(cfg.workers)
    except ValueError as error:
        raise ValueError(f"workers: {error}") from None
    _check_sizes_and_pixels(cfg)
    if cfg.init_from is not None and (not isinstance(cfg.init_from, str) or not cfg.init_from.strip()):
        raise ValueError(
            f"init_from needs a run's workdir, a weights file or a pretrained name, got {cfg.init_from!r}"
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
            raise ValueError(f"{field} must be an integer from {minimum} to {maximum}, got {value!r}")
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
            raise ValueError(f"{field} must be a finite number in {interval}, got {value!r}")


def _check_sizes_and_pixels(cfg: TrainConfig) -> None:
    """--scale and --eval-scales against the image size, and --mean-rgb."""
    if cfg.scale is not None:
        scale = list(cfg.scale)
        if (
            not 1 <= len(scale) <= 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s < cfg.image_size for s in scale)
            or scale != sorted(scale)
        ):
            raise ValueError(
                f"scale must be S or S_min,S_max with {cfg.image_size} (the image size) <= S_min <= S_max, "
                f"got {cfg.scale!r}"
            )
    if cfg.eval_scales is not None and (
        not cfg.eval_scales
        or any(isinstance(q, bool) or not isinstance(q, int) or q < cfg.image_size for q in cfg.eval_scales)
    ):
        raise ValueError(
            f"eval_scales must be test scales Q of at least the image size {cfg.image_size}, got "
            f"{cfg.eval_scales!r}"
        )
    if cfg.mean_rgb is not None and (
        len(cfg.mean_rgb) != 3
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in cfg.mean_rgb)
    ):
        raise ValueError(f"mean_rgb must be three finite numbers (0-255), got {cfg.mean_rgb!r}")
    if cfg.mean_rgb is not None and not cfg.subtract_mean:
        raise ValueError("mean_rgb is a mean to subtract, and `subtract_mean` is off: pick one")


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


def read_config(workdir: str, argument: str = "resume") -> TrainConfig:
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
