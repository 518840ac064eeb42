"""The examples run and write their outputs."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_perceptual_loss_example(tmp_path):
    out = run_example("perceptual_loss.py", "--out", str(tmp_path), "--steps", "20")
    first, last = (float(x) for x in out.rsplit("loss ", 1)[1].split(";")[0].split(" -> "))
    assert last < first
    assert {"target.png", "start.png", "result.png"} <= set(os.listdir(tmp_path))


def test_saliency_example(tmp_path):
    pytest.importorskip("sklearn")
    run_example("saliency.py", "--out", str(tmp_path), "--steps", "20")
    assert {"digit.png", "digit_saliency.png"} <= set(os.listdir(tmp_path))


def test_ensemble_example(tmp_path):
    assert "vmap matches the loop" in run_example(
        "ensemble_vmap.py", "--members", "3", "--out", str(tmp_path)
    )
    import numpy as np

    saved = np.load(tmp_path / "ensemble.npz")
    assert saved["logits"].shape == (3, 8, 10) and np.allclose(saved["mean_probs"].sum(-1), 1, atol=1e-5)
