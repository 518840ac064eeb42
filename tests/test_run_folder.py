"""A run folder is the user's work: one writer at a time, never condemned by a bad config.json, clean stops.

Real faults: two `train.py` processes on one folder, a resume during a live
run, config.json fields deleted, mistyped and changed by hand, a double SIGINT
to the process group and a kill -9 (then the process table and /dev/shm), a
small tmpfs that fills, a read-only mount. docs/reliability.md has the table.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import TINY_RUN, TINY_TRAIN_FLAGS
from PIL import Image

from vgg_jax.cli import convert_weights, evaluate, predict
from vgg_jax.cli import train as train_command
from vgg_jax.training import loop
from vgg_jax.weights.runs import finished_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
TINY = TINY_TRAIN_FLAGS


def quiet_run(workdir, **overrides):
    settings = dict(workdir=str(workdir), max_steps=4, checkpoint_every=2, eval_every=4, **TINY_RUN)
    return loop.run(loop.TrainConfig(**{**settings, **overrides}), log=lambda line: None)


@pytest.fixture(scope="module")
def run_with_checkpoints(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run_folder") / "run"
    quiet_run(workdir)
    assert finished_steps(workdir) == [2, 4]
    return workdir


def snapshot(workdir):
    return {str(path): path.read_bytes() for path in sorted(workdir.rglob("*")) if path.is_file()}


def edited(run, tmp_path, name, edit):
    """A copy of the run whose config.json went through `edit` (a hand edit, or an older version's file)."""
    workdir = tmp_path / name
    shutil.copytree(run, workdir)
    saved = json.loads((workdir / "config.json").read_text())
    edit(saved)
    (workdir / "config.json").write_text(json.dumps(saved, indent=2))
    return workdir


def one_error_line(capsys, status, expected_status=2):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == expected_status and len(lines) == 1, err[-3000:]
    return lines[0]


CONFIG_FAULTS = {
    "width_scale missing": (
        lambda c: c["model"].pop("width_scale"),
        "the field model.width_scale is missing",
    ),
    "model not an object": (lambda c: c.update(model=[]), "the field model must be an object"),
    "model has an unknown setting": (
        lambda c: c["model"].update(widht_scale=1.0),
        "the field model.widht_scale is not one of VGG's settings",
    ),
    "mean_rgb missing": (lambda c: c.pop("mean_rgb"), "the field mean_rgb is missing"),
    "mean_rgb null": (lambda c: c.update(mean_rgb=None), "the field mean_rgb is null"),
    "image_size mistyped": (lambda c: c.update(image_size="32"), "the field image_size must be an integer"),
    "config invalid": (lambda c: c.update(config="vgg17"), "the field config"),
}


@pytest.mark.parametrize("fault", sorted(CONFIG_FAULTS))
def test_a_bad_config_json_is_refused_by_every_command_naming_file_and_field_and_nothing_changes(
    run_with_checkpoints, tmp_path, capsys, fault
):
    """Each command that reads a run refuses a missing, mistyped or invalid field in one line naming the file
    and the field, never with a default, never advising --overwrite; no checkpoint moves, no file changes."""
    edit, says = CONFIG_FAULTS[fault]
    workdir = edited(run_with_checkpoints, tmp_path, "run", edit)
    before = snapshot(workdir)
    image = tmp_path / "cat.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    commands = {
        "train.py --resume": lambda: train_command.main(["--workdir", str(workdir), "--resume"]),
        "predict.py": lambda: predict.main([str(image), "--model", str(workdir)]),
        "evaluate.py": lambda: evaluate.main([str(workdir), "--data", "synthetic"]),
        "convert_weights.py": lambda: convert_weights.main([str(workdir), str(tmp_path / "out.msgpack")]),
    }
    for name, command in commands.items():
        line = one_error_line(capsys, command())
        assert f"{workdir}/config.json" in line and says in line, (name, line)
        assert "overwrite" not in line and "--batch-size" not in line, (name, line)
        assert snapshot(workdir) == before, name  # nothing moved, config.json not rewritten
    assert not (tmp_path / "out.msgpack").exists()


def test_a_resume_reads_the_run_s_config_json_once(run_with_checkpoints, tmp_path, monkeypatch):
    """One pass at a run's start: `--resume` opens config.json once (its rewrite goes through a temporary
    file, renamed onto it)."""
    import builtins

    workdir = tmp_path / "run"
    shutil.copytree(run_with_checkpoints, workdir)
    opened, real = [], builtins.open

    def traced(file, *args, **kwargs):
        if str(file).endswith("config.json"):
            opened.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", traced)
    assert train_command.main(["--workdir", str(workdir), "--resume", "--max-steps", "5"]) == 0
    assert opened == [str(workdir / "config.json")]


