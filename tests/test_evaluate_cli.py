"""scripts/evaluate.py: a run's checkpoint, a weights file, the paper's methods, errors (its main,
in-process)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vgg_jax import VGG
from vgg_jax.weights import formats as weights

TINY = ["--width-scale", "0.0625", "--fc-width", "32"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny run of A on the digits: 6 steps, evaluated at its end."""
    pytest.importorskip("sklearn")
    from vgg_jax.cli.train import main

    workdir = tmp_path_factory.mktemp("run") / "a"
    argv = [
        "--config",
        "A",
        "--data",
        "digits",
        "--image-size",
        "32",
        *TINY,
        "--max-steps",
        "6",
        "--batch-size",
        "32",
        "--workdir",
        str(workdir),
    ]
    assert main(argv) == 0
    return workdir


def test_a_run_is_evaluated_on_its_own_split_as_training_did(tiny_run, capsys):
    from vgg_jax.cli.evaluate import main

    assert main([str(tiny_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    final = [
        record["eval"] for record in map(json.loads, open(tiny_run / "metrics.jsonl")) if "eval" in record
    ][-1]
    assert result["count"] == 297 and result["method"] == "center" and result["scales"] == [32]
    assert result["top1_error"] == pytest.approx(final["top1_error"]) and result[
        "top5_error"
    ] == pytest.approx(final["top5_error"])
    # a method training did not use
    assert main([str(tiny_run), "--eval", "dense", "--eval-scales", "32,48"]) == 0
    out = capsys.readouterr().out
    assert "dense at Q=32,48 on 297 images: top-1 error" in out


def test_a_weights_file_on_an_image_folder(tmp_path, capsys):
    from vgg_jax.cli.evaluate import main

    for name in ("cat", "dog"):
        os.makedirs(tmp_path / "images" / name)
        for index in range(3):
            Image.fromarray(np.full((40, 48, 3), 60 * index, np.uint8)).save(
                tmp_path / "images" / name / f"{index}.png"
            )
    variables = VGG("A", num_classes=2, width_scale=1 / 16, fc_width=32).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3))
    )
    weights.save(variables, str(tmp_path / "a.msgpack"))
    argv = [
        str(tmp_path / "a.msgpack"),
        "--config",
        "A",
        "--data",
        f"folder:{tmp_path / 'images'}",
        "--workers",
        "0",  # no worker start-up (the worker path has its own tests)
        "--image-size",
        "32",
        "--preprocess",
        "torch",
    ]
    assert main([*argv, "--eval", "multi-crop", "--eval-scales", "32,40", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 6 and result["method"] == "multi-crop" and 0 <= result["top1_error"] <= 1
    assert main([str(tmp_path / "a.msgpack"), "--config", "A"]) == 2  # a file that does not say its pixels
    assert "does not say which pixels its weights expect; pass --preprocess torch" in capsys.readouterr().err
    # a file names no images
    assert main([str(tmp_path / "a.msgpack"), "--config", "A", "--preprocess", "torch"]) == 2
    assert "say which images to evaluate on" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.msgpack")]) == 2
    assert (
        "is not a published name (vgg16, keras:vgg16, timm:vgg16_bn), a weights file"
        in capsys.readouterr().err
    )
