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

import jax
import orbax.checkpoint as ocp

from vgg_jax.training import parallel
from vgg_jax.util.files import write_text
from vgg_jax.weights.runs import (
    CHECKPOINTS,
    CLASSES,
    ERRORS_LOG,
    FINISHED_MARKER,
    TRASH,
    CheckpointReadError,
    CheckpointReports,
    RunConfigError,
    checkpoint_dir,
    finished_steps,
    short,
    step_folders,
)

DAMAGED = "damaged_checkpoints"
LOCK = ".lock"  # flock()ed by the run writing the folder; holds its PID and host; never removed
RUN_FILES = ("config.json", "classes.json", "metrics.jsonl", CHECKPOINTS, DAMAGED)

Warn = Callable[[str], None]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only, ...); the last complete one is kept."""


class WorkdirInUseError(ValueError):
    """Another process is writing the run folder; the message names the folder and the holder's PID."""


class WorkdirLock:
    """One writer per run folder: an exclusive `fcntl.flock` on `WORKDIR/.lock`, held until `release`.

    The operating system releases it when the holder ends, however it ends
    (kill -9 included), so a lock is never stale. The file holds the
    holder's PID and host, for the refusal's message; it stays in the folder,
    since removing a lock file races with a process about to lock it.
    Readers (predict, evaluate, convert) take no lock.
    """

    def __init__(self, workdir: str):
        self.workdir, self.fd = workdir, None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        """Takes the lock, or raises `WorkdirInUseError` at once (no waiting) naming the holder."""
        import fcntl
        import socket

        if self.held:
            return
        try:
            fd = os.open(os.path.join(self.workdir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a read-only file system, say: the folder cannot be written at all
            raise OSError(f"--workdir {self.workdir} is not writable: {error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            who = f"PID {holder[0]} on {holder[1]}" if len(holder) == 2 else "a process that is starting"
            raise WorkdirInUseError(
                f"--workdir {self.workdir} is being written by another run ({who}); one run writes a folder "
                "at a time: wait for it to end (or stop it), or use another --workdir"
            ) from None
        line = f"{os.getpid()} {socket.gethostname()}\n".encode()
        os.pwrite(fd, line, 0)  # over the last holder's line, never leaving the file empty
        os.ftruncate(fd, len(line))
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def _holder(fd: int, wait: float = 2.0) -> list[str]:
    """The lock holder's PID and host; a holder that has just locked writes them a moment later."""
    import time

    deadline = time.monotonic() + wait
    while True:
        holder = os.pread(fd, 200, 0).decode(errors="replace").split()
        if len(holder) == 2 or time.monotonic() > deadline:
            return holder
        time.sleep(0.02)


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
        with CheckpointReports(os.path.join(workdir, ERRORS_LOG)):
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
            + "Free space or make the directory writable, then continue with --resume"
        ) from error
    if parallel.is_primary():
        shutil.rmtree(os.path.join(checkpoint_dir(workdir), TRASH), ignore_errors=True)


def restore_newest(
    checkpoints: ocp.CheckpointManager, workdir: str, args_for: Callable[[int], Any], warn: Warn
) -> tuple[Optional[int], Any]:
    """The newest checkpoint that restores, as (step, restored); (None, None) when there is none.

    A finished step whose own files fail to read (deleted or overwritten
    files, garbled metadata) is damaged: once an older step restores, each
    damaged newer one is moved to `damaged_checkpoints/` with a one-line
    warning (the resumed run writes those step numbers again). When none
    restores, nothing is moved and `CheckpointReadError` lists them. A
    `RunConfigError` from `args_for` (config.json does not describe the
    checkpoints) is the config's problem: raised at once, nothing moved.
    What Orbax reports about a failed read goes to `checkpoint_errors.log`.
    """
    damaged: list[tuple[int, str]] = []
    for step in reversed(finished_steps(workdir)):
        try:
            with CheckpointReports(os.path.join(workdir, ERRORS_LOG)):
                restored = checkpoints.restore(step, args=args_for(step))
        except RunConfigError:
            raise
        except Exception as error:  # whatever Orbax, tensorstore or JSON raise for damaged files
            damaged.append((step, short(error)))
            checkpoints.reload()
            continue
        for bad, reason in damaged:
            moved = _move_aside(workdir, bad)
            warn(
                f"checkpoint step {bad} ({os.path.join(checkpoint_dir(workdir), str(bad))}) could not be "
                f"read ({reason}); moved it to {moved}, resuming from step {step}" + _details(workdir)
            )
        if damaged:
            checkpoints.reload()  # the manager forgets the steps moved aside, so the run writes them again
        return step, restored
    if damaged:
        raise CheckpointReadError(
            f"no checkpoint in {checkpoint_dir(workdir)} could be read: "
            + "; ".join(f"step {step}: {reason}" for step, reason in damaged)
            + f". Nothing was moved or changed{_details(workdir)}. To train again, start a new run in "
            "another --workdir (or --overwrite this one, which deletes these checkpoints)"
        )
    return None, None


def check_shapes(saved: Any, expected: Any, workdir: str, step: int) -> None:
    """`RunConfigError` when checkpoint `step`'s parameters (`saved`, its metadata) are not those of the model
    config.json builds (`expected`): the file was changed, the checkpoint is not damaged."""

    def shapes(tree: Any) -> dict[str, tuple]:
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape) for path, leaf in leaves}

    theirs, ours = shapes(saved), shapes(expected)
    if theirs == ours:
        return
    name = next(n for n in sorted(set(theirs) | set(ours)) if theirs.get(n) != ours.get(n))
    held = f"{theirs[name]}" if name in theirs else "no such parameter"
    built = f"{ours[name]}" if name in ours else "no such parameter"
    raise RunConfigError(
        f"--resume: {os.path.join(workdir, 'config.json')} does not describe the run's checkpoints: "
        f"parameter {name} is {held} in checkpoint step {step} but {built} in the model the file builds; "
        "the file was changed after the run started. The checkpoints are intact and nothing was moved or "
        "changed: restore the file's settings as the run was started"
    )


def _details(workdir: str) -> str:
    path = os.path.join(workdir, ERRORS_LOG)
    return f" (details: {path})" if os.path.isfile(path) else ""


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
                    "fix or delete that line, then --resume"
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
            try:
                self.file.write(json.dumps(record) + "\n")
                self.file.flush()
            except OSError as error:
                raise OSError(
                    f"could not append to {self.path}: {error.strerror or error}; free space, then continue "
                    "with --resume (the last checkpoint is kept)"
                ) from None
            if self.also is not None:  # TensorBoard's events, say
                self.also(record)

    def close(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError:  # a full disk: write() has said so, or the run's own error will
                pass
