"""Packed ImageFolders (pack_images.py, --data packed:DST): written once, whole or not at all, read fast."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from vgg_jax.model.vgg import ModelConfig
from vgg_jax.training import data, loop
from vgg_jax.util import images

pytest.importorskip("array_record", reason="packs need the packed extra (array_record)")
from vgg_jax.cli.pack_images import main as pack_cli  # noqa: E402
from vgg_jax.training import (
    packed,  # noqa: E402
    sources,
)


@pytest.fixture
def folder(tmp_path):
    """train/ and val/ of two classes: JPEGs and PNGs of several sizes, and one broken file."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for label, name in enumerate(("cat", "dog")):
            (tmp_path / "src" / split / name).mkdir(parents=True)
            for index in range(count):
                size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(
                    tmp_path / "src" / split / name / f"{index}.{'png' if index % 2 else 'jpg'}"
                )
    (tmp_path / "src" / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return tmp_path


def test_a_pack_keeps_pixels_labels_classes_and_paths_and_trains(folder, capsys):
    dst = folder / "packed"
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert pack_cli([str(folder / "src"), str(dst), "--short-side", "40"]) == 0
    out = capsys.readouterr().out
    assert (
        "packed train 12, val 4 images of 2 classes" in out
        and "MiB on disk" in out
        and "1 unreadable skipped" in out
    )
    assert sorted(os.listdir(folder)) == ["packed", "src"]  # no .partial left
    meta = packed.read_meta(str(dst))
    assert (
        meta["classes"] == ["cat", "dog"]
        and meta["splits"] == {"train": 12, "val": 4}
        and meta["short_side"] == 40
    )
    train = packed.PackedSource(str(dst), "train")
    original = sources.ImageFolderSource(str(folder / "src" / "train"))
    record = packed.decode(train.records[0], "record 0")
    assert record["path"] == original.files[0][0] and record["label"] == original.files[0][1]
    np.testing.assert_array_equal(record["image"], images.rescale_short_side(original[0]["image"], 40))
    config = loop.TrainConfig(
        workdir=str(folder / "run"),
        data=f"packed:{dst}",
        config="A",
        model=ModelConfig(width_scale=1 / 16, fc_width=32),
        batch_size=4,
        max_steps=3,
        image_size=32,
        workers=0,
    )
    summary = loop.run(config, log=lambda line: None)
    assert summary["steps"] == 3 and json.loads((folder / "run" / "classes.json").read_text()) == [
        "cat",
        "dog",
    ]
    # evaluate.py takes the pack as train.py does: the run's own split, or the pack named for a file
    from vgg_jax.cli.convert_weights import main as convert
    from vgg_jax.cli.evaluate import main as evaluate

    capsys.readouterr()
    assert evaluate([str(folder / "run"), "--data", f"packed:{dst}", "--json", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 4  # the pack's val split
    assert convert([str(folder / "run"), str(folder / "a.msgpack")]) == 0
    assert evaluate([str(folder / "a.msgpack"), "--data", f"packed:{dst}", "--json", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["count"] == 4
    assert evaluate([str(folder / "a.msgpack"), "--data", "imagenet"]) == 2
    assert (
        "--data 'imagenet' is unknown; use digits, synthetic, folder:PATH or packed:PATH"
        in capsys.readouterr().err
    )
    # bench_data.py times the pack's input as train.py reads it
    from vgg_jax.cli.bench_data import main as bench_data

    capsys.readouterr()
    fast = ["--image-size", "32", "--scale", "32,40", "--batch-size", "4", "--batches", "2", "--warmup", "1"]
    assert bench_data([f"packed:{dst}", *fast, "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["images_per_s"] > 0
    assert bench_data([f"packed:{dst}", *fast, "--vs", "torch"]) == 2
    assert "--vs torch reads an ImageFolder" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:skipping image")
def test_a_pack_is_whole_or_absent_and_never_replaced_silently(folder, monkeypatch):
    dst = str(folder / "packed")
    calls = []

    def interrupted(image, size):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # a Ctrl-C, or a kill, half-way
        return images.rescale_short_side(image, size)

    monkeypatch.setattr(packed, "rescale_short_side", interrupted)
    with pytest.raises(KeyboardInterrupt):
        packed.pack(str(folder / "src"), dst, 40)
    assert not os.path.exists(dst) and os.path.isdir(dst + ".partial")
    with pytest.raises(
        ValueError, match=r"is not a finished pack \(no meta.json\); an interrupted pack was left in"
    ):
        data.load_data(f"packed:{dst}", 32)
    monkeypatch.undo()
    packed.pack(str(folder / "src"), dst, 40)  # again: the partial one is cleared first
    assert not os.path.exists(dst + ".partial") and packed.read_meta(dst)["splits"]["train"] == 12
    with pytest.raises(ValueError, match="already exists; choose another DST or pass --overwrite"):
        packed.pack(str(folder / "src"), dst, 48)
    packed.pack(str(folder / "src"), dst, 48, overwrite=True)
    assert packed.read_meta(dst)["short_side"] == 48


def test_bad_packs_and_inputs_are_one_line(folder, capsys):
    dst = str(folder / "packed")
    with pytest.warns(UserWarning):
        packed.pack(str(folder / "src"), dst, 40)
    with pytest.raises(
        ValueError, match="packed at short side 40, less than --image-size 64; pack the folder again"
    ):
        data.load_data(f"packed:{dst}", 64)
    with pytest.raises(ValueError, match="is not a finished pack .* make one with scripts/pack_images.py"):
        data.load_data(f"packed:{folder / 'src'}", 32)
    with pytest.raises(ValueError, match=r"record 3 of x is damaged .* pack the folder again"):
        packed.decode(b"\x01\x00\x00\x00" * 4 + b"garbage", "record 3 of x")
    with open(os.path.join(dst, "train.array_record"), "wb") as file:
        file.write(b"not an array record file")
    with pytest.raises(ValueError, match="train.array_record could not be opened"):
        packed.PackedSource(dst, "train")
    assert pack_cli([str(folder / "nothing"), str(folder / "out")]) == 2
    err = capsys.readouterr().err
    assert "does not exist or is not a directory" in err and len(err.strip().splitlines()) == 1
