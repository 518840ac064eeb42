"""A training run's directory as a weights source: its checkpoints, saved config and class names, read only.

    WORKDIR/config.json            the run's TrainConfig as JSON
    WORKDIR/classes.json           its class names
    WORKDIR/checkpoints/N/         Orbax checkpoints; finished when Orbax's metadata file is in them

The read side of the layout that `vgg_jax.training.rundir` writes, kept here
so that naming a model (`vgg_jax.weights.resolve`) and prediction read a
run's weights without importing training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sys
import traceback
import warnings
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from vgg_jax.model.configs import MIN_IMAGE_SIZE, resolve_config
from vgg_jax.model.vgg import ModelConfig, model_from
from vgg_jax.util.images import NORMALIZE_MODES

CHECKPOINTS = "checkpoints"
TRASH = ".deleted"  # under checkpoints/: not digit-named, so never listed as a step
FINISHED_MARKER = "_CHECKPOINT_METADATA"  # Orbax writes it before the final rename
CONFIG = "config.json"
CLASSES = "classes.json"
ERRORS_LOG = (
    "checkpoint_errors.log"  # what Orbax and TensorStore report when a checkpoint fails to read or write
)
# The fields config.json gained after its first layout (vgg_jax before the AdamW/EMA options), each at the
# value that reproduces how such a run behaved. A file that lacks all of them is of that layout and is read
# with them (`migrate`); a file that lacks some of them, or any other field, is damaged and refused.
ADDED_FIELDS = {
    "optimizer": "sgd",
    "label_smoothing": 0.0,
    "accumulate": 1,
    "ema_decay": None,
    "conv_impl": "auto",
    "relu_impl": "jax",
    "pool_impl": "auto",
}
# What a run's weights are read with besides VGG's settings ("model", a `ModelConfig`): its config, its crop
# and its pixels. Each must be in config.json: none is ever filled in with a default.
READ_FIELDS = ("config", "dtype", "image_size", "preprocess", "subtract_mean", "mean_rgb")


class CheckpointReadError(ValueError):
    """No checkpoint of a run could be restored; the message names the path and the step."""


class RunConfigError(ValueError):
    """A run's config.json is missing a field, holds a bad value, or does not describe its checkpoints.

    A config problem, never a damaged checkpoint: nothing is moved and the
    file is not rewritten. The message names the file and the field.
    """


def short(error: BaseException) -> str:
    """The first line of an error (or of its first cause with a message), for one-line messages.

    Object reprs (`<bound method ... at 0x...>`), TensorStore's index lists
    and its "See full TensorStore details" tail are cut, so that the line
    reads as a reason.
    """
    while error.__cause__ is not None and not str(error).strip():
        error = error.__cause__
    text = str(error).strip().splitlines()
    if not text:
        return type(error).__name__
    line = text[0].split(" See full TensorStore details")[0]
    code = re.search(r"os_error_code='(\d+)'", line)
    if code:  # TensorStore's wrapping of an OSError: its reason first, where a long path cannot cut it off
        line = f"{os.strerror(int(code[1]))} ({line})"
    line = re.sub(r"<[^<>]* at 0x[0-9a-f]+>|\(slice\(.*\)\)|\(\)(?=\.?$)", "", line)
    line = re.sub(r":\s*\.?$", "", line.strip()).strip()
    if len(line) > 200:
        line = line[:199] + "\u2026"
    return f"{type(error).__name__}: {line}"


def checkpoint_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, CHECKPOINTS))


def step_folders(workdir: str) -> list[int]:
    directory = checkpoint_dir(workdir)
    return (
        sorted(int(name) for name in os.listdir(directory) if name.isdigit())
        if os.path.isdir(directory)
        else []
    )


def finished_steps(workdir: str) -> list[int]:
    """The steps whose checkpoint Orbax finished, oldest first: digit-named folders holding its metadata
    file."""
    return [
        s
        for s in step_folders(workdir)
        if os.path.isfile(os.path.join(checkpoint_dir(workdir), str(s), FINISHED_MARKER))
    ]


def manager(workdir: str, keep: int = 1, read_only: bool = False) -> ocp.CheckpointManager:
    """Orbax's manager for a run's checkpoints: state (arrays), data (iterator states) and policy (JSON).

    `read_only` (for --init-from) creates, cleans and deletes nothing; it is
    not Orbax's own read_only option, which logs a warning per setting.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep,
        enable_async_checkpointing=False,
        todelete_subdir=None
        if read_only
        else TRASH,  # rename, then delete (save() empties it): never a half-deleted step
        cleanup_tmp_directories=not read_only,
        create=not read_only,
    )
    handlers = {
        "state": ocp.StandardCheckpointHandler(),
        "data": ocp.JsonCheckpointHandler(),
        "policy": ocp.JsonCheckpointHandler(),
    }
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=handlers)


