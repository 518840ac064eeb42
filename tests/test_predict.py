"""scripts/predict.py on image files (its main, in-process), with a weights file (no download): top
classes, JSON, dense, errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import vgg_jax
from vgg_jax.weights import imagenet, predict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_IMAGENET = dict(width_scale=1 / 16, fc_width=32, num_classes=1000)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A tiny VGG-A with ImageNet's 1,000 outputs, initialised on 32-pixel images, saved as .msgpack."""
    model = vgg_jax.VGG("A", **TINY_IMAGENET)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    path = tmp_path_factory.mktemp("weights") / "tiny.msgpack"
    vgg_jax.weights.save(variables, str(path), metadata={"preprocess": "torch"})
    return str(path), model, variables


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 256, (90, 40), dtype=np.uint8)).save(folder / "tall_grey.jpg")
    return [str(folder / "wide.png"), str(folder / "tall_grey.jpg")]


def test_classify_matches_the_model_on_the_centre_crops(weights_file, images):
    path, model, variables = weights_file
    named = predict.load_model(path, config="A")
    assert (named.model.config, named.model.num_classes, named.preprocess) == ("A", 1000, "torch")
    results = predict.classify(named.model, named.variables, images, named.preprocess, top=3, batch_size=1)
    views = np.stack([predict.centre_view(predict.read_image(p), 32) for p in images])
    expected = imagenet.decode_predictions(model.apply(variables, vgg_jax.preprocess(views, "torch")), top=3)
    assert [[(b["index"], b["name"]) for b in r["top"]] for r in results] == [
        [(i, n) for i, n, _ in e] for e in expected
    ]
    assert [r["image"] for r in results] == images
    for result, best in zip(results, expected):
        np.testing.assert_allclose(
            [b["probability"] for b in result["top"]], [p for _, _, p in best], rtol=1e-5
        )


def load_script():
    from vgg_jax.cli import predict

    return predict


def test_script_prints_json_and_dense_works(weights_file, images, capsys):
    path, _, _ = weights_file
    script = load_script()
    assert script.main([*images, "--model", path, "--config", "A", "--json", "--top", "2", "--dense"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == images and all(len(r["top"]) == 2 for r in results)
    assert all(r["top"][0]["probability"] >= r["top"][1]["probability"] > 0 for r in results)
    assert all(r["top"][0]["name"] == vgg_jax.class_names()[r["top"][0]["index"]] for r in results)
    assert script.main([*images, "--model", path, "--config", "A"]) == 0  # the plain listing
    text = capsys.readouterr().out
    assert text.count("  1. ") == 2 and "%" in text


def test_bad_inputs_are_one_line(weights_file, images, tmp_path, capsys):
    script = load_script()
    path, _, _ = weights_file
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    for argv, message in (
        ([str(tmp_path / "missing.png"), "--model", path, "--config", "A"], "missing.png does not exist"),
        ([str(tmp_path / "broken.jpg"), "--model", path, "--config", "A"], "broken.jpg could not be read"),
    ):
        assert script.main(argv) == 1  # reported, the rest (none here) classified
        err = capsys.readouterr().err
        assert err.count("\n") == 2 and message in err and "1 of 1 images could not be read" in err, err
    assert script.main([images[0], "--model", "vgg17"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no torchvision weights named 'vgg17'" in err, err
