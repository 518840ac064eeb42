"""Data: the ImageFolder loader, digits, the paper's augmentations, and exact iterator resume."""

import numpy as np
import pytest
from PIL import Image

from vgg_jax.training import data, sources
from vgg_jax.util import images


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two classes of PNGs of odd sizes, written here."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for name, count in (("cat", 3), ("dog", 4)):
        (root / name).mkdir()
        for index in range(count):
            pixels = rng.integers(0, 256, (40 + index, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_reads_pngs_by_class(image_folder):
    source = sources.ImageFolderSource(str(image_folder))
    assert source.classes == ["cat", "dog"] and len(source) == 7
    labels = [source[i]["label"] for i in range(len(source))]
    assert labels == [0, 0, 0, 1, 1, 1, 1]
    assert source[0]["image"].shape == (40, 48, 3) and source[0]["image"].dtype == np.uint8
    loader = data.make_loader(
        source, data.TrainTransform(32, scale=(34, 40)), 3, seed=0, shuffle=True, shard_index=0, shard_count=1
    )
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 32, 32, 3) and batch["image"].dtype == np.float32
    assert set(batch["label"]) <= {0, 1}


def test_folder_without_split_holds_out_a_fixed_tenth(image_folder):
    train, val = data.load_data(f"folder:{image_folder}", 32)
    assert len(train) + len(val) == 7 and len(val) == 1 and train.num_classes == 2


def test_bad_folders_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        sources.ImageFolderSource(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no class sub-folders"):
        sources.ImageFolderSource(str(tmp_path))
    (tmp_path / "empty_class").mkdir()
    with (
        pytest.warns(UserWarning, match="empty_class holds no usable images"),
        pytest.raises(ValueError, match="holds no"),
    ):
        sources.ImageFolderSource(str(tmp_path))
    with pytest.raises(ValueError, match="is unknown; use digits"):
        data.load_data("imagenet", 32)


def test_digits_are_a_fixed_split_of_real_digits():
    pytest.importorskip("sklearn")
    train, val = sources.load_digits(32)
    assert (len(train), len(val)) == (1500, 297)
    assert train.images.shape == (1500, 32, 32, 3) and train.images.dtype == np.uint8
    assert sorted(set(train.labels)) == list(range(10))
    again, _ = sources.load_digits(32)
    np.testing.assert_array_equal(train.images, again.images)
    assert np.array_equal(train.images[..., 0], train.images[..., 2])  # grey repeated to RGB


def test_digits_read_from_scikit_learns_file_equal_its_load_digits(monkeypatch):
    """The table is read from the installed scikit-learn's own file, without importing it; where the file is
    not found, scikit-learn's load_digits gives the same arrays."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    assert sources._sklearn_digits_csv() is not None
    images, target = sources._digits_arrays()
    reference = sklearn_datasets.load_digits()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(target, reference.target)
    monkeypatch.setattr(sources, "_sklearn_digits_csv", lambda: None)
    fallback_images, fallback_target = sources._digits_arrays()
    np.testing.assert_array_equal(fallback_images, images)
    np.testing.assert_array_equal(fallback_target, target)


def test_train_transform_augmentations():
    image = np.arange(50 * 60 * 3, dtype=np.uint8).reshape(50, 60, 3)
    element = {"image": image, "label": 3}
    plain = data.TrainTransform(32, scale=None, flip=False)  # scale None: the short side to the crop size
    out = plain.random_map(element, np.random.default_rng(0))["image"]
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    short = images.rescale_short_side(image, 32)
    assert (
        short.shape == (32, 38, 3)
        and any(  # only the crop is resized: within 2 of 255 of the whole
            np.abs(out - short[:, left : left + 32]).max() <= 2 for left in range(7)
        )
    )
    flips = [
        data.TrainTransform(32, flip=True).random_map(element, np.random.default_rng(s))["image"]
        for s in range(20)
    ]
    assert any(f[0, 0, 0] > f[0, -1, 0] for f in flips)  # some are mirrored (the ramp runs backwards)
    jitter = data.TrainTransform(32, scale=(32, 48), flip=False)
    rescaled = images.rescale_short_side(image, 40)
    assert rescaled.shape == (40, 48, 3)
    pca = data.TrainTransform(32, flip=False, pca_std=0.1).random_map(element, np.random.default_rng(0))[
        "image"
    ]
    shift = pca - plain.random_map(element, np.random.default_rng(0))["image"]
    # one RGB shift per image
    assert np.ptp(shift.reshape(-1, 3), axis=0).max() < 1e-3 and np.abs(shift).max() > 0
    mean = data.TrainTransform(32, flip=False, mean_rgb=(10.0, 20.0, 30.0)).random_map(
        element, np.random.default_rng(0)
    )["image"]
    np.testing.assert_allclose(
        plain.random_map(element, np.random.default_rng(0))["image"] - mean,
        np.broadcast_to([10, 20, 30], (32, 32, 3)),
    )
    assert jitter.random_map(element, np.random.default_rng(1))["image"].shape == (32, 32, 3)
    # upscaled
    assert data.TrainTransform(64).random_map(element, np.random.default_rng(0))["image"].shape == (
        64,
        64,
        3,
    )


@pytest.mark.parametrize(
    "normalize, mean_rgb", [(None, (120.0, 110.0, 100.0)), ("torch", None), ("caffe", None), (None, None)]
)
def test_uint8_over_the_wire_equals_the_host_path_to_float32_rounding(normalize, mean_rgb):
    """The loop hands the device uint8 crops and the PCA shift; the device half gives the host path's
    pixels."""
    import jax

    image = np.random.default_rng(1).integers(0, 256, (45, 60, 3), dtype=np.uint8)
    options = dict(scale=(40, 56), flip=True, pca_std=0.1, mean_rgb=mean_rgb, normalize=normalize)
    host, wire = [], []
    for seed in range(4):
        host.append(
            data.TrainTransform(32, **options).random_map(
                {"image": image, "label": 1}, np.random.default_rng(seed)
            )["image"]
        )
        element = data.TrainTransform(32, on_device=True, **options).random_map(
            {"image": image, "label": 1}, np.random.default_rng(seed)
        )
        assert element["image"].dtype == np.uint8 and element["shift"].shape == (3,)
        wire.append(element)
    batch = {"image": np.stack([w["image"] for w in wire]), "shift": np.stack([w["shift"] for w in wire])}
    device = jax.jit(data.device_pixels(mean_rgb, normalize))(batch)
    np.testing.assert_allclose(
        np.asarray(device), np.stack(host), rtol=1e-6, atol=1e-4 if normalize is None else 1e-6
    )


def test_stream_is_a_function_of_the_seed_and_resumes_exactly():
    source = sources.SyntheticSource(40, 32, 5, seed=1)

    def make(seed):
        return data.make_loader(
            source,
            data.TrainTransform(32, pca_std=0.1),
            4,
            seed=seed,
            shuffle=True,
            shard_index=0,
            shard_count=1,
        )

    first = iter(make(7))
    batches = [next(first) for _ in range(3)]
    saved = first.get_state()
    following = [next(first) for _ in range(12)]  # crosses an epoch boundary (10 batches per epoch)
    resumed = iter(make(7))
    resumed.set_state(saved)
    for expected in following:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["label"], expected["label"])
    other = next(iter(make(8)))
    assert not np.array_equal(other["label"], batches[0]["label"]) or not np.array_equal(
        other["image"], batches[0]["image"]
    )


@pytest.mark.parametrize("length", [2048, 2049, 4099, 65536, 70001])
def test_an_epochs_order_is_grains_index_shuffle(length):
    from grain.experimental import index_shuffle

    for seed in (0, 7, 2**32 - 1):
        order = data._epoch_order(length, seed)
        assert np.array_equal(np.sort(order), np.arange(length))
        picked = np.random.default_rng(seed).choice(length, 200, replace=False)
        expected = [index_shuffle(int(k), max_index=length - 1, seed=seed, rounds=4) for k in picked]
        assert order[picked].tolist() == expected


@pytest.mark.parametrize("length", [300, 2100])  # an epoch's order per index, and whole
def test_the_stream_is_grains_pipeline_that_checkpoints_were_written_with(length):
    """Positions saved by the Grain pipeline that `_Stream` replaced name the same elements and draws."""
    import grain

    source = sources.SyntheticSource(length, 36, 10, seed=2)
    transform = data.TrainTransform(32, scale=(32, 40), pca_std=0.1, on_device=True)
    for shard_index, shard_count in ((0, 1), (1, 3)):
        per_shard = length // shard_count * shard_count
        grains = (
            grain.MapDataset.source(source)[:per_shard][shard_index::shard_count]
            .shuffle(5)
            .repeat(None)
            .random_map(transform, seed=5)
        )
        stream = data._Stream(source, transform, 5, True, None, shard_index, shard_count)
        positions = [0, 1, 17, per_shard // shard_count - 1, 3 * (per_shard // shard_count) + 4, 10**6 + 3]
        for position, element in stream.read(positions):
            expected = grains[position]
            for key in ("image", "shift", "label"):
                np.testing.assert_array_equal(element[key], expected[key])


def test_shards_split_the_data():
    source = sources.ArraySource(
        np.zeros((16, 32, 32, 3), np.uint8), np.arange(16), 16
    )  # label = record index
    seen = []
    for shard in range(2):
        loader = data.make_loader(
            source,
            data.EvalTransform(32),
            4,
            seed=0,
            shuffle=True,
            num_epochs=1,
            shard_index=shard,
            shard_count=2,
        )
        seen.append({int(label) for batch in loader for label in batch["label"]})
    assert len(seen[0]) == len(seen[1]) == 8 and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(16))


def test_mean_rgb():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    images[..., 1] = 100
    assert data.mean_rgb(sources.ArraySource(images, np.zeros(4), 2)) == (0.0, 100.0, 0.0)


def test_digits_from_an_exported_file_match_scikit_learns(tmp_path, monkeypatch):
    """Machines without scikit-learn (the GPU image) read the digits from a file export_digits wrote."""
    pytest.importorskip("sklearn")
    from vgg_jax.training.sources import export_digits, load_digits

    path = str(tmp_path / "digits.npz")
    export_digits(path)
    train, val = load_digits(32)
    monkeypatch.setenv("VGG_JAX_DIGITS", path)
    train_file, val_file = load_digits(32)
    np.testing.assert_array_equal(train_file.images, train.images)
    np.testing.assert_array_equal(val_file.labels, val.labels)
    monkeypatch.setenv("VGG_JAX_DIGITS", str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="not a digits file"):
        load_digits(32)


def test_resizing_only_the_crop_gives_the_rescaled_images_crop():
    """Crop before resize: the window mapped back into the source and resized alone.

    The bound: at most 2 of 255 from rescaling the whole image and then
    cropping (Pillow rounds the window's float box), and nearly always equal.
    """
    from vgg_jax.util.images import rescale_short_side, rescaled_crop

    rng = np.random.default_rng(0)
    worst, differing, total = 0, 0, 0
    for _ in range(60):
        height, width = (int(v) for v in rng.integers(24, 300, 2))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        size = int(rng.integers(8, min(height, width) + 1))
        short_side = int(rng.integers(size, 3 * size + 1))
        whole = rescale_short_side(image, short_side)
        top, left = (int(rng.integers(0, n - size + 1)) for n in whole.shape[:2])
        window = rescaled_crop(image, short_side, top, left, size).astype(int)
        difference = np.abs(whole[top : top + size, left : left + size].astype(int) - window)
        worst, differing, total = (
            max(worst, int(difference.max())),
            differing + int((difference > 0).sum()),
            total + difference.size,
        )
    assert worst <= 2 and differing / total < 0.15, (worst, differing / total)
    with pytest.raises(ValueError, match="does not fit"):
        rescaled_crop(image, short_side, whole.shape[0], 0, size)


def test_jpegs_decode_at_a_reduced_scale_only_when_the_target_is_at_most_half(tmp_path):
    (tmp_path / "cat").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)).save(
        tmp_path / "cat" / "big.jpg"
    )
    Image.fromarray(np.zeros((1200, 1600, 3), np.uint8)).save(
        tmp_path / "cat" / "big.png"
    )  # only JPEGs have a draft
    full = sources.ImageFolderSource(str(tmp_path))
    shapes = lambda source: [source[i]["image"].shape for i in range(len(source))]  # noqa: E731
    assert shapes(full) == [(1200, 1600, 3)] * 2
    assert shapes(full.with_draft(256)) == [(300, 400, 3), (1200, 1600, 3)]  # 1/4: the short side 300 >= 256
    assert shapes(full.with_draft(700)) == [(1200, 1600, 3)] * 2  # more than half: decoded in full
    assert sources.draft_size((1600, 1200), 256) == (342, 256)
    train, val = data.load_data(f"folder:{tmp_path}", 32, draft_short_side=64)
    assert (
        train.source.draft_short_side == 64 and val.source.draft_short_side is None
    )  # validation decodes in full


def test_the_stream_is_the_same_for_any_number_of_workers_and_resumes_across_them():
    """Workers only transform elements; batches form in this process, so worker processes change nothing."""
    source = sources.SyntheticSource(48, 32, 10)
    transform = data.TrainTransform(32, scale=(32, 40), pca_std=0.1)

    def loader(workers):
        return iter(
            data.make_loader(
                source, transform, 4, seed=1, shuffle=True, worker_count=workers, shard_index=0, shard_count=1
            )
        )

    alone = loader(0)
    stream = [next(alone) for _ in range(15)]  # past the first epoch (12 batches of 4)
    first, second = (
        np.concatenate([batch["label"] for batch in part]) for part in (stream[:12], stream[12:])
    )
    assert not np.array_equal(first[: len(second)], second)  # the next epoch is shuffled anew
    saved = loader(0)
    for _ in range(7):
        next(saved)
    with_workers = loader(2)
    try:
        for expected in stream[:3]:
            got = next(with_workers)
            np.testing.assert_array_equal(got["image"], expected["image"])
            np.testing.assert_array_equal(got["label"], expected["label"])
        with_workers.set_state(saved.get_state())  # a state saved without workers, resumed with them
        for expected in stream[7:10]:
            np.testing.assert_array_equal(next(with_workers)["image"], expected["image"])
    finally:
        with_workers.close()


def test_auto_workers_are_for_files_and_leave_a_core(tmp_path):
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    (tmp_path / "cat").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "cat" / "a.png")
    folder = sources.ImageFolderSource(str(tmp_path))
    assert data.auto_workers("auto", folder) == max(1, min(cores - 1, 32))
    assert data.auto_workers("auto", sources.SyntheticSource(8, 32, 2)) == 0  # data in memory: no workers
    assert data.auto_workers(3, sources.SyntheticSource(8, 32, 2)) == 3
    assert data.workers_flag("AUTO") == "auto" and data.workers_flag("2") == 2
    for bad in ("-1", "two", 1.5, True):
        with pytest.raises(ValueError, match="auto or a number"):
            data.workers_flag(bad)