class CheckpointReports(logging.Filter):
    """Keeps what Orbax and TensorStore report on their own off the terminal while a checkpoint is read or
    written.

    A read or write that fails makes them report from their own threads:
    absl `ERROR` records with tracebacks, asyncio's "never retrieved"
    records, and one "Exception ignored in <coroutine ...>" per array read
    still in flight, when those coroutines are finalised (hundreds of lines
    for a damaged checkpoint). Inside this context they are collected
    instead; the caller's exception says what failed, in one line. On a
    failure the context waits until the reads in flight have reported
    (`SETTLE_S` without a new report, at most `WAIT_S`), so that nothing
    arrives after it; every hook is put back on leaving, failure or not.
    With `log_path`, the failure's full traceback and what was collected are
    appended to that file (a run's `checkpoint_errors.log`), where the full
    detail stays; `verdicts` (a config.json that does not describe the
    checkpoints) are the caller's own refusals, not failed reads, and leave
    no file.
    """

    SETTLE_S, WAIT_S = 0.3, 5.0

    def __init__(
        self, log_path: Optional[str] = None, verdicts: tuple[type, ...] = (RunConfigError,)
    ) -> None:
        super().__init__()
        self.log_path, self.reports, self.verdicts = log_path, [], verdicts
        self._loggers = [logging.getLogger(name) for name in ("absl", "asyncio", "orbax")]

    def __enter__(self) -> "CheckpointReports":
        self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        for logger in self._loggers:
            logger.addFilter(self)
        return self

    def __exit__(self, exc_type: Any, exc_value: Any = None, exc_traceback: Any = None) -> None:
        try:
            if exc_type is not None and issubclass(exc_type, self.verdicts):  # the caller's own refusal
                self.log_path = None
            elif exc_type is not None:  # the failure's whole story first; the caller's line is its first
                story = traceback.format_exception(exc_type, exc_value, exc_traceback)
                self.reports.insert(0, "".join(story))
                _release_frames(exc_value)
                self._settle()
        finally:
            sys.unraisablehook = self._hook
            for logger in self._loggers:
                logger.removeFilter(self)
            self._warnings.__exit__(None, None, None)
            self.reports += [f"warning: {warning.message}" for warning in self._caught]
            self._write()

    def _settle(self) -> None:
        """Waits for the reads and writes still in flight to finish and report, finalising their coroutines
        and tasks while their reports are still caught (`_release_frames` let go of the failed ones, which
        the exception's frames would otherwise keep until the process's exit)."""
        import gc
        import time

        begin = last_change = time.monotonic()
        count = -1
        while time.monotonic() - last_change < self.SETTLE_S and time.monotonic() - begin < self.WAIT_S:
            gc.collect()
            if len(self.reports) != count:
                count, last_change = len(self.reports), time.monotonic()
            time.sleep(0.05)

    def _unraisable(self, report: Any) -> None:
        lines = traceback.format_exception(report.exc_type, report.exc_value, report.exc_traceback)
        self.reports.append(
            f"{report.err_msg or 'Exception ignored in'}: {report.object!r}\n{''.join(lines)}"
        )

    def filter(self, record: logging.LogRecord) -> bool:
        text = f"{record.levelname}:{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.reports.append(text)
        return False

    def _write(self) -> None:
        if not self.reports or self.log_path is None:
            return
        try:
            with open(self.log_path, "a") as file:
                file.write("".join(report.rstrip("\n") + "\n" for report in self.reports))
        except OSError:  # a full disk, say: the one-line error has already said what failed
            pass


