"""A training run's directory, kept whole through kills: config, metrics log and checkpoints.

    WORKDIR/config.json            the run's TrainConfig, written once its inputs are read
    WORKDIR/metrics.jsonl          one JSON object per line, appended and flushed
    WORKDIR/checkpoints/N/         Orbax checkpoints; finished when Orbax's metadata file is in them
    WORKDIR/checkpoints/.deleted/  old steps, renamed here before they are removed
    WORKDIR/damaged_checkpoints/N/ finished steps that failed to restore on resume, moved aside

Orbax writes a checkpoint into a temporary folder and renames it when it is
complete; old steps are renamed out of the listing before they are removed.
So a kill at any instant leaves every digit-named step either finished or
absent, and `finished_steps` is the one definition of a finished step that
the loop and the tests share.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import warnings
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp

from vgg_jax import parallel
from vgg_jax.files import write_text

CHECKPOINTS = "checkpoints"
TRASH = ".deleted"  # under checkpoints/: not digit-named, so never listed as a step
DAMAGED = "damaged_checkpoints"
FINISHED_MARKER = "_CHECKPOINT_METADATA"  # Orbax writes it before the final rename
RUN_FILES = ("config.json", "classes.json", "metrics.jsonl", CHECKPOINTS, DAMAGED)

Warn = Callable[[str], None]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only, ...); the last complete one is kept."""


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


def _step_folders(workdir: str) -> list[int]:
    directory = checkpoint_dir(workdir)
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []


def finished_steps(workdir: str) -> list[int]:
    """The steps whose checkpoint Orbax finished, oldest first: digit-named folders holding its metadata file."""
    return [s for s in _step_folders(workdir) if os.path.isfile(os.path.join(checkpoint_dir(workdir), str(s), FINISHED_MARKER))]


def holds_run(workdir: str) -> bool:
    return any(os.path.exists(os.path.join(workdir, name)) for name in ("config.json", CHECKPOINTS, "metrics.jsonl"))


def remove_run(workdir: str) -> None:
    """Deletes a run's files (for --overwrite, once the new run's inputs are read); process 0 only."""
    if not parallel.is_primary():
        return
    for name in RUN_FILES:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)


def tidy(workdir: str, warn: Warn) -> None:
    """Removes what a kill can leave behind: renamed old steps, and step folders without Orbax's metadata.

    Orbax's own temporary folders (a save cut short) are removed by the
    checkpoint manager itself (`cleanup_tmp_directories`).
    """
    if not parallel.is_primary():
        return
    directory = checkpoint_dir(workdir)
    shutil.rmtree(os.path.join(directory, TRASH), ignore_errors=True)
    finished = set(finished_steps(workdir))
    for step in _step_folders(workdir):
        if step not in finished:
            warn(f"removed {os.path.join(directory, str(step))}: an unfinished checkpoint (no {FINISHED_MARKER}; left by a killed run)")
            shutil.rmtree(os.path.join(directory, str(step)), ignore_errors=True)


