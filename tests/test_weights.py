"""Weights from torchvision and Keras: equivalence with the real peers, round trips, strict errors."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, random_images, tiny_vgg

import vgg_jax
from vgg_jax import VGG
from vgg_jax.util import images as images_lib
from vgg_jax.weights import formats as weights
from vgg_jax.weights import keras_format, layout, torchvision_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("KERAS_BACKEND", "jax")


def relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def uint8_images(count=2, size=224, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


# Keras: light enough (JAX backend) that CI runs it.


@pytest.fixture(scope="module")
def keras_vgg16(tmp_path_factory):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip(f"Keras runs on {keras.backend.backend()}, not JAX")
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, classifier_activation=None)
    directory = tmp_path_factory.mktemp("keras")
    model.save_weights(str(directory / "vgg16.weights.h5"))  # Keras 3's format
    model.save(str(directory / "vgg16_legacy.h5"))  # Keras 2's HDF5 layout
    return keras, model, directory


@pytest.mark.parametrize("file_name", ["vgg16.weights.h5", "vgg16_legacy.h5"])
def test_keras_vgg16_equivalence(keras_vgg16, file_name):
    keras, model, directory = keras_vgg16
    variables = vgg_jax.load(str(directory / file_name), "vgg16")
    images = uint8_images()
    theirs_input = keras.applications.vgg16.preprocess_input(images.astype(np.float32))
    ours_input = vgg_jax.preprocess(images, "caffe")
    np.testing.assert_array_equal(np.asarray(ours_input), theirs_input)  # the same mode, exactly
    ours = VGG(config="D").apply(variables, ours_input)
    theirs = np.asarray(model(theirs_input))
    assert relative_error(ours, theirs) < 1e-5
    assert (np.argsort(-np.asarray(ours))[:, :5] == np.argsort(-theirs)[:, :5]).all()
    probe = keras.Model(
        model.input, [model.get_layer("block1_conv2").output, model.get_layer("block4_conv3").output]
    )
    relu1_2, relu4_3 = probe(theirs_input)
    features = VGG(config="D").apply(
        variables, ours_input, layers=("relu1_2", "relu4_3"), method=VGG.features
    )
    assert relative_error(features["relu1_2"], relu1_2) < 1e-5
    assert relative_error(features["relu4_3"], relu4_3) < 1e-5


def test_keras_vgg19_equivalence(keras_vgg16, tmp_path):
    keras, _, _ = keras_vgg16
    keras.utils.set_random_seed(1)
    model = keras.applications.VGG19(weights=None, classifier_activation=None)
    model.save_weights(str(tmp_path / "vgg19.weights.h5"))
    variables = vgg_jax.load(str(tmp_path / "vgg19.weights.h5"), "vgg19")
    images = uint8_images(1, seed=3)
    theirs = np.asarray(model(keras.applications.vgg19.preprocess_input(images.astype(np.float32))))
    ours = VGG(config="E").apply(variables, vgg_jax.preprocess(images, "caffe"))
    assert relative_error(ours, theirs) < 1e-5


def test_keras_no_top_loads_the_convs_and_says_so(keras_vgg16, tmp_path):
    keras, _, _ = keras_vgg16
    keras.applications.VGG16(weights=None, include_top=False).save_weights(str(tmp_path / "notop.weights.h5"))
    with pytest.warns(UserWarning, match="no classifier.*conv layers only"):
        variables = keras_format.from_keras(str(tmp_path / "notop.weights.h5"), "D")
    assert set(variables["params"]) == {name for name, _, _ in vgg_jax.model.configs.conv_layers("D")}
    features = VGG(config="D").apply(
        variables, random_images((1, 64, 64, 3)), layers="pool5", method=VGG.features
    )
    assert features["pool5"].shape == (1, 2, 2, 512)


def test_keras_file_for_the_wrong_config_suggests_the_right_one(keras_vgg16):
    _, _, directory = keras_vgg16
    with pytest.raises(ValueError, match=r"missing: conv5_4(.|\n)*it is Keras's VGG16: pass config='D'"):
        keras_format.from_keras(str(directory / "vgg16.weights.h5"), "E")
    with pytest.raises(ValueError, match="predictions layer has 1000 classes, not 10"):
        keras_format.from_keras(str(directory / "vgg16.weights.h5"), "D", num_classes=10)


# torchvision: heavy, so run where it is installed (pip here serves it from local files).

TORCH_CASES = [("vgg11", "A", False), ("vgg16", "D", False), ("vgg16_bn", "D", True)]
SLOW_TORCH_CASES = [
    ("vgg13", "B", False),
    ("vgg19", "E", False),
    ("vgg11_bn", "A", True),
    ("vgg13_bn", "B", True),
    ("vgg19_bn", "E", True),
]


def torchvision_case(name, config, batch_norm, tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    if batch_norm:  # non-trivial running statistics, so that eval BN is really tested
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    variables = vgg_jax.load(str(path), config)
    images = uint8_images(1)
    ours_input = vgg_jax.preprocess(images, "torch")
    theirs_input = torchvision.transforms.Normalize(images_lib.TORCH_MEAN, images_lib.TORCH_STD)(
        torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    )
    np.testing.assert_allclose(
        np.asarray(ours_input), theirs_input.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-6
    )
    ours_model = VGG(config=config, batch_norm=batch_norm)
    with torch.no_grad():
        theirs = model(theirs_input).numpy()
    ours = ours_model.apply(variables, ours_input)
    assert relative_error(ours, theirs) < 1e-5
    assert (np.argsort(-np.asarray(ours))[:, :5] == np.argsort(-theirs)[:, :5]).all()
    # Intermediate features: the first block's last ReLU and the fourth's.
    convs = [n for n, _, _ in vgg_jax.model.configs.conv_layers(config)]
    prefixes = dict(
        (ours_name, prefix) for prefix, ours_name in torchvision_format._torchvision_names(config, batch_norm)
    )
    for layer in (
        [n for n in convs if n.startswith("conv1_")][-1],
        [n for n in convs if n.startswith("conv4_")][-1],
    ):
        index = int(prefixes[layer].split(".")[1]) + (2 if batch_norm else 1)
        with torch.no_grad():
            theirs_feature = model.features[: index + 1](theirs_input).permute(0, 2, 3, 1).numpy()
        relu = "relu" + layer[4:]
        ours_feature = ours_model.apply(variables, ours_input, layers=relu, method=VGG.features)[relu]
        assert relative_error(ours_feature, theirs_feature) < 1e-5, relu
    # The exact inverse: back into torchvision, strictly, and round trip bit for bit.
    state = torchvision_format.to_torchvision(variables, config)
    model.load_state_dict(
        {key: torch.from_numpy(np.array(value)) for key, value in state.items()}, strict=True
    )
    again = torchvision_format.from_torchvision(state, config, batch_norm=batch_norm)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), again, variables))


@pytest.mark.parametrize("name, config, batch_norm", TORCH_CASES)
def test_torchvision_equivalence(name, config, batch_norm, tmp_path):
    torchvision_case(name, config, batch_norm, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name, config, batch_norm", SLOW_TORCH_CASES)
def test_torchvision_equivalence_other_variants(name, config, batch_norm, tmp_path):
    torchvision_case(name, config, batch_norm, tmp_path)


# Without a peer: round trips, formats and every error, on tiny models.


@pytest.fixture(scope="module")
def tiny_d_state():
    """VGG-16's convolutions at full width (torchvision's layout fixes them) with fc layers 32 wide (the
    loaders read fc7's width from the file): 15.5M parameters instead of 138M."""
    variables = jax.jit(VGG(config="D", batch_norm=False, fc_width=32).init)(
        jax.random.key(0), jnp.zeros((1, 224, 224, 3))
    )
    return variables, torchvision_format.to_torchvision(variables, "D")


def test_round_trip_is_bit_for_bit_without_torch(tiny_d_state):
    variables, state = tiny_d_state
    assert state["classifier.0.weight"].shape == (32, 25088) and state["features.0.weight"].shape == (
        64,
        3,
        3,
        3,
    )
    again = torchvision_format.from_torchvision(state, "D")
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), again, variables))


