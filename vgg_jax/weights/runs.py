"""A training run's directory as a weights source: its checkpoints, saved config and class names, read only.

    WORKDIR/config.json            the run's TrainConfig as JSON
    WORKDIR/classes.json           its class names
    WORKDIR/checkpoints/N/         Orbax checkpoints; finished when Orbax's metadata file is in them

The read side of the layout that `vgg_jax.training.rundir` writes, kept here
so that naming a model (`vgg_jax.weights.resolve`) and prediction read a
run's weights without importing training.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

CHECKPOINTS = "checkpoints"
TRASH = ".deleted"  # under checkpoints/: not digit-named, so never listed as a step
FINISHED_MARKER = "_CHECKPOINT_METADATA"  # Orbax writes it before the final rename
CONFIG = "config.json"
CLASSES = "classes.json"
# The TrainConfig fields a run's weights are read with, at TrainConfig's defaults (a test holds them equal),
# for config.json files written before a field existed.
MODEL_FIELDS = {
    "config": "A",
    "data": "digits",
    "image_size": 32,
    "dropout_rate": 0.5,
    "init_scheme": "kaiming",
    "preprocess": None,
    "mean_rgb": None,
}


class CheckpointReadError(ValueError):
    """No checkpoint of a run could be restored; the message names the path and the step."""


def short(error: BaseException) -> str:
    """The first line of an error (or of its first cause with a message), for one-line messages."""
    while error.__cause__ is not None and not str(error).strip():
        error = error.__cause__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


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


class FailedRestoreNoise(logging.Filter):
    """Silences what a restore that fails on damaged files makes Orbax's asyncio internals print.

    The reads still in flight end after the failure: their callbacks find the
    event loop closed (`RuntimeError: Event loop is closed`, reported as
    unraisable), their tasks' exceptions are never retrieved (logged by
    asyncio), and coroutines are never awaited (a RuntimeWarning): a traceback
    each, after the caller's one-line message. Installed around a restore;
    left in place after a failure, since the reports come later; removed after
    a success. Every other report still reaches its usual hook.
    """

    def __init__(self) -> None:
        super().__init__()
        self.previous_hook = sys.unraisablehook
        self.warnings = warnings.catch_warnings()

    def __enter__(self) -> "FailedRestoreNoise":
        sys.unraisablehook = self._unraisable
        logging.getLogger("asyncio").addFilter(self)
        self.warnings.__enter__()
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            sys.unraisablehook = self.previous_hook
            logging.getLogger("asyncio").removeFilter(self)
            self.warnings.__exit__(None, None, None)

    def _unraisable(self, report: Any) -> None:
        if not (report.exc_type is RuntimeError and str(report.exc_value) == "Event loop is closed"):
            self.previous_hook(report)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            ("Task exception was never retrieved", "Future exception was never retrieved")
        )


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


def restore_state(workdir: str, argument: str = "init_from", step: Optional[int] = None) -> tuple[int, Any]:
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
        with FailedRestoreNoise(), manager(workdir, read_only=True) as reader:
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
        raise ValueError(
            f"{what} {path} is not valid JSON ({error}); restore it or start the run again with `overwrite`"
        ) from None


def read_classes(workdir: str) -> Optional[list[str]]:
    """The run's class names, or None where it recorded none (synthetic data, runs from older versions)."""
    path = os.path.join(workdir, CLASSES)
    if not os.path.isfile(path):
        return None
    names = read_json(path, "the run's class names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path} is not a list of class names; restore it or remove it")
    return names


def read_config(workdir: str, argument: str = "resume") -> dict[str, Any]:
    """A run's config.json as a dict (one-line errors naming the file when it is missing, garbled or not an
    object)."""
    path = os.path.join(workdir, CONFIG)
    saved = read_json(path, f"{argument}: the run's config")
    if not isinstance(saved, dict):
        raise ValueError(
            f"{argument}: {path} holds {type(saved).__name__}, not a config object; restore it or start "
            "again with `overwrite`"
        )
    return saved


def model_fields(workdir: str, argument: str = "the run") -> dict[str, Any]:
    """The run's saved config, with `MODEL_FIELDS` filled in where an older version did not write them."""
    return {**MODEL_FIELDS, **read_config(workdir, argument)}