def test_init_from_opens_its_source_once_a_weights_file_or_a_run_s_config_json(
    run_with_checkpoints, tmp_path, monkeypatch
):
    """One pass at a run's start: `--init-from F` reads F once (its variables and metadata together), and
    `--init-from RUN` reads the run's config.json once (checked, then handed on)."""
    import builtins

    exported = tmp_path / "a.msgpack"
    assert convert_weights.main([str(run_with_checkpoints), str(exported)]) == 0
    opened, real = [], builtins.open

    def traced(file, *args, **kwargs):
        if str(file) in (str(exported), str(run_with_checkpoints / "config.json")):
            opened.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", traced)
    for source in (exported, run_with_checkpoints):
        opened.clear()
        workdir = tmp_path / f"from_{source.name}"
        argv = [*TINY_TRAIN_FLAGS, "--max-steps", "1", "--workdir", str(workdir), "--init-from", str(source)]
        assert train_command.main(argv) == 0
        read = source / "config.json" if source.is_dir() else source
        assert opened == [str(read)], opened


def test_a_mistyped_field_is_the_file_s_not_a_flag_the_user_never_typed(
    run_with_checkpoints, tmp_path, capsys
):
    workdir = edited(run_with_checkpoints, tmp_path, "run", lambda c: c.update(batch_size="16"))
    line = one_error_line(capsys, train_command.main(["--workdir", str(workdir), "--resume"]))
    assert f"--resume: {workdir}/config.json: the field batch_size must be an integer" in line
    assert "--batch-size" not in line


def test_a_changed_width_is_a_config_problem_not_damaged_checkpoints(run_with_checkpoints, tmp_path, capsys):
    """config.json edited to another valid width: the shapes differ from the checkpoints'. That is named as
    the file's problem; the healthy checkpoints are not called damaged, moved, or replaced."""
    workdir = edited(run_with_checkpoints, tmp_path, "run", lambda c: c["model"].update(width_scale=0.125))
    before = snapshot(workdir)
    line = one_error_line(capsys, train_command.main(["--workdir", str(workdir), "--resume"]))
    assert f"{workdir}/config.json does not describe the run's checkpoints" in line
    assert "conv1_1/bias is (4,) in checkpoint step 4 but (8,)" in line and "damaged" not in line
    assert snapshot(workdir) == before and not (workdir / "damaged_checkpoints").exists()


def test_an_older_layout_is_read_through_the_one_migration_and_a_partial_one_is_refused(
    run_with_checkpoints, tmp_path, capsys
):
    """Both older layouts resume and are rewritten in today's: VGG's settings beside the run's own (no
    "model"), and the first, which also lacks every field added since (`runs.ADDED_FIELDS`); a file without
    some of those was damaged and is refused."""
    from vgg_jax.weights import runs

    def flat(c):
        c.update(c.pop("model"))

    def first(c):
        flat(c)
        [c.pop(name) for name in runs.ADDED_FIELDS]

    for name, layout in (("flat", flat), ("first", first)):
        old = edited(run_with_checkpoints, tmp_path, name, layout)
        assert train_command.main(["--workdir", str(old), "--resume", "--max-steps", "6"]) == 0
        assert finished_steps(old)[-1] == 6
        rewritten = json.loads((old / "config.json").read_text())
        assert rewritten["model"]["width_scale"] == 1 / 16 and "width_scale" not in rewritten
    capsys.readouterr()
    partial = edited(run_with_checkpoints, tmp_path, "partial", lambda c: (flat(c), c.pop("optimizer")))
    line = one_error_line(capsys, train_command.main(["--workdir", str(partial), "--resume"]))
    assert "the field optimizer is missing" in line


