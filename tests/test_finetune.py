"""Transfer learning: --init-from a weights file or a pretrained name, a new fc8, and --freeze."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vgg_jax.model.configs import frozen_layers
from vgg_jax.model.vgg import VGG, ModelConfig
from vgg_jax.training import finetune
from vgg_jax.training import step as train
from vgg_jax.training.config import TrainConfig, validate
from vgg_jax.util import images as images_lib
from vgg_jax.weights import formats as weights
from vgg_jax.weights import resolve, runs, zoo

TINY = dict(width_scale=1 / 16, fc_width=32, init_scheme="glorot")  # as conftest's


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
    assert frozen_layers("D", "relu2_2") == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]


def test_freeze_names_the_layers_it_takes():
    """One rule, `configs.frozen_layers`, which the model applies and a run's validation reaches."""
    with pytest.raises(ValueError, match="not a layer of config A; choose one of conv1_1"):
        validate(TrainConfig(workdir="w", config="A", model=ModelConfig(freeze="pool9")))
    with pytest.raises(ValueError, match="freezes every layer"):
        VGG(config="A", freeze="fc8")
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
    _, state = runs.restore_state(str(workdir), "test")
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
    from vgg_jax.util.images import normalize_pixels

    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    for mode in ("torch", "caffe"):
        np.testing.assert_allclose(
            normalize_pixels(image.astype(np.float32), mode),
            images_lib.preprocess(image[None], mode)[0],
            rtol=1e-5,
            atol=1e-4,
        )
    assert zoo.weights_info(*reversed(resolve.pretrained_spec("torchvision:vgg16"))).preprocess == "torch"
    assert zoo.weights_info(*reversed(resolve.pretrained_spec("keras:vgg19"))).preprocess == "caffe"


# ------------------------------------------------------------------ --init-from reads the source's widths

NARROW = dict(width_scale=1 / 8, fc_width=64)  # another width than the tests' usual 1/16 and 32


@pytest.fixture(scope="module")
def narrow_a_file(tmp_path_factory):
    """A run of config A at width 1/8 and fc 64, exported as convert_weights.py writes it (its metadata)."""
    variables = jax.jit(VGG(config="A", num_classes=2, **NARROW).init)(
        jax.random.key(5), jnp.zeros((1, 32, 32, 3))
    )
    variables = jax.tree.map(lambda leaf: leaf + 0.25, variables)  # a copy is told apart from a fresh init
    path = str(tmp_path_factory.mktemp("narrow") / "tiny.msgpack")
    metadata = {"config": "A", "preprocess": "paper", "mean_rgb": [120.0, 120.0, 120.0], "image_size": 32}
    weights.save(variables, path, metadata=metadata)
    return path, variables


def finetune_argv(folder, path, workdir, *extra):
    return [
        "--config",
        "A",
        "--data",
        f"folder:{folder}",
        "--workers",
        "0",
        "--image-size",
        "32",
        "--init-from",
        path,
        "--freeze",
        "pool5",
        "--max-steps",
        "1",
        "--batch-size",
        "8",
        "--workdir",
        str(workdir),
        *extra,
    ]


def test_init_from_a_file_of_other_widths_takes_its_widths(tmp_path, folder, narrow_a_file, capsys):
    """No width flags given: the run is built at the file's widths and every layer but fc8 is copied."""
    from vgg_jax.cli.train import main

    path, source = narrow_a_file
    workdir = tmp_path / "run"
    assert main(finetune_argv(folder, path, workdir)) == 0
    out = capsys.readouterr().out
    assert "copied from A: (none)" not in out
    assert "copied from A: conv1_1, conv2_1, conv3_1, conv3_2, conv4_1, conv4_2, conv5_1, conv5_2" in out
    saved = json.load(open(workdir / "config.json"))
    assert (
        saved["model"]["width_scale"] == NARROW["width_scale"]
        and saved["model"]["fc_width"] == NARROW["fc_width"]
    )
    _, state = runs.restore_state(str(workdir), "test")
    for name in ("conv1_1", "conv5_2"):  # frozen: still the file's, bit for bit
        np.testing.assert_array_equal(state["params"][name]["kernel"], source["params"][name]["kernel"])


def test_init_from_with_other_widths_given_names_the_layer_and_both_shapes(
    tmp_path, folder, narrow_a_file, capsys
):
    from vgg_jax.cli.train import main

    path, _ = narrow_a_file
    workdir = tmp_path / "run"
    assert main(finetune_argv(folder, path, workdir, "--width-scale", "0.0625", "--fc-width", "64")) == 2
    err = capsys.readouterr().err
    assert "layer conv1_1 has shapes" in err and "(3, 3, 3, 8)" in err and "(3, 3, 3, 4)" in err
    assert "--width-scale" in err and not workdir.exists()


def test_warm_start_reads_the_source_widths_and_refuses_to_copy_nothing(narrow_a_file):
    from vgg_jax.research.warm_start import LayerShapeError, warm_start

    _, source = narrow_a_file
    target, report = warm_start(source, "A", "A", jax.random.key(0), num_classes=2)
    assert report.copied == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8"]
    _, report = warm_start(source, "A", "A", jax.random.key(0), layers="matching")
    assert report.copied == list(source["params"])
    np.testing.assert_array_equal(target["params"]["fc7"]["kernel"], source["params"]["fc7"]["kernel"])
    with pytest.raises(
        LayerShapeError, match=r"layer conv1_1 has shapes .*\(3, 3, 3, 8\).* but .*\(3, 3, 3, 4\)"
    ):
        warm_start(source, "A", "A", jax.random.key(0), num_classes=2, width_scale=1 / 16)
    with pytest.raises(ValueError, match="would copy no layer"):
        warm_start(source, "A", "A", jax.random.key(0), layers=[])


def test_load_reads_the_files_own_config(narrow_a_file, tmp_path):
    import vgg_jax

    path, source = narrow_a_file
    assert set(vgg_jax.load(path)["params"]) == set(source["params"])  # config A, not D
    bare = str(tmp_path / "bare.msgpack")  # no metadata: the layer names say A
    weights.save(source, bare)
    assert set(vgg_jax.load(bare)["params"]) == set(source["params"])
