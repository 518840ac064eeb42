"""Data parallelism: 8 fake CPU devices, FC sharding, and two processes over jax.distributed.

Each run is its own subprocess (tests/parallel_worker.py or scripts/train.py)
with `--xla_force_host_platform_device_count`, so the rest of the suite keeps
one device. CPU collectives across processes use gloo (jax's default CPU
collectives implementation; the tests set nothing for it).
"""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import TINY_TRAIN_FLAGS

from vgg_jax.training import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "parallel_worker.py")
COLLECTIVES_WORKER = os.path.join(ROOT, "tests", "collectives_worker.py")


def environment(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    for name in (parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES, parallel.ENV_PROCESS_ID):
        env.pop(name, None)
    return env


def run_worker(tmp_path, host_devices: int, *runs: str) -> list[tuple[dict, dict]]:
    """Runs `NAME=DEVICES[,fc]` one after another in one worker process: (info, state) for each."""
    outs = [tmp_path / f"{run.split('=')[0]}.npz" for run in runs]
    done = subprocess.run(
        [sys.executable, WORKER, *(f"{out}={run.split('=')[1]}" for out, run in zip(outs, runs))],
        env=environment(host_devices),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    infos = json.loads(done.stdout.strip().splitlines()[-1])
    return [(info, dict(np.load(out))) for info, out in zip(infos, outs)]


def assert_same_state(a: dict, b: dict, atol: float, last_rtol: float = 1e-4) -> None:
    """After one step the params and BN statistics within `atol`; the rest within `last_rtol`.

    Float sums in another order (per-device partial gradients, then an
    all-reduce) differ by about 1e-5 relative in the gradients (the momentum
    trace) and drift by that much per step, so the optimizer state and later
    steps get a relative bound.
    """
    assert a.keys() == b.keys()
    for name in a:
        if name.startswith(("step1.params", "step1.batch_stats")):
            np.testing.assert_allclose(a[name], b[name], atol=atol, rtol=0, err_msg=name)
        else:
            np.testing.assert_allclose(a[name], b[name], atol=atol, rtol=last_rtol, err_msg=name)


def test_eight_devices_and_two_processes_match_one_device_and_fc_sharding_matches_replication(tmp_path):
    """One process of 8 CPU devices (a mesh of 1 of them, of all 8, and of all 8 with fc6 sharded), then two
    processes over jax.distributed against the same one-device run (one test: the reference is trained
    once)."""
    (info1, state1), (info8, state8), (info_fc, state_fc) = run_worker(
        tmp_path, 8, "one=1", "eight=8", "fc=8,fc"
    )
    assert (info1["devices"], info8["devices"]) == (1, 8)
    assert_same_state(state1, state8, atol=1e-5)  # BN statistics, params and momentum
    np.testing.assert_allclose(info8["losses"], info1["losses"], rtol=1e-5)
    assert info8["fc6_spec"] == []
    # fc6 (64 outputs) and its momentum split 8 ways on the output axis; the result is the same.
    assert info_fc["fc6_spec"] == info_fc["fc6_momentum_spec"] == [None, "data"]
    assert info_fc["fc6_shard_shape"][1] == 64 // 8
    assert_same_state(state8, state_fc, atol=1e-5)
    check_two_processes_match_one_device(tmp_path, info1, state1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_two(command, devices: int) -> list:
    """Two processes of `devices` CPU devices each, running `command(process_id)`, their output piped."""
    return [
        subprocess.Popen(
            command(i), env=environment(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]


def finish(procs: list) -> list[tuple[str, str]]:
    """(stdout, stderr) of processes run together; all are killed if one hangs; each must succeed."""
    outputs = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise
        assert proc.returncode == 0, stderr[-3000:]
        outputs.append((stdout, stderr))
    return outputs


def check_two_processes_match_one_device(tmp_path, info1: dict, state1: dict) -> None:
    """Two processes of 2 CPU devices each (coordinator on 127.0.0.1), each feeding half of every global
    batch: the same state on both, and as one device on the same global batch."""
    port = free_port()
    procs = start_two(
        lambda i: (
            [sys.executable, WORKER, f"{tmp_path / f'p{i}.npz'}=4"]
            + ["--process-id", str(i), "--num-processes", "2", "--port", str(port)]
        ),
        devices=2,
    )
    outputs = [json.loads(stdout.strip().splitlines()[-1])[0] for stdout, _ in finish(procs)]
    assert [o["processes"] for o in outputs] == [2, 2] and outputs[0]["devices"] == 4
    states = [dict(np.load(tmp_path / f"p{i}.npz")) for i in range(2)]
    assert_same_state(states[0], states[1], atol=0, last_rtol=0)  # the same params on both processes
    assert_same_state(state1, states[0], atol=1e-5)  # and as one process on the same global batch
    np.testing.assert_allclose(outputs[0]["losses"], info1["losses"], rtol=1e-5)


def test_a_global_batch_that_does_not_divide_names_both_numbers():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), (parallel.DATA_AXIS,))
    parallel.check_global_batch(5, mesh)  # one device takes any batch
    fake = type("FakeMesh", (), {"devices": np.empty(8)})()
    with pytest.raises(
        ValueError,
        match=r"global batch of 12 does not divide over 8 devices.*multiple of 8 \(for example 8 or 16\)",
    ):
        parallel.check_global_batch(12, fake)
    with pytest.raises(ValueError, match=r"devices must be between 1 and the 1 devices available, got 3"):
        parallel.make_mesh(3)


def test_initialize_needs_all_three_settings(monkeypatch):
    for name in (
        parallel.ENV_COORDINATOR,
        parallel.ENV_NUM_PROCESSES,
        parallel.ENV_PROCESS_ID,
        "SLURM_NTASKS",
        "OMPI_COMM_WORLD_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)
    assert parallel.initialize() is False  # one process, nothing asked: nothing started
    with pytest.raises(ValueError, match="coordinator address"):
        parallel.initialize("127.0.0.1:1234")
    with pytest.raises(ValueError, match=r"process id must be in \[0, 2\)"):
        parallel.initialize("127.0.0.1:1234", 2, 5)
    monkeypatch.setenv(parallel.ENV_NUM_PROCESSES, "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an integer"):
        parallel.initialize()


def read_losses(workdir) -> list[float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as file:
        return [record["loss"] for record in map(json.loads, file) if "loss" in record]


@pytest.mark.slow  # 25-45 s; its default twin is the in-process eight-device test above
def test_train_script_on_eight_devices_follows_the_one_device_loss_curve(tmp_path):
    """scripts/train.py under 8 fake devices: the same losses as on 1 device (a batch that does not divide
    is refused by bench.py's test below and by check_global_batch's, with the same message)."""
    common = [
        "--config",
        "A",
        "--data",
        "digits",
        "--image-size",
        "32",
        "--max-steps",
        "8",
        "--log-every",
        "2",
        "--width-scale",
        "0.125",
        "--fc-width",
        "32",
        "--checkpoint-every",
        "4",
    ]
    script = os.path.join(ROOT, "scripts", "train.py")
    curves = {}
    for devices in (1, 8):
        workdir = tmp_path / f"d{devices}"
        done = subprocess.run(
            [sys.executable, script, *common, "--workdir", str(workdir), "--devices", str(devices)],
            env=environment(8),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        curves[devices] = read_losses(workdir)
    assert len(curves[1]) == 4
    np.testing.assert_allclose(curves[8], curves[1], rtol=1e-4)


def test_bench_scaling_reports_efficiency_per_device_count(tmp_path):
    out = tmp_path / "scaling.json"
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "bench.py"),
            "--config",
            "A",
            "--batch-size",
            "4",
            "--image-size",
            "32",
            "--width-scale",
            "0.0625",
            "--fc-width",
            "32",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--mode",
            "train-step",
            "--scaling",
            "--json",
            str(out),
        ],
        env=environment(2),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads(out.read_text())
    assert [(r["device_count"], r["batch_size"], r["per_device_batch"]) for r in records] == [
        (1, 2, 2),
        (2, 4, 2),
    ]
    for record in records[1:]:
        result = record["results"]["train_step"]
        one = records[0]["results"]["train_step"]["images_per_s"]
        assert result["scaling_efficiency"] == pytest.approx(
            result["images_per_s"] / (record["device_count"] * one)
        )
        assert result["images_per_s_per_device"] == pytest.approx(
            result["images_per_s"] / record["device_count"]
        )
    assert "efficiency" in done.stdout and "scaling eff." in done.stdout
    bad = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "bench.py"),
            "--config",
            "A",
            "--batch-size",
            "3",
            "--image-size",
            "32",
        ],
        env=environment(2),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        bad.returncode == 2
        and bad.stderr.count("\n") == 1
        and "global batch of 3 does not divide over 2 devices" in bad.stderr
    )


def train_two_processes(workdir, steps: int, resume: bool = False) -> list[str]:
    """scripts/train.py as two processes over jax.distributed on localhost; returns their stderr."""
    port = free_port()
    command = [
        sys.executable,
        os.path.join(ROOT, "scripts", "train.py"),
        *TINY_TRAIN_FLAGS,
        "--image-size",
        "32",
        "--max-steps",
        str(steps),
        "--checkpoint-every",
        "2",
        "--eval-every",
        "2",
        "--log-every",
        "1",
        "--workdir",
        str(workdir),
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        "2",
    ] + (["--resume"] if resume else [])
    procs = start_two(lambda i: command + ["--process-id", str(i)], devices=1)
    return [stderr for _, stderr in finish(procs)]


@pytest.mark.slow  # 45-90 s (six processes); the default twin is the two-process step test above
def test_train_script_in_two_processes_checkpoints_and_resumes_exactly(tmp_path):
    """Orbax saves with both processes, each process's data position is in the checkpoint, and
    a resumed two-process run ends bit-identical to an uninterrupted one; one metrics.jsonl, written once;
    and one process can load the two-process checkpoint (a warm start from a multi-host run)."""
    from vgg_jax.training import loop

    train_two_processes(tmp_path / "whole", 4)
    train_two_processes(tmp_path / "split", 2)
    train_two_processes(tmp_path / "split", 4, resume=True)

    def params(workdir):
        iterators = json.loads((workdir / "checkpoints" / "4" / "data" / "metadata").read_text())["iterators"]
        assert len(iterators) == 2 and iterators[0] != iterators[1]  # each process's own position
        return loop.load_params(str(workdir))[0]["params"]

    whole, split = params(tmp_path / "whole"), params(tmp_path / "split")
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split)))
    steps = [
        json.loads(line)["step"] for line in open(tmp_path / "split" / "metrics.jsonl") if "eval" not in line
    ]
    assert steps == [1, 2, 3, 4]  # process 0 alone writes, and the resume drops nothing and repeats nothing