def _release_frames(error: Optional[BaseException]) -> None:
    """Clears the locals of the frames an exception and its causes hold (`traceback.clear_frames`), so
    that what they referenced (Orbax's failed tasks) can be collected now; the messages stay."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def state_on_one_device(manager: ocp.CheckpointManager, step: int) -> Any:
    """A restore target for a checkpoint's state, whole on this process's first device.

    Whatever devices and processes wrote it (a multi-host run, say): Orbax
    refuses to guess a target for another topology.
    """
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    metadata = manager.item_metadata(step)["state"]
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), metadata
    )


def restore_state(workdir: str, argument: str = "--init-from", step: Optional[int] = None) -> tuple[int, Any]:
    """A finished checkpoint's train state (the newest, or `step`), whole on one device, as (step, state); the
    run is not changed.

    Raises `CheckpointReadError` naming the step and its folder when it cannot
    be read, or when the run holds no finished checkpoint (or not that step).
    """
    steps = finished_steps(workdir)
    if not steps:
        raise CheckpointReadError(
            f"{argument} {workdir} holds no finished checkpoint (nothing in {checkpoint_dir(workdir)})"
        )
    if step is not None and step not in steps:
        raise CheckpointReadError(
            f"{argument} {workdir} has no finished checkpoint of step {step}; its finished steps are {steps}"
        )
    step = steps[-1] if step is None else step
    try:
        with CheckpointReports(), manager(workdir, read_only=True) as reader:
            restored = reader.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(state_on_one_device(reader, step))),
            )
    except Exception as error:
        raise CheckpointReadError(
            f"{argument} {workdir}: checkpoint step {step} "
            f"({os.path.join(checkpoint_dir(workdir), str(step))}) could not be read: {short(error)}"
        ) from None
    return step, restored.state


def run_of(path: str) -> Optional[tuple[str, Optional[int]]]:
    """(workdir, step or None for the newest) when `path` is a run's workdir or one of its step folders."""
    path = os.path.normpath(path)
    if os.path.isfile(os.path.join(path, "config.json")):
        return path, None
    parts = path.split(os.sep)
    for cut in (1, 2):  # WORKDIR/checkpoints/N and WORKDIR/checkpoints/N/state
        if (
            len(parts) > cut + 1
            and parts[-cut - 1] == "checkpoints"
            and parts[-cut].isdigit()
            and (cut == 1 or parts[-1] == "state")
        ):
            workdir = os.sep.join(parts[: -cut - 1]) or os.sep
            if os.path.isfile(os.path.join(workdir, "config.json")):
                return workdir, int(parts[-cut])
    return None


def read_json(path: str, what: str) -> Any:
    """A JSON file's content; a one-line ValueError naming the file when it is missing or not JSON."""
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path} is not valid JSON ({error}); restore the file") from None


def read_classes(workdir: str) -> Optional[list[str]]:
    """The run's class names, or None where it recorded none (synthetic data, runs from older versions)."""
    path = os.path.join(workdir, CLASSES)
    if not os.path.isfile(path):
        return None
    names = read_json(path, "the run's class names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path} is not a list of class names; restore it or remove it")
    return names


def config_error(argument: str, path: str, problem: str) -> RunConfigError:
    """The one form of a config.json problem: the file, the field's problem, and the fix; nothing changed."""
    return RunConfigError(
        f"{argument}: {path}: {problem}; nothing is filled in for it: put back the value the run was started "
        "with, or restore the file (nothing was changed)"
    )


def read_config(workdir: str, argument: str = "--resume") -> dict[str, Any]:
    """A run's config.json as a dict, older layouts migrated (`migrate`); one-line errors naming the file
    when it is missing, garbled or not an object."""
    path = os.path.join(workdir, CONFIG)
    saved = read_json(path, f"{argument}: the run's config")
    if not isinstance(saved, dict):
        raise RunConfigError(
            f"{argument}: {path} holds {type(saved).__name__}, not a config object; restore it"
        )
    return migrate(saved)


