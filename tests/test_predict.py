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
TINY_IMAGENET = dict(width_scale=1 / 16, fc_width=32, num_classes=1000, init_scheme="glorot")


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


def test_a_folder_is_its_images_sorted_and_embed_writes_fc7_after_its_relu(
    weights_file, images, tmp_path, capsys
):
    path, model, variables = weights_file
    folder = os.path.dirname(images[0])
    (tmp_path / "empty").mkdir()
    script = load_script()
    assert script.main([folder, "--model", path, "--json"]) == 0
    assert [r["image"] for r in json.loads(capsys.readouterr().out)] == sorted(images)  # one level, sorted
    assert script.main([str(tmp_path / "empty"), "--model", path]) == 2
    assert "holds no image files" in capsys.readouterr().err

    out = tmp_path / "emb.npy"
    assert script.main([folder, "--model", path, "--embed", str(out)]) == 0
    embeddings = np.load(out)
    rows = (tmp_path / "emb.images.txt").read_text().splitlines()
    assert rows == sorted(images) and embeddings.shape == (2, TINY_IMAGENET["fc_width"])
    views = np.stack([predict.centre_view(predict.read_image(p), 32) for p in rows])
    pixels = vgg_jax.preprocess(views, "torch")
    fc7 = model.apply(variables, pixels, layers="fc7", method=vgg_jax.VGG.features)["fc7"]
    np.testing.assert_allclose(embeddings, np.maximum(fc7, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.apply(variables, pixels, method=vgg_jax.VGG.embed), embeddings, rtol=1e-5, atol=1e-6
    )
    assert script.main([folder, "--model", path, "--embed", str(out)]) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err


def test_the_serving_export_runs_without_vgg_jax_and_matches_predict(weights_file, images, tmp_path, capsys):
    """convert_weights.py --serve: a jax.export artifact that a fresh process, which never imports vgg_jax,
    runs on uint8 crops to the probabilities predict.py prints for the same images."""
    import subprocess
    import sys

    from vgg_jax.cli import convert_weights

    path, _, _ = weights_file
    out = tmp_path / "tiny.jax"
    assert convert_weights.main([path, "--serve", str(out), "--config", "A"]) == 0
    assert "uint8 RGB images (batch, 32, 32, 3)" in capsys.readouterr().out
    described = json.loads((tmp_path / "tiny.jax.json").read_text())
    assert described["image_size"] == 32 and described["preprocess"] == "torch"
    assert len(described["classes"]) == 1000 and set(described["platforms"]) == {"cpu", "cuda"}

    crops = np.stack([predict.centre_view(predict.read_image(p), 32) for p in images])  # the client's job
    np.save(tmp_path / "crops.npy", crops)
    client = (
        "import sys, jax, numpy as np\n"
        "exported = jax.export.deserialize(open(sys.argv[1], 'rb').read())\n"
        "crops = np.load(sys.argv[2])\n"
        "np.save(sys.argv[3], np.asarray(exported.call(crops[:1])))\n"  # any batch size: 1, then 2
        "np.save(sys.argv[4], np.asarray(exported.call(crops)))\n"
        "assert not [name for name in sys.modules if name.startswith('vgg_jax')]\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            client,
            str(out),
            *(str(tmp_path / n) for n in ("crops.npy", "one.npy", "two.npy")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the repository: vgg_jax is not on the path by accident
    )
    assert done.returncode == 0, done.stderr[-2000:]
    served = np.load(tmp_path / "two.npy")
    np.testing.assert_allclose(np.load(tmp_path / "one.npy")[0], served[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, rtol=1e-5)

    assert load_script().main([*images, "--model", path, "--config", "A", "--json", "--top", "5"]) == 0
    for row, result in zip(served, json.loads(capsys.readouterr().out)):
        for best in result["top"]:
            assert row[best["index"]] == pytest.approx(best["probability"], rel=1e-5, abs=1e-7)
    assert convert_weights.main([path, "--serve", str(out), "--config", "A"]) == 2  # never replaced
    assert "already exists" in capsys.readouterr().err