def test_two_processes_wait_on_no_collective_between_windows_and_stop_together_on_sigterm(tmp_path):
    """SIGTERM to one of two processes: both stop after the same step, at a log window, with a checkpoint
    of it; and no process called a host collective on any step between two windows."""
    import signal
    import time

    log_every, port, workdir = 4, free_port(), tmp_path / "run"
    flags = [
        *("--config", "A", "--data", "synthetic", "--image-size", "32", "--width-scale", "0.0625"),
        *("--fc-width", "32", "--batch-size", "8", "--epochs", "100", "--log-every", str(log_every)),
        *("--eval-every", "100000", "--checkpoint-every", "100000", "--workdir", str(workdir)),
        *("--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"),
    ]
    procs = start_two(
        lambda i: (
            [sys.executable, COLLECTIVES_WORKER, str(tmp_path / f"calls{i}.json"), *flags]
            + ["--process-id", str(i)]
        ),
        devices=1,
    )
    try:
        deadline = time.monotonic() + 240
        while not any(
            json.loads(line).get("step", 0) >= 2 * log_every
            for line in (open(workdir / "metrics.jsonl") if (workdir / "metrics.jsonl").exists() else ())
        ):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "no steps logged"
            time.sleep(0.2)
        procs[0].send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=240) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    stopped = [re.search(r"after step (\d+);", stderr) for _, stderr in outputs]
    assert all(stopped), [stderr[-2000:] for _, stderr in outputs]
    steps = {int(match.group(1)) for match in stopped}
    assert len(steps) == 1, steps  # the same step on both
    step = steps.pop()
    assert step % log_every == 0 and [proc.returncode for proc in procs] == [143, 143]
    assert (workdir / "checkpoints" / str(step) / "_CHECKPOINT_METADATA").is_file()
    for i in range(2):
        calls = json.load(open(tmp_path / f"calls{i}.json"))
        in_loop = [done for done, _ in calls if 0 < done]
        assert in_loop, calls  # the window's agreement is counted: the count is real
        assert all(done % log_every == 0 for done in in_loop), calls  # none between windows