def test_fc6_rows_are_permuted_from_chw_to_hwc():
    weight = np.arange(2 * 3 * 7 * 7, dtype=np.float32).reshape(2, 3 * 7 * 7)  # (out, C*H*W), C=3
    kernel = torchvision_format._fc6_from_torch(weight)
    c, h, w = 1, 2, 5
    assert kernel[(h * 7 + w) * 3 + c, 1] == weight[1, c * 49 + h * 7 + w]
    np.testing.assert_array_equal(torchvision_format._fc6_to_torch(kernel), weight)


def test_wrong_config_bn_and_classes_name_the_problem(tiny_d_state):
    _, state = tiny_d_state
    with pytest.raises(
        ValueError,
        match=r"missing: features\.34\.weight(.|\n)*torchvision's vgg16: pass config='D', batch_norm=False",
    ):
        torchvision_format.from_torchvision(state, "E")
    with pytest.raises(ValueError, match="pass config='D', batch_norm=False"):
        torchvision_format.from_torchvision(state, "D", batch_norm=True)
    with pytest.raises(
        ValueError,
        match=r"wrong shape: classifier\.6\.weight: expected \(10, 32\), file has \(1000, "
        r"32\)(.|\n)*pass num_classes=1000",
    ):
        torchvision_format.from_torchvision(state, "D", num_classes=10)
    with pytest.raises(ValueError, match="torchvision has no config C"):
        torchvision_format.from_torchvision(state, "C")
    partial, report = torchvision_format.convert_torchvision(state, "E")
    assert "features.34.weight" in report.missing and not report.ok
    with pytest.warns(layout.LoadWarning, match="missing: features.34.weight"):
        variables = torchvision_format.from_torchvision(state, "E", strict=False)
    assert jax.tree.all(jax.tree.map(np.array_equal, variables, partial))
    bn_state = {**state, "features.1.running_mean": np.zeros(64, np.float32)}
    with pytest.raises(
        ValueError,
        match="unexpected: features.1.running_mean(.|\n)*vgg16_bn: pass config='D', batch_norm=True",
    ):
        torchvision_format.from_torchvision(bn_state, "D")


