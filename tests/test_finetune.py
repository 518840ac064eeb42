"""Transfer learning: --init-from a weights file or a pretrained name, a new fc8, and --freeze."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vgg_jax.model.vgg import VGG
from vgg_jax.training import finetune, rundir
from vgg_jax.training import step as train
from vgg_jax.weights import formats as weights
from vgg_jax.weights import resolve, zoo

TINY = dict(width_scale=1 / 16, fc_width=32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes that differ in brightness: dark and bright 40x40 images, train and val."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("val", 4)):
        for name, level in (("dark", 40), ("bright", 210)):
            os.makedirs(root / split / name)
            for index in range(count):
                pixels = np.clip(level + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A small 'ImageNet' A: 1,000 classes, saved as a .msgpack weights file."""
    model = VGG(config="A", num_classes=1000, **TINY)
    variables = model.init(jax.random.key(7), jnp.zeros((1, 32, 32, 3)))
    path = str(tmp_path_factory.mktemp("weights") / "a_imagenet.msgpack")
    weights.save(variables, path)
    return path, variables


def test_frozen_layers_get_no_optimizer_state():
    params = VGG(config="A", num_classes=10, **TINY).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))[
        "params"
    ]
    labels = finetune.param_labels("A", "pool5")(params)
    assert labels["conv5_2"]["kernel"] == "frozen" and labels["fc6"]["kernel"] == "train"
    frozen = train.paper_optimizer(1e-2, param_labels=finetune.param_labels("A", "pool5")).init(params)
    full = train.paper_optimizer(1e-2).init(params)

    def momentum(state):
        return [leaf for leaf in jax.tree.leaves(state) if np.ndim(leaf) > 0]

    # fc6-fc8 kernel + bias only
    assert len(momentum(frozen)) == 6 and len(momentum(full)) == len(jax.tree.leaves(params))
    assert finetune.frozen_layers("D", "relu2_2") == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]


def test_freeze_names_the_layers_it_takes():
    with pytest.raises(ValueError, match="not a layer of config A; choose one of conv1_1"):
        finetune.check_freeze("A", "pool9")
    with pytest.raises(ValueError, match="freezes every layer"):
        finetune.check_freeze("A", "fc8")
    assert (
        resolve.pretrained_spec("torchvision:vgg16")
        == ("torchvision", "vgg16")
        == resolve.pretrained_spec("vgg16")
    )
    assert resolve.pretrained_spec("keras:vgg16") == ("keras", "vgg16")
    assert resolve.pretrained_spec("runs/a") is None and resolve.pretrained_spec("C:/weights.pth") is None


def test_fine_tune_from_a_weights_file_with_the_features_frozen(tmp_path, folder, weights_file, capsys):
    """train.py --init-from FILE --freeze pool5 on an ImageFolder: frozen kernels bit-identical, new fc8,
    loss falls."""
    from vgg_jax.cli.train import main

    path, source = weights_file
    workdir = tmp_path / "run"
    argv = [
        "--config",
        "A",
        "--data",
        f"folder:{folder}",
        "--workers",
        "0",  # no worker start-up (the worker path has its own tests)
        "--image-size",
        "32",
        "--width-scale",
        str(TINY["width_scale"]),
        "--fc-width",
        "32",
        "--init-from",
        path,
        "--freeze",
        "pool5",
        "--epochs",
        "8",
        "--batch-size",
        "8",
        "--lr",
        "0.05",
        "--lr-policy",
        "cosine",
        "--init",
        "glorot",
        "--log-every",
        "1",
        "--workdir",
        str(workdir),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fc8: the source has 1000 classes, this run 2: initialised anew" in out
    _, state = rundir.restore_state(str(workdir), "test")
    params = state["params"]
    for name in ("conv1_1", "conv3_2", "conv5_2"):
        np.testing.assert_array_equal(params[name]["kernel"], source["params"][name]["kernel"])
        np.testing.assert_array_equal(params[name]["bias"], source["params"][name]["bias"])
    assert not np.array_equal(params["fc7"]["kernel"], source["params"]["fc7"]["kernel"])
    assert np.shape(params["fc8"]["kernel"]) == (32, 2)
    losses = [
        record["loss"] for record in map(json.loads, open(workdir / "metrics.jsonl")) if "loss" in record
    ]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_init_from_refuses_what_it_cannot_read(tmp_path, folder, capsys):
    from vgg_jax.cli.train import main

    common = [
        "--config",
        "A",
        "--data",
        f"folder:{folder}",
        "--workers",
        "0",  # no worker start-up (the worker path has its own tests)
        "--image-size",
        "32",
        "--width-scale",
        "0.0625",
        "--fc-width",
        "32",
    ]
    assert (
        main([*common, "--init-from", str(tmp_path / "nothing.bin"), "--workdir", str(tmp_path / "a")]) == 2
    )
    assert (
        "is not a published name (vgg16, keras:vgg16, timm:vgg16_bn), a weights file"
        in capsys.readouterr().err
    )
    assert main([*common, "--freeze", "pool7", "--workdir", str(tmp_path / "b")]) == 2
    assert "--freeze 'pool7' is not a layer of config A" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pretrained_pixel_conventions_match_preprocess():
    """The loader's numpy normalisation equals vgg_jax.preprocess, and a pretrained name picks its own."""
    from vgg_jax.training.data import normalize_pixels

    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    for mode in ("torch", "caffe"):
        np.testing.assert_allclose(
            normalize_pixels(image.astype(np.float32), mode),
            weights.preprocess(image[None], mode)[0],
            rtol=1e-5,
            atol=1e-4,
        )
    assert zoo.weights_info(*reversed(resolve.pretrained_spec("torchvision:vgg16"))).preprocess == "torch"
    assert zoo.weights_info(*reversed(resolve.pretrained_spec("keras:vgg19"))).preprocess == "caffe"
