"""The fine-tuning path a new user walks, as the README gives it, and the faults they met (one test per
fault).

A folder of small, large, grayscale, 16-bit and broken images; fine-tune;
Ctrl-C; the printed resume command; evaluate; export; predict with the
export. Tiny widths and 32-pixel crops keep it to seconds.
"""

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import warnings
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import vgg_jax
from vgg_jax.model.vgg import VGG
from vgg_jax.training import data, evaluate, evaluate_model, loop, sources
from vgg_jax.util import images
from vgg_jax.weights import formats as weights
from vgg_jax.weights import resolve, runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
TINY = dict(width_scale=1 / 16, fc_width=32, init_scheme="glorot")  # as conftest's
TINY_FLAGS = ["--width-scale", "0.0625", "--fc-width", "32"]


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (grey for (H, W), RGB for (H, W, 3)), written by hand: Pillow cannot write 16-bit RGB."""
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    """train/ and val/ of two classes: images under and over the 32-pixel crop, grey, 16-bit grey and RGB,
    one broken."""
    root = tmp_path_factory.mktemp("messy")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for name, level in (("cat", 50), ("dog", 200)):
            folder = root / split / name
            os.makedirs(folder)
            for index in range(count):
                height, width = ((20, 27), (70, 45), (33, 90), (40, 40))[index]
                Image.fromarray(
                    np.clip(level + rng.normal(0, 15, (height, width, 3)), 0, 255).astype(np.uint8)
                ).save(folder / f"{index}.png")
            if split == "train":
                Image.fromarray(np.full((30, 50), level, np.uint8)).save(folder / "grey.jpg")
                (folder / "deep.png").write_bytes(png16(np.full((36, 36), level * 257, np.uint16)))
                (folder / "deep_rgb.png").write_bytes(png16(np.full((28, 44, 3), level * 257, np.uint16)))
                (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg at all")
    return root


# ----------------------------------------------------------------------------- the whole path, as the README
# gives it


def test_fine_tune_ctrl_c_resume_evaluate_export_and_predict(messy_folder, tmp_path, monkeypatch, capsys):
    """Items 2, 5 and 6: the printed resume command finishes the run as started; the run exports and
    predicts by name."""
    from vgg_jax.cli.convert_weights import main as convert
    from vgg_jax.cli.evaluate import main as evaluate_cli
    from vgg_jax.cli.predict import main as predict
    from vgg_jax.cli.train import main as train

    # "ImageNet" weights, Keras pixels
    pretrained = VGG("A", num_classes=1000, **TINY).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    weights.save(
        pretrained, str(tmp_path / "imagenet_a.msgpack"), metadata={"config": "A", "preprocess": "caffe"}
    )
    workdir = tmp_path / "finetune"
    argv = [
        "--config",
        "A",
        "--data",
        f"folder:{messy_folder}",
        "--workers",
        "0",  # no worker start-up (the worker path has its own tests)
        "--image-size",
        "32",
        *TINY_FLAGS,
        "--init-from",
        str(tmp_path / "imagenet_a.msgpack"),
        "--freeze",
        "pool5",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "0.02",
        "--lr-policy",
        "cosine",
        "--log-every",
        "1",
        "--workdir",
        str(workdir),
    ]
    original = loop._log_window

    def ctrl_c_after_step_2(*args, **kwargs):  # the user presses Ctrl-C during step 3
        original(*args, **kwargs)
        if args[2] == 2:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(loop, "_log_window", ctrl_c_after_step_2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sources.DataWarning)  # the broken files, checked one line each below
        # images of 20x27 pixels under a 32-pixel crop train: the short side goes to the crop
        assert train(argv) == 130
    monkeypatch.setattr(loop, "_log_window", original)
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "stopped by SIGINT after step 2" in message and "Continue with: python " in message
    resume_argv = ["--workdir", *message.split(" --workdir ")[1].split()]
    saved = json.loads((workdir / "config.json").read_text())
    steps_per_epoch = len(data.load_data(f"folder:{messy_folder}", 32)[0]) // 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sources.DataWarning)
        assert train(resume_argv) == 0
    # nothing fell back to a default (epochs was 1)
    assert json.loads((workdir / "config.json").read_text()) == saved
    assert runs.finished_steps(str(workdir))[-1] == 3 * steps_per_epoch  # all three epochs, not one
    assert json.loads((workdir / "classes.json").read_text()) == ["cat", "dog"]

    capsys.readouterr()
    assert evaluate_cli([str(workdir), "--json", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 4

    # Export the run (the workdir, and a step folder by its state path), then predict with the export.
    assert convert([str(workdir), str(tmp_path / "ft.msgpack")]) == 0
    step = runs.finished_steps(str(workdir))[-1]
    assert convert([str(workdir / "checkpoints" / str(step) / "state"), str(tmp_path / "ft_step")]) == 0
    metadata = weights.read_metadata(str(tmp_path / "ft.msgpack"))
    assert (
        metadata["classes"] == ["cat", "dog"] and metadata["config"] == "A" and metadata["image_size"] == 32
    )
    # the init's pixels
    assert metadata["preprocess"] == "caffe" and metadata == weights.read_metadata(str(tmp_path / "ft_step"))
    capsys.readouterr()
    photos = [str(messy_folder / "val" / "dog" / "0.png"), str(messy_folder / "train" / "cat" / "deep.png")]
    assert predict([*photos, "--model", str(tmp_path / "ft.msgpack"), "--json", "--top", "2"]) == 0
    from_export = json.loads(capsys.readouterr().out)
    assert predict([*photos, "--model", str(workdir), "--json", "--top", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == from_export
    assert {best["name"] for result in from_export for best in result["top"]} == {"cat", "dog"}


def test_resume_takes_every_flag_not_given_from_the_run(messy_folder, tmp_path, capsys):
    """Item 2: `--resume` alone keeps the run's --epochs; a flag that would change the run is one line;
    --eval takes effect."""
    from vgg_jax.cli.train import main as train

    workdir = tmp_path / "run"
    argv = [
        "--config",
        "A",
        "--data",
        f"folder:{messy_folder}",
        "--workers",
        "0",  # no worker start-up (the worker path has its own tests)
        "--image-size",
        "32",
        "--scale",
        "40",
        *TINY_FLAGS,
        "--epochs",
        "2",
        "--max-steps",
        "3",
        "--batch-size",
        "4",
        "--workdir",
        str(workdir),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sources.DataWarning)
        assert train(argv) == 0
        capsys.readouterr()
        assert train(["--workdir", str(workdir), "--resume", "--config", "B"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--resume: --config B differs from the run's A" in err
        assert train(["--workdir", str(workdir), "--resume", "--fc-width", "64"]) == 2  # the model's own
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--resume: --fc-width 64 differs from the run's 32" in err
        resumed = ["--workdir", str(workdir), "--resume", "--max-steps", "6", "--eval", "dense"]
        assert train([*resumed, "--pool-impl", "reduce_window"]) == 0  # a model switch that may change
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["pool_impl"] == "reduce_window" and saved["model"]["fc_width"] == 32
    assert (saved["epochs"], saved["max_steps"], saved["eval_method"], saved["scale"]) == (
        2,
        6,
        "dense",
        [40],
    )
    assert runs.finished_steps(str(workdir))[-1] == 6  # two epochs of 4 steps hold six
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [record for record in records if "eval" in record][-1]["eval"]["method"] == "dense"
    assert max(record.get("skipped_images", 0) for record in records) >= 1  # the broken file, counted


# ----------------------------------------------------------------------------- 1: files placed in the cache


def test_a_file_placed_in_the_cache_is_verified_and_a_stale_converted_copy_is_not_used(tmp_path, monkeypatch):
    from vgg_jax.weights import hub, zoo

    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    good = VGG("A", num_classes=10, **TINY).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    weights.save(good, str(tmp_path / "good.safetensors"))
    body = (tmp_path / "good.safetensors").read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    file = f"tiny-{digest[:8]}.safetensors"
    entry = zoo.Weights(
        "tiny",
        "torchvision",
        "A",
        False,
        f"http://127.0.0.1:9/models/{file}",
        digest[:8],
        None,
        None,
        None,
        "torch",
        "test",
    )
    monkeypatch.setitem(zoo.WEIGHTS, ("tiny", "torchvision"), entry)
    os.makedirs(tmp_path / "cache")
    placed = tmp_path / "cache" / file

    other = VGG("A", num_classes=10, **TINY).init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
    weights.save(other, str(tmp_path / "other.safetensors"))
    # a wrong file, placed by hand (nothing listens at port 9)
    placed.write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(hub.HashMismatch) as error:
        vgg_jax.pretrained("tiny", **TINY)
    actual = hashlib.sha256(placed.read_bytes()).hexdigest()
    assert f"sha256 of the file is {actual}, the published one is {digest[:8]}" in str(
        error.value
    ) and "\n" not in str(error.value)
    assert placed.exists()  # the user's file is named, not deleted

    # A converted copy left from another file (a stale cache) is not used: the placed, verified file is
    # converted again.
    weights.save(
        other, str(tmp_path / "cache" / f"{file}.vgg_jax.msgpack"), metadata={"source_sha256": "0" * 64}
    )
    placed.write_bytes(body)
    _, loaded = vgg_jax.pretrained("tiny", **TINY)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), loaded, jax.device_get(good)))
    assert (
        weights.read_metadata(str(tmp_path / "cache" / f"{file}.vgg_jax.msgpack"))["source_sha256"] == digest
    )
    # replaced after the conversion: refused, not the old copy
    placed.write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(hub.HashMismatch):
        vgg_jax.pretrained("tiny", **TINY)


# ----------------------------------------------------------------------------- 3: the pixel convention
# travels with the weights


def test_the_pixel_convention_travels_with_the_weights_and_is_never_guessed(tmp_path, capsys):
    from vgg_jax.cli.convert_weights import main as convert
    from vgg_jax.cli.predict import main as predict

    variables = VGG("A", num_classes=1000, **TINY).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    weights.save(
        variables, str(tmp_path / "keras_like.msgpack"), metadata={"preprocess": "caffe", "config": "A"}
    )
    assert convert([str(tmp_path / "keras_like.msgpack"), str(tmp_path / "converted.msgpack")]) == 0
    # kept through the conversion
    assert resolve.resolve(str(tmp_path / "converted.msgpack")).preprocess == "caffe"
    # overridable
    assert resolve.resolve(str(tmp_path / "converted.msgpack"), preprocess="torch").preprocess == "torch"

    weights.save(variables, str(tmp_path / "plain.msgpack"))  # says nothing
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(photo)
    capsys.readouterr()
    assert predict([str(photo), "--model", str(tmp_path / "plain.msgpack")]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "does not say which pixels its weights expect; pass --preprocess torch" in err
    )
    assert (
        predict([str(photo), "--model", str(tmp_path / "plain.msgpack"), "--preprocess", "caffe", "--json"])
        == 0
    )
    caffe = json.loads(capsys.readouterr().out)[0]["top"][0]
    assert predict([str(photo), "--model", str(tmp_path / "converted.msgpack"), "--json"]) == 0
    # the converted file's caffe, not torch by extension
    assert json.loads(capsys.readouterr().out)[0]["top"][0] == caffe


def test_a_published_file_kept_elsewhere_is_recognised_by_its_hash(tmp_path, monkeypatch):
    from vgg_jax.weights import zoo

    path = tmp_path / "vgg_published.pth"
    path.write_bytes(b"the published bytes")
    entry = zoo.Weights(
        "tiny",
        "keras",
        "D",
        False,
        "http://127.0.0.1:9/x.h5",
        None,
        hashlib.md5(path.read_bytes()).hexdigest(),
        None,
        None,
        "caffe",
        "test",
    )
    monkeypatch.setitem(zoo.WEIGHTS, ("tiny", "keras"), entry)
    assert resolve._published_entry(str(path)).preprocess == "caffe"
    path.write_bytes(b"other bytes")
    assert resolve._published_entry(str(path)) is None


# ----------------------------------------------------------------------------- 4: every image mode


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F", "RGB"])
def test_every_pillow_mode_reads_as_8_bit_rgb_scaled_not_clipped(mode):
    grey = np.array([[0, 64], [128, 255]], np.uint8)
    scaled = {
        "I;16": (grey.astype(np.uint16) * 257, "I;16"),
        "I": (grey.astype(np.int32) * 257, "I"),
        "F": (grey.astype(np.float32) / 255, "F"),
    }
    if mode in scaled:
        values, _ = scaled[mode]
        image = Image.fromarray(values)
        assert image.mode == mode
    else:
        image = Image.fromarray(grey).convert(mode)
    rgb = images.to_rgb8(image)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    expected = (grey >= 128) * 255 if mode == "1" else grey
    # lossy colour-space and palette round trips: within 2 levels
    tolerance = 2 if mode in ("CMYK", "YCbCr", "P") else 0
    assert np.abs(rgb.astype(int) - expected[..., None]).max() <= tolerance, (mode, rgb[..., 0])


def test_16_bit_pngs_and_out_of_range_floats_in_prediction_and_training(messy_folder, tmp_path):
    deep = images.read_image(str(messy_folder / "train" / "cat" / "deep.png"))  # Pillow's I;16
    # not white (255)
    assert Image.open(messy_folder / "train" / "cat" / "deep.png").mode == "I;16" and (deep == 50).all()
    deep_rgb = images.read_image(str(messy_folder / "train" / "dog" / "deep_rgb.png"))
    assert deep_rgb.shape == (28, 44, 3) and (deep_rgb == 200).all()
    source = sources.ImageFolderSource(str(messy_folder / "train"))
    index = source.files.index((str(messy_folder / "train" / "cat" / "deep.png"), 0))
    assert (source[index]["image"] == 50).all()
    with pytest.raises(ValueError, match=r"values from 0 to 255; float images are read as \[0, 1\]"):
        images.to_rgb8(Image.fromarray(np.array([[0.0, 255.0]], np.float32)))


# ----------------------------------------------------------------------------- 5 and 7: rescaling as the
# peers do


def test_training_images_under_the_crop_are_rescaled_to_it():
    out = data.TrainTransform(32).random_map(
        {"image": np.zeros((20, 27, 3), np.uint8), "label": 0}, np.random.default_rng(0)
    )
    assert out["image"].shape == (32, 32, 3)


def test_views_equal_torchvisions_for_torch_pixels_and_keras_for_caffe_on_odd_sizes(tmp_path):
    from make_resize_golden import CASES, image

    assert images.short_side_size(300, 451, 256) == (256, 384)  # torchvision truncates: int(256 * 451 / 300)
    with open(os.path.join(ROOT, "tests", "fixtures", "torchvision_views.json")) as file:
        golden = json.load(file)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    for height, width, resize, crop in CASES:
        source = image(height, width)
        view = np.ascontiguousarray(images.centre_view(source, crop, resize, "torch"))
        recorded = golden[f"{height}x{width}:{resize}:{crop}"]
        assert list(images.short_side_size(height, width, resize)) == recorded["resized"]
        # torchvision's bytes
        assert hashlib.sha256(view.tobytes()).hexdigest() == recorded["sha256"], (
            height,
            width,
        )
        Image.fromarray(source).save(tmp_path / "odd.png")
        theirs = np.asarray(
            keras.utils.load_img(
                str(tmp_path / "odd.png"),
                target_size=(resize, resize),
                keep_aspect_ratio=True,
                interpolation="bilinear",
            )
        )
        np.testing.assert_array_equal(images.square_view(source, resize, "keras"), theirs)


def test_views_equal_torchvisions_live_where_it_is_installed():
    transforms = pytest.importorskip("torchvision.transforms", reason="the live comparison needs torchvision")
    from make_resize_golden import CASES, image

    for height, width, resize, crop in CASES:
        theirs = np.asarray(
            transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop)])(
                Image.fromarray(image(height, width))
            )
        )
        np.testing.assert_array_equal(images.centre_view(image(height, width), crop, resize, "torch"), theirs)


# ----------------------------------------------------------------------------- 8: --freeze stops the gradient


def test_freeze_differentiates_nothing_below_the_freeze_point_and_keeps_frozen_bn_statistics():
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    flops = {}
    for freeze in (None, "pool5"):
        model = VGG("A", num_classes=10, batch_norm=True, freeze=freeze, **TINY)
        variables = model.init(jax.random.key(1), x)

        def loss(params):
            out, updates = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                train=True,
                rngs={"dropout": jax.random.key(2)},
                mutable=["batch_stats"],
            )
            return out.sum(), updates

        step = jax.jit(jax.grad(loss, has_aux=True))
        flops[freeze] = step.lower(variables["params"]).compile().cost_analysis()["flops"]
        grads, updates = step(variables["params"])
    assert (
        float(jnp.abs(grads["conv5_2"]["kernel"]).max()) == 0
        and float(jnp.abs(grads["fc6"]["kernel"]).max()) > 0
    )
    np.testing.assert_array_equal(
        updates["batch_stats"]["conv3_1_bn"]["mean"], variables["batch_stats"]["conv3_1_bn"]["mean"]
    )
    assert flops["pool5"] < 0.5 * flops[None]  # the backward pass below pool5 is gone, not zeroed
    with pytest.raises(ValueError, match="freeze .fc8. freezes every layer"):
        VGG("A", freeze="fc8")


# ----------------------------------------------------------------------------- 9, 12: evaluation


def test_evaluate_refuses_a_class_count_mismatch_and_maps_by_name(messy_folder, tmp_path, capsys):
    from vgg_jax.cli.evaluate import main as evaluate_cli

    variables = VGG("A", num_classes=1000, **TINY).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    weights.save(variables, str(tmp_path / "imagenet.msgpack"), metadata={"preprocess": "torch"})
    argv = [
        str(tmp_path / "imagenet.msgpack"),
        "--image-size",
        "32",
        "--data",
        f"folder:{messy_folder}",
        "--workers",
        "0",  # no worker start-up (the worker path has its own tests)
        "--json",
    ]
    assert evaluate_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has 1000 classes and the images 2" in err and "'cat', 'dog'" in err
    names = list(vgg_jax.class_names())
    named = tmp_path / "named"  # two ImageNet classes by their names: scored against the model's 1,000
    for name in (names[281], names[207]):  # tabby, golden retriever
        os.makedirs(named / name)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(named / name / "0.png")
    target = evaluate_model.open_target(str(tmp_path / "imagenet.msgpack"), crop_size=32)
    source = sources.ImageFolderSource(str(named))
    np.testing.assert_array_equal(
        evaluate_model.label_map(target, source), sorted([281, 207], key=lambda i: names[i])
    )


def test_multi_crop_progress_counts_views_in_pieces():
    model = VGG("A", num_classes=10, **TINY)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    source = sources.SyntheticSource(12, 32, 10)
    target = evaluate_model.Target(model, variables, "tiny", 32)
    seen, totals = [], []

    def progress(total):
        totals.append(total)
        return seen.append

    result = evaluate_model.run(target, source, "multi-crop", [32], batch_size=12, progress=progress)
    assert totals == [12 * 50] and sum(seen) == 12 * 50 and len(seen) > 1  # the bar moves within the batch
    assert result["count"] == 12 and evaluate.views_per_image("dense+multi-crop", [256, 384]) == 104


# ----------------------------------------------------------------------------- 10, 11, 13


def test_a_skipped_file_is_one_line_naming_it(messy_folder):
    """With the commands' warning format (an explicit call: importing the library sets nothing)."""
    code = (
        "import warnings; default = warnings.formatwarning; from vgg_jax.training import data, sources; "
        "assert warnings.formatwarning is default; sources.one_line_warnings(); "
        f"source = sources.ImageFolderSource({str(messy_folder / 'train')!r}); [source[i] for i in "
        "range(len(source))]"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and all(
        line.startswith("warning: skipping image ") and "broken.jpg: " in line for line in lines
    ), lines


def test_lpips_refuses_0_255_and_uint8_images():
    variables = VGG("D", num_classes=10, fc_width=16).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    pixels = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"lpips takes float images in \[-1, 1\].*x / 127.5 - 1 for uint8"):
        vgg_jax.lpips(pixels, pixels, variables)
    with pytest.raises(ValueError, match=r"from 0 to 255: pass x / 127.5 - 1"):
        vgg_jax.lpips(pixels.astype(np.float32), pixels.astype(np.float32), variables)
    assert vgg_jax.lpips(pixels / 127.5 - 1, pixels / 127.5 - 1, variables).shape == (1,)


def test_one_unreadable_image_is_reported_and_the_rest_classified(tmp_path, capsys):
    from vgg_jax.cli.predict import main as predict

    variables = VGG("A", num_classes=1000, **TINY).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    weights.save(variables, str(tmp_path / "w.msgpack"), metadata={"preprocess": "torch"})
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(good)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    assert (
        predict(
            [
                str(good),
                str(tmp_path / "bad.jpg"),
                str(good),
                "--model",
                str(tmp_path / "w.msgpack"),
                "--json",
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert [("top" in r, "error" in r) for r in results] == [(True, False), (False, True), (True, False)]
    assert "bad.jpg could not be read" in captured.err and "1 of 3 images could not be read" in captured.err
