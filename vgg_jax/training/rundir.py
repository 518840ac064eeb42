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
import os
import shutil
from typing import Any, Callable, Optional

import orbax.checkpoint as ocp

from vgg_jax.training import parallel
from vgg_jax.util.files import write_text
from vgg_jax.weights.runs import (
    CHECKPOINTS,
    CLASSES,
    FINISHED_MARKER,
    TRASH,
    CheckpointReadError,
    FailedRestoreNoise,
    checkpoint_dir,
    finished_steps,
    short,
    step_folders,
)

DAMAGED = "damaged_checkpoints"
RUN_FILES = ("config.json", "classes.json", "metrics.jsonl", CHECKPOINTS, DAMAGED)

Warn = Callable[[str], None]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only, ...); the last complete one is kept."""


def holds_run(workdir: str) -> bool:
    return any(
        os.path.exists(os.path.join(workdir, name)) for name in ("config.json", CHECKPOINTS, "metrics.jsonl")
    )


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
    for step in step_folders(workdir):
        if step not in finished:
            warn(
                f"removed {os.path.join(directory, str(step))}: an unfinished checkpoint (no "
                f"{FINISHED_MARKER}; left by a killed run)"
            )
            shutil.rmtree(os.path.join(directory, str(step)), ignore_errors=True)


def save(
    checkpoints: ocp.CheckpointManager, workdir: str, step: int, state: Any, data: dict, policy: dict
) -> None:
    """Writes checkpoint `step` and waits for it; `CheckpointWriteError` (one line, previous kept) on
    failure."""
    try:
        checkpoints.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data),
                policy=ocp.args.JsonSave(policy),
            ),
            force=True,
        )
        checkpoints.wait_until_finished()
    except Exception as error:  # OSError, or Orbax's and tensorstore's wrappers of one
        good = ([s for s in finished_steps(workdir) if s != step] or [None])[-1]
        raise CheckpointWriteError(
            f"could not write the checkpoint of step {step} under {checkpoint_dir(workdir)}: {short(error)}; "
            + (
                f"the last complete checkpoint, step {good}, is kept. "
                if good is not None
                else "no checkpoint was written before. "
            )
            + "Free space or make the directory writable, then continue with `resume`"
        ) from error
    if parallel.is_primary():
        shutil.rmtree(os.path.join(checkpoint_dir(workdir), TRASH), ignore_errors=True)


def restore_newest(
    checkpoints: ocp.CheckpointManager, workdir: str, args_for: Callable[[int], Any], warn: Warn
) -> tuple[Optional[int], Any]:
    """The newest checkpoint that restores, as (step, restored); (None, None) when there is none.

    A finished step that fails to restore (deleted or overwritten files,
    garbled metadata) is moved to `damaged_checkpoints/` with a warning naming
    it, and the next older one is tried: the resumed run will write those
    step numbers again.
    """
    damaged = []
    for step in reversed(finished_steps(workdir)):
        try:
            with FailedRestoreNoise():
                return step, checkpoints.restore(step, args=args_for(step))
        except Exception as error:  # whatever Orbax, tensorstore or JSON raise for damaged files
            moved = _move_aside(workdir, step)
            damaged.append(step)
            warn(
                f"checkpoint step {step} in {checkpoint_dir(workdir)} could not be restored "
                f"({short(error)}); "
                f"moved it to {moved} and trying the previous one"
            )
            checkpoints.reload()
    if damaged:
        raise CheckpointReadError(
            f"no checkpoint in {checkpoint_dir(workdir)} could be restored (steps "
            f"{', '.join(map(str, damaged))} are damaged, "
            f"now in {os.path.join(workdir, DAMAGED)}); start the run again with `overwrite`"
        )
    return None, None


def _move_aside(workdir: str, step: int) -> str:
    target = os.path.join(workdir, DAMAGED, str(step))
    if parallel.is_primary():
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.exists(target):  # an earlier resume moved the same step number aside: keep both
            target = f"{target}.{len(os.listdir(os.path.dirname(target)))}"
        os.rename(os.path.join(checkpoint_dir(workdir), str(step)), target)
    parallel.barrier(f"vgg_jax.training.rundir.move_aside.{step}")
    return target


def write_classes(workdir: str, classes: Optional[list[str]]) -> None:
    """Records the run's class names (an ImageFolder's sub-folders, the digits), so that its weights can
    name their outputs."""
    if classes is not None and parallel.is_primary():
        write_text(os.path.join(workdir, CLASSES), json.dumps([str(name) for name in classes]))


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
                    f"{path} line {number} is not a metrics record ({line[:60]!r}); the file is damaged in "
                    "the middle: "
                    "fix or delete that line, then `resume`"
                ) from None
            warn(
                f"dropped the torn last line of {path} (line {number}, {line[:60]!r}): the run was stopped "
                "while writing it"
            )
            continue
        records.append(record)
    return records


class MetricsLog:
    """metrics.jsonl: one object per line, flushed as written; written by process 0 alone."""

    def __init__(
        self,
        path: str,
        keep_up_to_step: Optional[int],
        warn: Warn,
        also: Optional[Callable[[dict[str, Any]], None]] = None,
    ):
        self.path, self.file, self.also = path, None, also
        if not parallel.is_primary():
            return
        if keep_up_to_step is not None and os.path.exists(path):
            # A resumed run repeats the steps after its checkpoint: drop their old lines (and a torn last
            # one).
            kept = [record for record in read_metrics(path, warn) if record["step"] <= keep_up_to_step]
            write_text(path, "".join(json.dumps(record) + "\n" for record in kept))
        self.file = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            if self.also is not None:  # TensorBoard's events, say
                self.also(record)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