def migrate(saved: dict[str, Any]) -> dict[str, Any]:
    """The one migration of an older config.json to today's layout, where VGG's settings are one object,
    "model" (a `ModelConfig`). A file without it has them beside the run's own; one that also lacks all
    of `ADDED_FIELDS` was written before they existed, and gets them at the values such a run had. A
    field missing from either layout stays missing, for the readers to refuse."""
    if "model" in saved:
        return saved
    if not any(name in saved for name in ADDED_FIELDS):
        saved = {**ADDED_FIELDS, **saved}
    names = [field.name for field in dataclasses.fields(ModelConfig)]
    return {
        **{key: value for key, value in saved.items() if key not in names},
        "model": {name: saved[name] for name in names if name in saved},
    }


def require_fields(saved: dict[str, Any], names: Any, argument: str, path: str) -> None:
    """Refuses, naming the first, a field of `names` that config.json lacks."""
    missing = [name for name in names if name not in saved]
    if missing:
        more = f" (and {len(missing) - 1} more: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise config_error(argument, path, f"the field {missing[0]} is missing{more}")


def run_settings(
    workdir: str, argument: str = "the run", saved: Optional[dict[str, Any]] = None
) -> dict[str, Any]:
    """What a run's weights are read with, checked: VGG's settings and `READ_FIELDS`, each present and valid.

    `saved`: the file as `read_config` read it, where the caller has it. A
    missing field or a bad value is a `RunConfigError` naming the file and
    the field. So is a run that subtracted a mean (`subtract_mean`, no
    `preprocess`) whose `mean_rgb` is gone: its pixels would be wrong.
    """
    path = os.path.join(workdir, CONFIG)
    saved = read_config(workdir, argument) if saved is None else saved
    require_fields(saved, [*READ_FIELDS, "model"], argument, path)
    model = saved["model"]
    if not isinstance(model, dict):
        raise config_error(argument, path, f"the field model must be an object, got {model!r}")
    names = [field.name for field in dataclasses.fields(ModelConfig)]
    prefixed = {f"model.{key}": value for key, value in model.items()}
    require_fields(prefixed, [f"model.{name}" for name in names], argument, path)
    unknown = sorted(set(model) - set(names))
    if unknown:
        raise config_error(argument, path, f"the field model.{unknown[0]} is not one of VGG's settings")

    def check(ok: bool, field: str, wants: str) -> None:
        if not ok:
            value = model[field.removeprefix("model.")] if field.startswith("model.") else saved[field]
            raise config_error(argument, path, f"the field {field} must be {wants}, got {value!r}")

    try:
        resolve_config(saved["config"])
    except (ValueError, TypeError, AttributeError) as error:
        raise config_error(argument, path, f"the field config: {error}") from None
    size = saved["image_size"]
    check(
        type(size) is int and size >= MIN_IMAGE_SIZE, "image_size", f"an integer of at least {MIN_IMAGE_SIZE}"
    )
    check(
        saved["preprocess"] is None or saved["preprocess"] in NORMALIZE_MODES,
        "preprocess",
        f"null or one of {', '.join(NORMALIZE_MODES)}",
    )
    check(type(saved["subtract_mean"]) is bool, "subtract_mean", "true or false")
    mean = saved["mean_rgb"]
    check(
        mean is None
        or (
            isinstance(mean, list)
            and len(mean) == 3
            and all(type(v) in (int, float) and math.isfinite(v) for v in mean)
        ),
        "mean_rgb",
        "null or three numbers (0-255)",
    )
    if mean is None and saved["subtract_mean"] and saved["preprocess"] is None:
        raise config_error(
            argument,
            path,
            "the field mean_rgb is null, but the run subtracted its training set's mean "
            "(subtract_mean true, no preprocess): the weights' pixels are unknown without it",
        )
    for name in ("width_scale", "fc_width"):  # resolved when the run started: never null in its file
        check(model[name] is not None, f"model.{name}", "a number")
    try:
        model_from(ModelConfig(**model), config=saved["config"], num_classes=1)  # VGG's own checks
    except (ValueError, TypeError) as error:
        raise config_error(argument, path, f"the field model.{str(error).replace('`', '')}") from None
    return saved