def test_a_checkpoint_is_moved_aside_only_once_an_older_one_restores(run_with_checkpoints, tmp_path, capfd):
    """Every step damaged: one line listing them, nothing moved, no traceback, the detail in the workdir's
    checkpoint_errors.log. The newest damaged with an older good one: it is moved aside in one readable
    line, and the run resumes."""
    workdir = tmp_path / "run"
    shutil.copytree(run_with_checkpoints, workdir)
    for step in (2, 4):
        for path in (workdir / "checkpoints" / str(step) / "state").rglob("*"):
            if path.is_file() and path.parent.name == "d":
                path.write_bytes(os.urandom(100))
    status = train_command.main(["--workdir", str(workdir), "--resume"])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "step 4: " in lines[0] and "step 2: " in lines[0] and "Nothing was moved" in lines[0]
    assert " at 0x" not in lines[0] and "slice(" not in lines[0]  # a reason, not a TensorStore repr
    assert finished_steps(workdir) == [2, 4] and not (workdir / "damaged_checkpoints").exists()
    assert (workdir / "checkpoint_errors.log").stat().st_size > 0
    shutil.rmtree(workdir / "checkpoints" / "2")
    shutil.copytree(run_with_checkpoints / "checkpoints" / "2", workdir / "checkpoints" / "2")
    assert train_command.main(["--workdir", str(workdir), "--resume", "--max-steps", "6"]) == 0
    warnings = [line for line in capfd.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "checkpoint step 4" in warnings[0] and "resuming from step 2" in warnings[0]
    assert os.listdir(workdir / "damaged_checkpoints") == ["4"] and finished_steps(workdir) == [2, 4, 6]


# ----------------------------------------------------------------------------- one writer per folder


def start_training(workdir, *extra, **popen):
    return subprocess.Popen(
        [
            sys.executable,
            TRAIN,
            *TINY,
            "--epochs",
            "100000",
            "--log-every",
            "1",
            "--checkpoint-every",
            "2",
            "--eval-every",
            "100000",
            "--workdir",
            str(workdir),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for_step(proc, step=3, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith(f"step {step}/"):
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"no step {step} line; stderr: {proc.stderr.read()[-2000:]}")


def test_one_writer_per_run_folder_a_second_start_and_a_live_resume_are_refused_naming_the_pid(
    tmp_path, capsys
):
    """A live run holds its folder: a second start, --overwrite and --resume are refused at once in one line
    naming the folder and the PID, and the live run's checkpoints are untouched. A kill -9 frees the folder
    (the OS drops the lock), so --resume then continues."""
    workdir = tmp_path / "run"
    live = start_training(workdir)
    try:
        wait_for_step(live)
        for extra in ([*TINY], [*TINY, "--overwrite"], ["--resume"]):
            line = one_error_line(capsys, train_command.main([*extra, "--workdir", str(workdir)]))
            assert f"--workdir {workdir} is being written by another run (PID {live.pid} on " in line, line
        assert live.poll() is None  # the live run was not disturbed
    finally:
        live.kill()
        live.wait()
    steps = finished_steps(workdir)
    assert steps and not (workdir / "damaged_checkpoints").exists()
    assert train_command.main(["--workdir", str(workdir), "--resume", "--max-steps", str(steps[-1] + 1)]) == 0


def test_a_holder_that_has_locked_but_not_yet_written_its_pid_is_named_once_it_does(tmp_path):
    import fcntl
    import threading

    from vgg_jax.training.rundir import WorkdirInUseError, WorkdirLock

    holder = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # locked; the file is still empty (CI's race)
    late = threading.Timer(0.3, lambda: os.write(holder, b"4242 somehost\n"))
    late.start()
    with pytest.raises(WorkdirInUseError, match=r"another run \(PID 4242 on somehost\)"):
        WorkdirLock(str(tmp_path)).acquire()
    late.join()
    os.close(holder)
    lock = WorkdirLock(str(tmp_path))
    lock.acquire()  # the holder ended: the lock is free, and its line replaces the old one whole
    assert open(tmp_path / ".lock").read().split()[0] == str(os.getpid())
    lock.release()


def test_two_starts_together_on_a_new_folder_one_runs_and_one_is_refused(tmp_path):
    workdir = tmp_path / "run"
    args = [sys.executable, TRAIN, *TINY, "--max-steps", "4", "--log-every", "1", "--workdir", str(workdir)]
    first, second = (
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    )
    results = [(proc.wait(timeout=300), proc.stdout.read(), proc.stderr.read()) for proc in (first, second)]
    assert sorted(status for status, _, _ in results) == [0, 2], results
    _, _, refusal = next(result for result in results if result[0] == 2)
    assert refusal.count("\n") == 1 and f"--workdir {workdir}" in refusal
    assert "being written by another run (PID" in refusal or "holds a run" in refusal
    logged = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl") if '"eval"' not in line]
    assert logged == [1, 2, 3, 4]  # one run's lines, not two mixed


# ----------------------------------------------------------------------------- every stop clean


def mapped_segments(pids):
    """The /dev/shm segments these processes have mapped (the input pipeline's shared memory)."""
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                found |= {line.split()[-1] for line in maps if "/dev/shm/" in line}
        except OSError:
            pass
    return found


def group_members(pgid):
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
            except OSError:
                pass
    return members


def gone_within(pgid, segments, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not group_members(pgid) and not any(os.path.exists(path) for path in segments):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def image_folder(tmp_path):
    from vgg_jax.benchmark.data_bench import write_jpeg_folder

    return write_jpeg_folder(str(tmp_path / "images"), 64, size=(48, 40), classes=4)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the process table from /proc")
@pytest.mark.parametrize("how", ["sigint-twice", "kill-9"])
def test_every_stop_leaves_no_process_and_no_shared_memory(tmp_path, image_folder, how):
    """Ctrl-C twice to the process group (the second while the first stop is under way), or kill -9 of the
    main process: the input workers and the resource tracker end, their /dev/shm segments go, and the last
    line printed says truthfully what is saved."""
    workdir = tmp_path / "run"
    args = ["--data", f"folder:{image_folder}", "--workers", "2", "--checkpoint-every", "100000"]
    proc = start_training(workdir, *args, start_new_session=True)
    try:
        wait_for_step(proc)
        segments = mapped_segments(group_members(proc.pid))
        if how == "kill-9":
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
        assert gone_within(proc.pid, segments), (group_members(proc.pid), stderr[-2000:])
    finally:
        for pid in group_members(proc.pid):
            os.kill(pid, signal.SIGKILL)
    if how == "sigint-twice":
        assert "Traceback" not in stderr, stderr[-3000:]
        last = [line for line in stderr.splitlines() if line.strip()][-1]
        steps = finished_steps(workdir)
        if last.startswith("SIGINT again"):
            expected = f"newest checkpoint is step {steps[-1]}" if steps else "no checkpoint was written"
            assert expected in last, (last, steps)
        else:  # the first stop finished before the second signal came
            assert last.startswith("train.py: stopped by SIGINT after step") and steps, stderr[-2000:]
            assert f"after step {steps[-1]};" in last


# ----------------------------------------------------------------------------- disks: full, read-only, typos


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 600 KiB mounted under tmp_path (root only): room for two tiny checkpoints, not five."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_prints_one_line_keeps_the_last_checkpoint_and_resume_continues(small_disk):
    """The disk fills while Orbax writes a checkpoint: one line (no Orbax or asyncio traceback), the last
    complete checkpoint kept; with room again, --resume goes on."""
    workdir = small_disk / "run"
    args = [sys.executable, TRAIN, *TINY, "--max-steps", "8", "--eval-every", "2", "--keep", "5"]
    full = subprocess.run([*args, "--workdir", str(workdir)], capture_output=True, text=True, timeout=300)
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert full.returncode == 1 and len(lines) == 1, full.stderr[-3000:]
    assert "could not write the checkpoint of step" in lines[0] and "No space left on device" in lines[0]
    kept = finished_steps(workdir)
    assert kept and f"step {kept[-1]}, is kept" in lines[0]
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    resumed = subprocess.run(
        [*args, "--workdir", str(workdir), "--resume"], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0 and finished_steps(workdir)[-1] == 8, resumed.stderr[-2000:]


def test_a_read_only_mount_a_parent_that_is_a_file_and_missing_parents_each_say_so(
    small_disk, tmp_path, capsys
):
    """The true reason, not "Permission denied" for everything; a typo'd path's new parents are named."""
    quiet_run(small_disk / "run", max_steps=2)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for workdir, extra in ((small_disk / "run", ["--resume"]), (small_disk / "new" / "run", [])):
        line = one_error_line(capsys, train_command.main([*TINY, *extra, "--workdir", str(workdir)]))
        assert f"--workdir {workdir} is not writable: Read-only file system" in line, line
    (tmp_path / "file").write_text("not a folder")
    line = one_error_line(capsys, train_command.main([*TINY, "--workdir", str(tmp_path / "file" / "run")]))
    assert "is not writable: Not a directory" in line and f"({tmp_path}/file is a file)" in line
    assert (
        train_command.main([*TINY, "--max-steps", "1", "--workdir", str(tmp_path / "typo" / "a" / "run")])
        == 0
    )
    out = capsys.readouterr().out
    assert (
        f"--workdir {tmp_path}/typo/a/run: {tmp_path}/typo did not exist; made it and the folders below it"
        in out
    )