def manager(workdir: str, keep: int = 1, read_only: bool = False) -> ocp.CheckpointManager:
    """Orbax's manager for a run's checkpoints: state (arrays), data (iterator states) and policy (JSON).

    `read_only` (for --init-from) creates, cleans and deletes nothing; it is
    not Orbax's own read_only option, which logs a warning per setting.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep,
        enable_async_checkpointing=False,
        todelete_subdir=None if read_only else TRASH,  # rename, then delete (save() empties it): never a half-deleted step
        cleanup_tmp_directories=not read_only,
        create=not read_only,
    )
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(), "policy": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, workdir: str, step: int, state: Any, data: dict, policy: dict) -> None:
    """Writes checkpoint `step` and waits for it; `CheckpointWriteError` (one line, previous kept) on failure."""
    try:
        manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data), policy=ocp.args.JsonSave(policy)),
            force=True,
        )
        manager.wait_until_finished()
    except Exception as error:  # OSError, or Orbax's and tensorstore's wrappers of one
        good = ([s for s in finished_steps(workdir) if s != step] or [None])[-1]
        raise CheckpointWriteError(
            f"could not write the checkpoint of step {step} under {checkpoint_dir(workdir)}: {short(error)}; "
            + (f"the last complete checkpoint, step {good}, is kept. " if good is not None else "no checkpoint was written before. ")
            + "Free space or make the directory writable, then continue with --resume"
        ) from error
    if parallel.is_primary():
        shutil.rmtree(os.path.join(checkpoint_dir(workdir), TRASH), ignore_errors=True)


def restore_newest(manager: ocp.CheckpointManager, workdir: str, args_for: Callable[[int], Any], warn: Warn) -> tuple[Optional[int], Any]:
    """The newest checkpoint that restores, as (step, restored); (None, None) when there is none.

    A finished step that fails to restore (deleted or overwritten files,
    garbled metadata) is moved to `damaged_checkpoints/` with a warning naming
    it, and the next older one is tried: the resumed run will write those
    step numbers again.
    """
    damaged = []
    for step in reversed(finished_steps(workdir)):
        try:
            with _FailedRestoreNoise():
                return step, manager.restore(step, args=args_for(step))
        except Exception as error:  # whatever Orbax, tensorstore or JSON raise for damaged files
            moved = _move_aside(workdir, step)
            damaged.append(step)
            warn(f"checkpoint step {step} in {checkpoint_dir(workdir)} could not be restored ({short(error)}); "
                 f"moved it to {moved} and trying the previous one")
            manager.reload()
    if damaged:
        raise CheckpointReadError(
            f"no checkpoint in {checkpoint_dir(workdir)} could be restored (steps {', '.join(map(str, damaged))} are damaged, "
            f"now in {os.path.join(workdir, DAMAGED)}); start the run again with --overwrite"
        )
    return None, None


class _FailedRestoreNoise(logging.Filter):
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

    def __enter__(self) -> "_FailedRestoreNoise":
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
        return not record.getMessage().startswith(("Task exception was never retrieved", "Future exception was never retrieved"))


def _move_aside(workdir: str, step: int) -> str:
    target = os.path.join(workdir, DAMAGED, str(step))
    if parallel.is_primary():
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.exists(target):  # an earlier resume moved the same step number aside: keep both
            target = f"{target}.{len(os.listdir(os.path.dirname(target)))}"
        os.rename(os.path.join(checkpoint_dir(workdir), str(step)), target)
    parallel.barrier(f"vgg_jax.rundir.move_aside.{step}")
    return target


def state_on_one_device(manager: ocp.CheckpointManager, step: int) -> Any:
    """A restore target for a checkpoint's state, whole on this process's first device.

    Whatever devices and processes wrote it (a multi-host run, say): Orbax
    refuses to guess a target for another topology.
    """
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    metadata = manager.item_metadata(step)["state"]
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), metadata)


def restore_state(workdir: str, flag: str = "--init-from", step: Optional[int] = None) -> tuple[int, Any]:
    """A finished checkpoint's train state (the newest, or `step`), whole on one device, as (step, state); the run is not changed.

    Raises `CheckpointReadError` naming the step and its folder when it cannot
    be read, or when the run holds no finished checkpoint (or not that step).
    """
    steps = finished_steps(workdir)
    if not steps:
        raise CheckpointReadError(f"{flag} {workdir} holds no finished checkpoint (nothing in {checkpoint_dir(workdir)})")
    if step is not None and step not in steps:
        raise CheckpointReadError(f"{flag} {workdir} has no finished checkpoint of step {step}; its finished steps are {steps}")
    step = steps[-1] if step is None else step
    try:
        with _FailedRestoreNoise(), manager(workdir, read_only=True) as reader:
            restored = reader.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(state_on_one_device(reader, step))))
    except Exception as error:
        raise CheckpointReadError(
            f"{flag} {workdir}: checkpoint step {step} ({os.path.join(checkpoint_dir(workdir), str(step))}) could not be read: {short(error)}"
        ) from None
    return step, restored.state


CLASSES = "classes.json"


def write_classes(workdir: str, classes: Optional[list[str]]) -> None:
    """Records the run's class names (an ImageFolder's sub-folders, the digits), so that its weights can name their outputs."""
    if classes is not None and parallel.is_primary():
        write_text(os.path.join(workdir, CLASSES), json.dumps([str(name) for name in classes]))


def read_classes(workdir: str) -> Optional[list[str]]:
    """The run's class names, or None where it recorded none (synthetic data, runs from older versions)."""
    path = os.path.join(workdir, CLASSES)
    if not os.path.isfile(path):
        return None
    names = read_json(path, "the run's class names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path} is not a list of class names; restore it or remove it")
    return names


def read_json(path: str, what: str) -> Any:
    """A JSON file's content; a one-line ValueError naming the file when it is missing or not JSON."""
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path} is not valid JSON ({error}); restore it or start the run again with --overwrite") from None


def read_metrics(path: str, warn: Warn) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl.

    A torn last line (the run was killed while appending it) is dropped with
    a warning naming it; a line that is not JSON anywhere else is a
    ValueError naming its number.
    """
    with open(path, errors="replace") as file:
        lines = file.read().split("\n")
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    records = []
    for index, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "step" not in record:
                raise ValueError("not a record with a step")
        except ValueError:
            if index < len(numbered) - 1:
                raise ValueError(
                    f"{path} line {number} is not a metrics record ({line[:60]!r}); the file is damaged in the middle: "
                    "fix or delete that line, then --resume"
                ) from None
            warn(f"dropped the torn last line of {path} (line {number}, {line[:60]!r}): the run was stopped while writing it")
            continue
        records.append(record)
    return records


class MetricsLog:
    """metrics.jsonl: one object per line, flushed as written; written by process 0 alone."""

    def __init__(self, path: str, keep_up_to_step: Optional[int], warn: Warn):
        self.path, self.file = path, None
        if not parallel.is_primary():
            return
        if keep_up_to_step is not None and os.path.exists(path):
            # A resumed run repeats the steps after its checkpoint: drop their old lines (and a torn last one).
            kept = [record for record in read_metrics(path, warn) if record["step"] <= keep_up_to_step]
            write_text(path, "".join(json.dumps(record) + "\n" for record in kept))
        self.file = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