def test_save_and_load_our_formats(tmp_path):
    model = tiny_vgg("C")
    variables = jax.jit(model.init)(jax.random.key(0), random_images((1, 32, 32, 3)))
    for name in ("v.msgpack", "v.safetensors", "orbax_dir"):
        path = str(tmp_path / name)
        weights.save(variables, path)
        loaded = vgg_jax.load(path, "C")
        assert jax.tree.all(
            jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), loaded, jax.device_get(variables))
        )
        with pytest.raises(ValueError, match="already exists"):
            weights.save(variables, path)
    with pytest.raises(ValueError, match="missing: conv3_4"):
        vgg_jax.load(str(tmp_path / "v.msgpack"), "E")


def test_bad_files_get_clear_errors(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    (tmp_path / "notes.h5").write_text("not hdf5")
    (tmp_path / "cut.msgpack").write_bytes(b"\x82\xa6params\x81")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00")
    (tmp_path / "model.onnx").write_text("?")
    with pytest.raises(ValueError, match="does not exist"):
        vgg_jax.load(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        vgg_jax.load(str(tmp_path / "notes.h5"))
    with pytest.raises(ValueError, match="not a readable Flax msgpack file|holds no 'params'"):
        vgg_jax.load(str(tmp_path / "cut.msgpack"))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        vgg_jax.load(str(tmp_path / "cut.safetensors"))
    with pytest.raises(ValueError, match="cannot tell the format"):
        vgg_jax.load(str(tmp_path / "model.onnx"))
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="not a readable torch file"):
        vgg_jax.load(str(tmp_path / "notes.pth"))


def test_preprocess_modes():
    images = np.array([[[[0, 128, 255]]]], np.uint8)
    floats = images.astype(np.float32) / 255
    torch_mode = np.asarray(vgg_jax.preprocess(images, "torch"))[0, 0, 0]
    np.testing.assert_allclose(
        torch_mode, (floats[0, 0, 0] - images_lib.TORCH_MEAN) / images_lib.TORCH_STD, rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(vgg_jax.preprocess(floats, "torch")),
        np.asarray(vgg_jax.preprocess(images, "torch")),
        atol=1e-6,
    )
    caffe = np.asarray(vgg_jax.preprocess(images, "caffe"))[0, 0, 0]
    np.testing.assert_allclose(caffe, [255 - 103.939, 128 - 116.779, 0 - 123.68], rtol=1e-6)
    paper = np.asarray(vgg_jax.preprocess(images, "paper", mean_rgb=(1, 2, 3)))[0, 0, 0]
    np.testing.assert_array_equal(paper, [-1, 126, 252])
    with pytest.raises(ValueError, match="needs mean_rgb"):
        vgg_jax.preprocess(images, "paper")
    with pytest.raises(ValueError, match="unknown preprocess mode"):
        vgg_jax.preprocess(images, "tf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        vgg_jax.preprocess(np.full((1, 2, 2, 3), np.nan, np.float32), "torch")
    with pytest.raises(TypeError, match="uint8 .* or float"):
        vgg_jax.preprocess(images.astype(np.int32), "torch")
    with pytest.raises(ValueError, match=r"RGB NHWC"):
        vgg_jax.preprocess(images[0], "torch")


def test_perceptual_loss_and_its_gradient():
    model = tiny_vgg("D")
    variables = jax.jit(model.init)(jax.random.key(0), random_images((1, 32, 32, 3)))
    x, y = random_images((2, 32, 32, 3), seed=1), random_images((2, 32, 32, 3), seed=2)
    loss = vgg_jax.perceptual_loss(variables, x, y, layers=("relu1_2", "relu3_3"), weights=(1.0, 2.0))
    feats_x = model.apply(variables, x, layers=("relu1_2", "relu3_3"), method=VGG.features)
    feats_y = model.apply(variables, y, layers=("relu1_2", "relu3_3"), method=VGG.features)
    expected = jnp.mean((feats_x["relu1_2"] - feats_y["relu1_2"]) ** 2) + 2 * jnp.mean(
        (feats_x["relu3_3"] - feats_y["relu3_3"]) ** 2
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(vgg_jax.perceptual_loss(variables, x, x)) == 0.0
    grads = jax.grad(lambda image: vgg_jax.perceptual_loss(variables, image, y))(x)
    assert grads.shape == x.shape and bool(jnp.all(jnp.isfinite(grads))) and float(jnp.abs(grads).max()) > 0
    with pytest.raises(ValueError, match="weights has 1 entries for 4 layers"):
        vgg_jax.perceptual_loss(variables, x, y, weights=(1.0,))
    assert vgg_jax.model.infer_model(variables).config == "D"
    assert vgg_jax.model.infer_model(variables).width_scale == TINY["width_scale"]


def test_convert_weights_cli(tmp_path):
    variables = jax.jit(tiny_vgg("A").init)(jax.random.key(0), random_images((1, 32, 32, 3)))
    weights.save(variables, str(tmp_path / "a.msgpack"))
    script = os.path.join(ROOT, "scripts", "convert_weights.py")
    done = subprocess.run(
        [sys.executable, script, str(tmp_path / "a.msgpack"), str(tmp_path / "a_orbax"), "--config", "vgg11"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "config A, " in done.stdout and " parameters" in done.stdout
    assert jax.tree.all(
        jax.tree.map(
            lambda a, b: bool(np.array_equal(a, b)),
            vgg_jax.load(str(tmp_path / "a_orbax"), "A"),
            jax.device_get(variables),
        )
    )
    again = subprocess.run(
        [sys.executable, script, str(tmp_path / "a.msgpack"), str(tmp_path / "a_orbax"), "--config", "A"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    wrong = subprocess.run(
        [sys.executable, script, str(tmp_path / "a.msgpack"), str(tmp_path / "b.msgpack"), "--config", "D"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        wrong.returncode == 2
        and "does not match the model" in wrong.stderr
        and not (tmp_path / "b.msgpack").exists()
    )
    # the report, on one line
    assert wrong.stderr.count("\n") == 1 and "(missing: conv1_2; missing: conv2_2;" in wrong.stderr


def test_timm_layout_loads_like_torchvision_without_torch(tiny_d_state, tmp_path):
    """timm republished torchvision's weights as .safetensors with fc6 as a 7x7 conv (`pre_logits.fc1`), fc7
    as a
    1x1 conv and fc8 as `head.fc`; they load bit for bit like the torchvision file, with safetensors alone."""
    from safetensors.numpy import save_file

    variables, state = tiny_d_state
    # the layout timm's checkpoint filter writes (classifier.0 -> pre_logits.fc1, reshaped to 512x7x7)
    timm = {}
    for key, value in state.items():
        key = (
            key.replace("classifier.0", "pre_logits.fc1")
            .replace("classifier.3", "pre_logits.fc2")
            .replace("classifier.6", "head.fc")
        )
        if key == "pre_logits.fc1.weight":
            value = value.reshape(-1, 512, 7, 7)
        elif key == "pre_logits.fc2.weight":
            value = value.reshape(-1, value.shape[1], 1, 1)
        timm[key] = np.ascontiguousarray(value)
    assert torchvision_format.is_timm_state(timm) and not torchvision_format.is_timm_state(state)
    save_file(timm, str(tmp_path / "model.safetensors"))
    loaded = weights.load(str(tmp_path / "model.safetensors"), "vgg16")
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), loaded, variables))
    with pytest.raises(ValueError, match="pass config='D'"):
        weights.load(str(tmp_path / "model.safetensors"), "E")


def test_float_0_255_images_give_keras_numbers_with_scale_or_a_clear_error():
    """Keras users pass float 0-255 images: refused as [0, 1] floats (they used to give values up to 65,000),
    and
    with scale=255 equal to keras.applications.vgg16.preprocess_input to the bit."""
    keras_vgg16 = pytest.importorskip("keras.applications.vgg16")
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    with pytest.raises(
        ValueError,
        match=r"float images in \[0, 1\], got values from .* to 25\d\.\d+: pass uint8 .* scale=255",
    ):
        vgg_jax.preprocess(images, "caffe")
    ours = np.asarray(vgg_jax.preprocess(images, "caffe", scale=255))
    np.testing.assert_array_equal(ours, keras_vgg16.preprocess_input(images.copy()))
    np.testing.assert_allclose(
        np.asarray(vgg_jax.preprocess(images, "torch", scale=255)),
        np.asarray(vgg_jax.preprocess(images / 255, "torch")),
        rtol=1e-6,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match=r"values from -1 to 1"):  # [-1, 1] images too
        vgg_jax.preprocess(np.linspace(-1, 1, 2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3), "torch")
    with pytest.raises(ValueError, match="scale must be a positive number"):
        vgg_jax.preprocess(images, "caffe", scale=0)
    # under jit the contract is the caller's
    traced = jax.jit(lambda x: vgg_jax.preprocess(x, "caffe"))(images)
    assert traced.shape == images.shape


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask_as_cp_does(tmp_path, umask):
    """Atomic writes go through a private temporary file; the result still gets 0666 less the umask."""
    variables = jax.jit(tiny_vgg("A").init)(jax.random.key(0), random_images((1, 32, 32, 3)))
    previous = os.umask(umask)
    try:
        for name in ("a.msgpack", "a.safetensors"):
            weights.save(variables, str(tmp_path / name))
            assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name
    finally:
        os.umask(previous)
