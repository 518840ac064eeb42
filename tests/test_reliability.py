"""Faults, really injected: killed and signalled runs, damaged workdirs, unwritable checkpoints, non-finite
steps,
bad image files, determinism.

docs/reliability.md has the table of what each fault does and which test here proves it.
"""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import TINY_RUN, TINY_TRAIN_FLAGS
from PIL import Image

from vgg_jax.cli import train as train_command
from vgg_jax.training import data, loop, rundir, sources
from vgg_jax.util import images as images_lib
from vgg_jax.weights.runs import finished_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
QUIET = dict(log=lambda line: None)


def params_of(workdir, step=None):
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
    step = manager.latest_step() if step is None else step
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored.state["params"]


def same(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


# ----------------------------------------------------------------------------- kill -9 and resume

KILL_ARGS = [
    "--config",
    "A",
    "--data",
    "digits",
    "--image-size",
    "32",
    "--width-scale",
    "0.0625",
    "--fc-width",
    "32",
    "--batch-size",
    "16",
    "--max-steps",
    "24",
    "--checkpoint-every",
    "1",
    "--eval-every",
    "8",
    "--log-every",
    "4",
    "--keep",
    "2",
    "--seed",
    "7",
]


def step_folders(workdir) -> list[int]:
    """Every digit-named folder under checkpoints/, finished or not."""
    directory = os.path.join(workdir, "checkpoints")
    return (
        sorted(int(name) for name in os.listdir(directory) if name.isdigit())
        if os.path.isdir(directory)
        else []
    )


def saving(workdir) -> bool:
    """True while Orbax writes a checkpoint (its temporary directory exists)."""
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(
        not name.isdigit() and "tmp" in name for name in os.listdir(directory)
    )


def resume_for_two_steps(args: list, workdir, step: int) -> subprocess.CompletedProcess:
    """`train.py ARGS --resume` of a run stopped after `step`, to step + 2."""
    return subprocess.run(
        [sys.executable, TRAIN, *args, "--max-steps", str(step + 2), "--workdir", str(workdir), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_kill_9_at_random_points_then_resume_gives_bit_identical_params(tmp_path):
    """Three SIGKILLs (one while a checkpoint is being written), resumes, and the same final params as one
    clean run."""
    seed = int(os.environ.get("VGG_JAX_KILL_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    reference = tmp_path / "reference"
    done = subprocess.run(  # one checkpoint, at the end: saving is no part of what is trained
        [sys.executable, TRAIN, *KILL_ARGS, "--checkpoint-every", "24", "--workdir", str(reference)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    workdir = tmp_path / "killed"
    kills = []
    for attempt, when in enumerate(("random", "during-save", "random")):
        command = [sys.executable, TRAIN, *KILL_ARGS, "--workdir", str(workdir)] + (
            ["--resume"] if attempt else []
        )
        before = finished_steps(workdir)[-1:] or [0]
        target = before[0] + rng.randint(1, 6)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline:
            steps = finished_steps(workdir)
            if when == "random" and steps and steps[-1] >= target:
                time.sleep(rng.uniform(0, 0.3))
                break
            if when == "during-save" and steps and steps[-1] >= target and saving(workdir):
                break
            time.sleep(0.002)
        assert proc.poll() is None, (
            f"the run ended before kill {attempt + 1} (seed {seed}): {proc.stderr.read()[-2000:]}"
        )
        mid_save = saving(workdir)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append({"when": when, "after_step": finished_steps(workdir)[-1], "mid_save": mid_save})
        # A kill leaves no step half-written or half-deleted: every digit-named folder is finished, and
        # restores.
        assert step_folders(workdir) == finished_steps(workdir), (
            f"unfinished step folders after kill {attempt + 1} (seed {seed})"
        )
        for step in finished_steps(workdir):
            assert np.isfinite(jax.tree.leaves(params_of(workdir, step))[0]).all()
    assert any(kill["mid_save"] for kill in kills), f"no kill landed during a save (seed {seed}): {kills}"

    resumed = subprocess.run(
        [sys.executable, TRAIN, *KILL_ARGS, "--workdir", str(workdir), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert finished_steps(workdir)[-1] == 24
    assert same(params_of(reference), params_of(workdir)), f"params differ after kills {kills} (seed {seed})"
    steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl") if "eval" not in line]
    assert steps == sorted(set(steps)) and steps[-1] == 24  # no step logged twice across the resumes


# ----------------------------------------------------------------------------- SIGINT and SIGTERM on a real
# process

SIGNAL_ARGS = [
    *TINY_TRAIN_FLAGS,
    "--epochs",
    "50",
    "--checkpoint-every",
    "100000",
    "--eval-every",
    "100000",
    "--log-every",
    "1",
    "--seed",
    "3",
]


def wait_for_line(proc, prefix: str, timeout: float = 300) -> list[str]:
    """Reads the process's stdout (a pipe: no terminal) until a line starts with `prefix`; the lines read."""
    import selectors

    lines, selector, deadline = [], selectors.DefaultSelector(), time.time() + timeout
    selector.register(proc.stdout, selectors.EVENT_READ)
    while time.time() < deadline:
        if selector.select(timeout=1):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith(prefix):
                return lines
    proc.kill()
    raise AssertionError(
        f"no line starting {prefix!r} within {timeout} s; stdout: {lines[-5:]}, stderr: "
        f"{proc.stderr.read()[-2000:]}"
    )


def test_a_signal_finishes_the_step_writes_a_checkpoint_says_how_to_resume_and_exits_non_zero(tmp_path):
    """A scheduler's SIGTERM mid-run: a checkpoint of the last finished step, one line, status 128 + signal.

    The run's output goes to a pipe, so it logs plain lines (no progress bar); the test waits for them.
    Ctrl-C (SIGINT) takes the same path: the test with worker processes below sends it.
    """
    signum = signal.SIGTERM
    workdir = tmp_path / "run"
    script = os.path.relpath(TRAIN, tmp_path)  # run from another directory, by a relative path
    proc = subprocess.Popen(
        [sys.executable, script, *SIGNAL_ARGS, "--workdir", "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = wait_for_line(proc, "step 3/")
    # a plain line per --log-every step, without a terminal
    assert lines[-1].startswith("step 3/12800: loss ")
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    name = signal.Signals(signum).name
    stopped = [line for line in stderr.splitlines() if line.startswith("train.py: stopped")]
    assert (
        len(stopped) == 1
        and f"stopped by {name} after step" in stopped[0]
        and stopped[0].endswith(f"Continue with: python {script} --workdir run --resume")  # as invoked
    )
    step = int(stopped[0].split("after step ")[1].split(";")[0])
    assert step >= 3 and finished_steps(workdir) == [
        step
    ]  # the step in progress finished, and was checkpointed
    resumed = resume_for_two_steps(SIGNAL_ARGS, workdir, step)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resumed {workdir} at step {step}" in resumed.stdout and finished_steps(workdir)[-1] == step + 2


def test_the_first_signal_asks_for_a_stop_and_a_second_acts_as_before():
    """StopRequest: the first SIGINT sets the flag and puts the previous handler back, so the second
    reaches it."""
    from vgg_jax.training import interrupt

    reached = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: reached.append(signum))
    try:
        with interrupt.StopRequest() as stop:
            assert not stop.requested
            signal.raise_signal(signal.SIGINT)
            assert stop.requested and stop.name == "SIGINT" and reached == []
            signal.raise_signal(signal.SIGINT)
            assert reached == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- damaged workdirs


def test_ctrl_c_with_worker_processes_prints_no_traceback_and_the_run_resumes(tmp_path):
    """--workers 2 on an image folder: Ctrl-C stops cleanly (the workers ignore it: no traceback from them),
    says where it stopped and how to resume, and the run resumes in this process (--workers 0) where it
    stopped."""
    from vgg_jax.benchmark.data_bench import write_jpeg_folder

    folder = write_jpeg_folder(str(tmp_path / "images"), 64, size=(48, 40), classes=4)
    args = [arg if arg != "synthetic" else f"folder:{folder}" for arg in SIGNAL_ARGS]
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, TRAIN, *args, "--workers", "2", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = wait_for_line(proc, "step 3/")
    assert any(line.startswith("input: 2 worker processes") for line in lines), lines
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    stopped = [line for line in stderr.splitlines() if line.startswith("train.py: stopped")]
    assert (
        len(stopped) == 1
        and "stopped by SIGINT after step" in stopped[0]
        and f"--workdir {workdir} --resume" in stopped[0]
    ), stderr[-3000:]
    (step,) = finished_steps(workdir)
    assert f"after step {step};" in stopped[0]  # the step in progress finished, and was checkpointed
    resumed = resume_for_two_steps([*args, "--workers", "0"], workdir, step)
    assert resumed.returncode == 0 and finished_steps(workdir)[-1] == step + 2, resumed.stderr[-2000:]


def tiny_run(workdir, **overrides):
    settings = dict(workdir=str(workdir), max_steps=6, checkpoint_every=2, eval_every=6, keep=3, **TINY_RUN)
    return loop.TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run with checkpoints at steps 2, 4 and 6 (copied per test with `copy_of`)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    loop.run(tiny_run(workdir), **QUIET)
    assert finished_steps(workdir) == [2, 4, 6]
    return workdir


def copy_of(run, tmp_path):
    import shutil

    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def metric_steps(workdir):
    return [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl") if "eval" not in line]


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_on_resume(finished_run, tmp_path):
    """A kill while metrics.jsonl is appended leaves half a line; --resume drops it, names it, and goes on."""
    workdir = copy_of(finished_run, tmp_path)
    with open(workdir / "metrics.jsonl", "a") as file:
        file.write('{"step": 7, "epoch": 0.02, "grad_no')
    lines = len(open(workdir / "metrics.jsonl").read().split("\n"))
    with pytest.warns(
        loop.RunWarning, match=rf"dropped the torn last line of .*metrics.jsonl \(line {lines}, "
    ):
        loop.run(tiny_run(workdir, max_steps=8), resume=True, **QUIET)
    assert metric_steps(workdir) == list(range(1, 9))


def test_a_torn_metrics_line_in_the_middle_is_an_error_naming_the_line(finished_run, tmp_path):
    workdir = copy_of(finished_run, tmp_path)
    lines = open(workdir / "metrics.jsonl").read().splitlines()
    lines[2] = lines[2][:25]
    (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError, match=r"metrics.jsonl line 3 is not a metrics record .*damaged in the middle"
    ):
        loop.run(tiny_run(workdir, max_steps=8), resume=True, **QUIET)


def test_a_half_deleted_step_never_looks_finished_and_resume_removes_it(finished_run, tmp_path):
    """What a kill during Orbax's deletion of an old step used to leave: a digit-named folder, part of
    `state/`, no metadata."""
    import shutil

    workdir = copy_of(finished_run, tmp_path)
    half = workdir / "checkpoints" / "8"
    shutil.copytree(workdir / "checkpoints" / "6", half)
    for name in ("_CHECKPOINT_METADATA", "commit_success.txt"):
        (half / name).unlink()
    shutil.rmtree(half / "state" / "d")
    assert finished_steps(workdir) == [2, 4, 6] and step_folders(workdir) == [2, 4, 6, 8]
    with pytest.warns(loop.RunWarning, match=r"removed .*checkpoints/8: an unfinished checkpoint"):
        summary = loop.run(tiny_run(workdir, max_steps=8), resume=True, **QUIET)
    assert summary["steps"] == 8 and finished_steps(workdir) == step_folders(workdir) == [4, 6, 8]


def test_old_steps_are_renamed_out_of_the_listing_before_they_are_deleted(tmp_path, monkeypatch):
    """With the deletion itself cut off (as a kill would), the old steps sit in checkpoints/.deleted, not
    listed."""
    import shutil

    removed = []
    monkeypatch.setattr(
        shutil, "rmtree", lambda path, *args, **kwargs: removed.append(os.path.relpath(path, tmp_path))
    )
    loop.run(tiny_run(tmp_path, keep=1), **QUIET)
    assert step_folders(tmp_path) == finished_steps(tmp_path) == [6]
    assert sorted(os.listdir(tmp_path / "checkpoints" / ".deleted")) == ["2", "4"]
    assert set(removed) == {os.path.join("checkpoints", ".deleted")}
    monkeypatch.undo()
    loop.run(tiny_run(tmp_path, keep=1, max_steps=8), resume=True, **QUIET)
    assert not (tmp_path / "checkpoints" / ".deleted").exists() and finished_steps(tmp_path) == [8]


def damage(step_dir, how):
    """Deleted state, overwritten array files, or garbled array metadata: what a user's disk or hands can
    do."""
    import shutil

    if how == "deleted-state":
        shutil.rmtree(step_dir / "state")
    elif how == "overwritten-arrays":
        for path in (step_dir / "state").rglob("*"):
            if path.is_file() and path.parent.name == "d":
                path.write_bytes(os.urandom(100))
    else:
        (step_dir / "state" / "_METADATA").write_text("garbage")


def test_resume_takes_the_newest_step_that_restores_and_names_each_damaged_one(finished_run, tmp_path, capfd):
    workdir = copy_of(finished_run, tmp_path)
    damage(workdir / "checkpoints" / "6", "deleted-state")
    damage(workdir / "checkpoints" / "4", "overwritten-arrays")
    lines = []
    with pytest.warns(loop.RunWarning) as caught:
        loop.run(tiny_run(workdir, max_steps=8), resume=True, log=lines.append)
    messages = [str(w.message) for w in caught if issubclass(w.category, loop.RunWarning)]
    assert [m.split(" (")[0] for m in messages] == ["checkpoint step 6", "checkpoint step 4"]
    assert all(
        "could not be read" in m
        and "damaged_checkpoints" in m
        and "resuming from step 2" in m
        and "\n" not in m
        for m in messages
    )
    assert f"Resumed {workdir} at step 2" in lines
    assert sorted(os.listdir(workdir / "damaged_checkpoints")) == ["4", "6"] and finished_steps(workdir) == [
        4,
        6,
        8,
    ]
    assert "Traceback" not in capfd.readouterr().err  # tensorstore's late callbacks print none


def test_damaged_checkpoints_give_one_line_on_the_command_line(finished_run, tmp_path):
    """train.py --resume with every step damaged (each a different way), and --init-from a damaged run: one
    line
    naming the path and the step, no traceback."""
    workdir = copy_of(finished_run, tmp_path)
    for step, how in ((2, "deleted-state"), (4, "garbled-metadata"), (6, "overwritten-arrays")):
        damage(workdir / "checkpoints" / str(step), how)
    base = [
        sys.executable,
        TRAIN,
        *TINY_TRAIN_FLAGS,
        "--max-steps",
        "8",  # past the run's newest step, 6: a resume must go on from it
    ]
    init = subprocess.run(
        [*base, "--config", "D", "--workdir", str(tmp_path / "d"), "--init-from", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert init.returncode == 2 and init.stderr.count("\n") == 1, init.stderr[-3000:]
    assert (
        f"checkpoint step 6 ({workdir}/checkpoints/6) could not be read" in init.stderr
        and not (tmp_path / "d").exists()
    )
    resumed = subprocess.run(
        [*base, "--workdir", str(workdir), "--resume"], capture_output=True, text=True, timeout=300
    )
    errors = [line for line in resumed.stderr.splitlines() if line.startswith("train.py: error")]
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert len(errors) == 1 and "no checkpoint in" in errors[0] and "Nothing was moved" in errors[0]
    assert [errors[0].index(f"step {step}: ") > 0 for step in (6, 4, 2)] == [True] * 3
    assert "train.py: warning" not in resumed.stderr and finished_steps(workdir) == [2, 4, 6]


def test_a_config_json_with_an_unknown_key_or_garbled_is_one_line_naming_key_and_file(
    finished_run, tmp_path, capsys
):
    workdir = copy_of(finished_run, tmp_path)
    saved = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**saved, "future_knob": 1}))
    for resume, init_from, flag in ((True, None, "--resume"), (False, str(workdir), "--init-from")):
        target = workdir if resume else tmp_path / "d"
        assert train_command.train(tiny_run(target, init_from=init_from, config="D"), resume=resume) == 2
        err = capsys.readouterr().err
        assert (
            err.count("\n") == 1
            and f"{flag}: {workdir}/config.json has a key this version of vgg_jax does not know: "
            "'future_knob'"
            in err
        )
    (workdir / "config.json").write_text('{"config": "A", ')
    with pytest.raises(ValueError, match=rf"config {workdir}/config.json is not valid JSON"):
        loop.run(tiny_run(workdir), resume=True, **QUIET)


def test_resume_without_a_checkpoint_says_it_starts_at_step_0(tmp_path):
    # a run that stopped before its first checkpoint
    loop.run(tiny_run(tmp_path, max_steps=1, checkpoint_every=5), **QUIET)
    import shutil

    shutil.rmtree(tmp_path / "checkpoints")
    lines = []
    loop.run(tiny_run(tmp_path, max_steps=2), resume=True, log=lines.append)
    assert f"Resuming {tmp_path}: it holds no finished checkpoint yet, so training starts at step 0" in lines


# ----------------------------------------------------------------------------- failed starts and --overwrite


def test_overwrite_with_bad_new_inputs_keeps_the_old_run(finished_run, tmp_path):
    """--overwrite --data folder:/typo used to delete the old run, then fail; the old run is now deleted
    only once the new inputs are read."""
    workdir = copy_of(finished_run, tmp_path)
    before = {path: path.read_bytes() for path in workdir.rglob("*") if path.is_file()}
    (tmp_path / "no_checkpoint").mkdir()
    (tmp_path / "no_checkpoint" / "config.json").write_bytes((workdir / "config.json").read_bytes())
    for bad in (dict(data=f"folder:{tmp_path}/typo"), dict(init_from=str(tmp_path / "no_checkpoint"))):
        with pytest.raises(ValueError):
            loop.run(tiny_run(workdir, **bad), overwrite=True, **QUIET)
        assert {path: path.read_bytes() for path in workdir.rglob("*") if path.is_file()} == before
    loop.run(tiny_run(workdir, max_steps=2), overwrite=True, **QUIET)
    assert finished_steps(workdir) == [2] and metric_steps(workdir) == [1, 2]


def test_a_failed_start_leaves_no_workdir_behind(tmp_path, monkeypatch):
    """A missing data folder, or a missing optional dependency (scikit-learn for the digits): nothing is
    left."""
    with pytest.raises(ValueError, match="typo"):
        loop.run(tiny_run(tmp_path / "new" / "run", data=f"folder:{tmp_path}/typo"), **QUIET)
    # import fails as if scikit-learn were not installed
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ValueError, match=r"needs scikit-learn"):
        loop.run(tiny_run(tmp_path / "other", data="digits"), **QUIET)
    (tmp_path / "mine").mkdir()  # a folder the user made stays
    with pytest.raises(ValueError):
        loop.run(tiny_run(tmp_path / "mine", data="digits"), **QUIET)
    assert sorted(os.listdir(tmp_path)) == ["mine"] and os.listdir(tmp_path / "mine") == []


# ----------------------------------------------------------------------------- unwritable workdir and
# checkpoints


def test_a_checkpoint_that_cannot_be_written_names_the_path_and_keeps_the_previous_one(tmp_path, monkeypatch):
    """The disk fills (ENOSPC) as Orbax commits checkpoint 4: a clear error, checkpoint 2 intact, --resume
    goes on."""
    cfg = loop.TrainConfig(workdir=str(tmp_path), max_steps=6, checkpoint_every=2, eval_every=2, **TINY_RUN)
    rename = os.rename

    def full_disk(source, target, *args, **kwargs):
        if "checkpoints" in str(target) and os.path.basename(str(target)) == "4":
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "rename", full_disk)
    with pytest.raises(
        rundir.CheckpointWriteError,
        match=r"checkpoint of step 4 under .*checkpoints.*step 2, is kept.*--resume",
    ) as error:
        loop.run(cfg, **QUIET)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)
    assert finished_steps(tmp_path) == [2]
    kept = params_of(tmp_path, 2)
    monkeypatch.setattr(os, "rename", rename)
    loop.run(cfg, resume=True, **QUIET)
    assert finished_steps(tmp_path)[-1] == 6 and not same(kept, params_of(tmp_path))


def read_only_folder(tmp_path):
    """A folder nobody may write: `chmod 555` for a user; for root, who writes through modes, a tmpfs
    mounted read-only (skipped where root cannot mount). Returns it and its undo."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return folder, lambda: folder.chmod(0o755)
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {made.stderr.decode().strip()}")
    return folder, lambda: subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_read_only_workdir_is_refused_up_front_with_its_path(tmp_path):
    workdir, undo = read_only_folder(tmp_path)
    try:
        with pytest.raises(
            OSError, match=rf"workdir {workdir} is not writable: (Read-only file system|Permission denied)"
        ):
            loop.run(loop.TrainConfig(workdir=str(workdir), max_steps=1, **TINY_RUN), **QUIET)
        assert os.listdir(workdir) == []
    finally:
        undo()


def test_a_new_workdir_under_a_read_only_folder_is_refused_and_nothing_is_created(tmp_path):
    """A new workdir is made only once the inputs are read, so the check probes its nearest existing
    parent."""
    parent, undo = read_only_folder(tmp_path)
    workdir = parent / "new" / "run"
    try:
        with pytest.raises(
            OSError, match=rf"workdir {workdir} is not writable: (Read-only file system|Permission denied)"
        ):
            loop.run(loop.TrainConfig(workdir=str(workdir), max_steps=1, **TINY_RUN), **QUIET)
        assert os.listdir(parent) == []
    finally:
        undo()


def poisoned_run(tmp_path, monkeypatch, skip: int, bad_steps: set[int]):
    """Trains with the train step's batch poisoned (NaN images) at `bad_steps` (1-based)."""
    from vgg_jax.training import parallel

    put_batch = parallel.put_batch
    calls = {"n": 0}

    def poison(batch, mesh):
        calls["n"] += 1
        # the loop sends uint8 crops and a float colour shift: NaN goes into the shift
        if calls["n"] in bad_steps:
            key = "shift" if "shift" in batch else "image"
            batch = dict(batch, **{key: np.full_like(np.asarray(batch[key]), np.nan)})
        return put_batch(batch, mesh)

    monkeypatch.setattr(parallel, "put_batch", poison)
    cfg = loop.TrainConfig(
        workdir=str(tmp_path), max_steps=8, checkpoint_every=2, eval_every=4, skip_nonfinite=skip, **TINY_RUN
    )
    lines = []
    return loop.run(cfg, log=lines.append), lines


def test_skip_nonfinite_skips_and_counts_bad_steps(tmp_path, monkeypatch):
    summary, lines = poisoned_run(tmp_path, monkeypatch, skip=2, bad_steps={3, 6})
    assert summary["skipped_nonfinite"] == 2 and summary["steps"] == 8
    assert [line.split(":")[0] for line in lines if "skipped" in line] == ["step 3", "step 6"]
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params_of(tmp_path)))
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl") if "eval" not in line]
    assert logged[-1]["skipped_nonfinite"] == 2 and all(
        np.isfinite(record["loss"]) for record in logged if record["step"] not in (3, 6)
    )


def test_one_bad_step_too_many_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    with pytest.raises(
        loop.NonFiniteError,
        match=r"non-finite loss \(nan\) at step 5; training stopped after skipping 1 such steps "
        r"\(--skip-nonfinite 1\)\. The last good checkpoint is step 4",
    ):
        poisoned_run(tmp_path, monkeypatch, skip=1, bad_steps={3, 5})
    assert finished_steps(tmp_path) == [2, 4]
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params_of(tmp_path)))


def test_train_script_huge_learning_rate_exits_1_with_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            TRAIN,
            *KILL_ARGS[:10],
            "--max-steps",
            "20",
            "--lr",
            "1e12",
            "--workdir",
            str(tmp_path / "nan"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0, done.stderr[-2000:]
    assert "train.py: error: non-finite" in done.stderr and "at step" in done.stderr


# ----------------------------------------------------------------------------- bad image files


def write_png(path, pixels):
    Image.fromarray(pixels).save(path)


@pytest.fixture
def messy_folder(tmp_path):
    """Good RGB, grayscale, RGBA and palette PNGs; a truncated PNG, a corrupt JPEG, a zero-byte file; an
    empty class."""
    rng = np.random.default_rng(0)
    root = tmp_path / "messy"
    for name in ("a", "b", "empty"):
        (root / name).mkdir(parents=True)
    write_png(root / "a" / "rgb.png", rng.integers(0, 256, (36, 40, 3), dtype=np.uint8))
    write_png(root / "a" / "gray.png", rng.integers(0, 256, (36, 40), dtype=np.uint8))
    write_png(root / "b" / "rgba.png", rng.integers(0, 256, (36, 40, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).convert("P").save(
        root / "b" / "palette.png"
    )
    whole = (root / "a" / "rgb.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "b" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (root / "a" / "empty.png").write_bytes(b"")
    return root


def test_bad_image_files_are_converted_or_skipped_and_counted(messy_folder):
    with pytest.warns(UserWarning) as caught:
        source = sources.ImageFolderSource(str(messy_folder))
    messages = [str(w.message) for w in caught]
    assert any("empty.png: the file is empty" in m for m in messages)
    assert any("class folder" in m and "empty" in m and "keeps label 2" in m for m in messages)
    assert source.classes == ["a", "b", "empty"] and source.num_classes == 3 and len(source) == 6
    with warnings.catch_warnings(record=True) as read_warnings:
        warnings.simplefilter("always")
        elements = [source[i] for i in range(len(source))]
    readable = [e for e in elements if e is not None]
    assert len(readable) == 4 and all(
        e["image"].shape == (36, 40, 3) and e["image"].dtype == np.uint8 for e in readable
    )
    skipped = [
        str(w.message) for w in read_warnings if issubclass(w.category, sources.UnreadableImageWarning)
    ]
    assert sorted(m.split("skipping image ")[1].split(":")[0].rsplit("/", 1)[1] for m in skipped) == [
        "corrupt.jpg",
        "truncated.png",
    ]
    assert len(source.skipped) == 3  # the empty file and the two unreadable ones
    loader = data.make_loader(
        source,
        data.EvalTransform(32, None),
        2,
        seed=0,
        shuffle=True,
        shard_index=0,
        shard_count=1,
        num_epochs=1,
    )
    iterator = iter(loader)
    batches = list(iterator)
    assert sum(len(b["label"]) for b in batches) == 4  # full batches of the readable images only
    assert iterator.skipped == 2  # the two unreadable files, counted (train.py logs it as skipped_images)


def test_a_folder_with_nothing_readable_is_a_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "zero.png").write_bytes(b"")
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match=r"holds no usable .* \(1 skipped as empty\)"),
    ):
        sources.ImageFolderSource(str(tmp_path))
    (tmp_path / "x" / "junk.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning):
        source = sources.ImageFolderSource(str(tmp_path))
        with pytest.raises(
            ValueError, match=r"no image in .* could be read \(1 failed; the first was .*zero.png"
        ):
            source[0]


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_params_bit_for_bit_and_the_data_order_is_a_function_of_seed_and_step(tmp_path):
    runs = []
    for name in ("one", "two"):
        loop.run(loop.TrainConfig(workdir=str(tmp_path / name), max_steps=5, seed=11, **TINY_RUN), **QUIET)
        runs.append(params_of(tmp_path / name))
    assert same(*runs)
    loop.run(loop.TrainConfig(workdir=str(tmp_path / "other"), max_steps=5, seed=12, **TINY_RUN), **QUIET)
    assert not same(runs[0], params_of(tmp_path / "other"))

    source = sources.SyntheticSource(64, 32, 10)
    transform = data.TrainTransform(32, scale=(32, 40), pca_std=0.1)

    def loader(workers=0):
        return iter(
            data.make_loader(
                source, transform, 4, seed=5, shuffle=True, shard_index=0, shard_count=1, worker_count=workers
            )
        )

    straight = loader()
    stream = [next(straight) for _ in range(6)]
    resumed = loader()
    for _ in range(3):
        next(resumed)
    state = resumed.get_state()
    fresh = loader()
    fresh.set_state(state)  # a new process, positioned by the saved state alone
    for expected in stream[3:]:
        got = next(fresh)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["label"], expected["label"])


def test_nan_or_inf_pixels_are_refused_by_preprocess_and_never_trained_on():
    """The policy: preprocess refuses non-finite pixels (ValueError); a non-finite batch that reaches training
    is a non-finite step (stopped or skipped, above); the model itself computes whatever it is given."""

    for bad in (np.nan, np.inf, -np.inf):
        images = np.zeros((1, 32, 32, 3), np.float32)
        images[0, 3, 4, 1] = bad
        with pytest.raises(ValueError, match="preprocess got NaN or Inf pixels"):
            images_lib.preprocess(images, "torch")
    clean = images_lib.preprocess(np.zeros((1, 32, 32, 3), np.uint8), "caffe")
    assert bool(np.isfinite(np.asarray(clean)).all())
