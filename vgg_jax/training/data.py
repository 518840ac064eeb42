"""Input pipelines: a `--data` spec read into sources (`vgg_jax.training.sources`), streamed with
Grain: shuffled by seed, sharded by process, transformed in workers, and with
an iterator whose position is saved in checkpoints. Each element is a dict
`{"image": uint8 HWC RGB, "label": int}`; the transforms produce float32.

The paper's augmentations (Sec. 3.1) are flags of `TrainTransform`: isotropic
rescale of the short side to S (fixed, or jittered per image in [S_min, S_max]),
a random crop at the training size, a random horizontal flip, AlexNet's PCA
colour shift, and mean-RGB subtraction.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Sequence, Union

import grain
import numpy as np

from vgg_jax.training.packed import PackedSource, read_meta
from vgg_jax.training.sources import (
    ImageFolderSource,
    Subset,
    SyntheticSource,
    load_digits,
    one_line_warnings,
)
from vgg_jax.util.images import (
    normalize_pixels,
    preprocess,
    rescaled_crop,
    resize_rule,
    short_side_size,
    square_view,
)

# AlexNet's PCA of ImageNet RGB pixels (0-255 scale eigenvalues), as in its
# reference implementations; the shift is eigvec @ (alpha * eigval), alpha ~ N(0, 0.1).
PCA_EIGVAL = np.array([55.46, 4.794, 1.148], np.float32)
PCA_EIGVEC = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]], np.float32
)


@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
    """The paper's training augmentation, each part a flag; uint8 in, float32 out.

    Attributes:
        image_size: the crop fed to the network (224 in the paper).
        scale: the short side S before cropping: an int (fixed S) or a pair
            (S_min, S_max), drawn per image (the paper's scale jittering).
            None rescales the short side to `image_size` (S = the crop), so
            images of any size work.
        flip: random horizontal flip.
        pca_std: std of AlexNet's PCA colour shift (0.1 in AlexNet); 0 disables it.
        mean_rgb: subtracted from every pixel (0-255 scale); None subtracts nothing.
        normalize: "torch" or "caffe": the pixel convention of pretrained weights
            (`normalize_pixels`), applied instead of `mean_rgb`.
        on_device: hand over the uint8 crop (flipped) and the PCA colour
            shift instead of float pixels: the shift, the mean subtraction or
            the normalisation then run on the device (`device_pixels`), inside
            the jitted step. 4x fewer bytes to the device and less host work;
            the same random draws, so the same numbers to float32 rounding.
    """

    image_size: int
    scale: Union[None, int, tuple[int, int]] = None
    flip: bool = True
    pca_std: float = 0.0
    mean_rgb: Optional[tuple[float, float, float]] = None
    normalize: Optional[str] = None
    on_device: bool = False

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image = element["image"]
        low, high = (
            (self.image_size,) * 2
            if self.scale is None
            else (self.scale,) * 2
            if isinstance(self.scale, int)
            else self.scale
        )
        short_side = int(rng.integers(low, high + 1))
        height, width = short_side_size(*image.shape[:2], short_side)
        if min(height, width) < self.image_size:
            raise ValueError(
                f"image of {height}x{width} is smaller than the crop {self.image_size}; set a scale S >= "
                f"{self.image_size}"
            )
        top = int(rng.integers(0, height - self.image_size + 1))
        left = int(rng.integers(0, width - self.image_size + 1))
        # Only the crop's window is resized (the same pixels as rescaling the whole image, within 2 of 255).
        image = rescaled_crop(image, short_side, top, left, self.image_size)
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        shift = np.zeros(3, np.float32)
        if self.pca_std > 0:
            alpha = rng.normal(0.0, self.pca_std, 3).astype(np.float32)
            shift = PCA_EIGVEC @ (alpha * PCA_EIGVAL)
        if self.on_device:
            return {"image": np.ascontiguousarray(image), "shift": shift, "label": element["label"]}
        image = image.astype(np.float32)
        if self.pca_std > 0:
            image = image + shift
        if self.normalize is not None:
            image = normalize_pixels(image, self.normalize)
        elif self.mean_rgb is not None:
            image = image - np.asarray(self.mean_rgb, np.float32)
        return {"image": np.ascontiguousarray(image, np.float32), "label": element["label"]}


def device_pixels(mean_rgb: Optional[tuple[float, float, float]], normalize: Optional[str]) -> Any:
    """The device half of `TrainTransform(on_device=True)`: `batch -> float32 images`, for the jitted step.

    uint8 crops plus their PCA shift, then `normalize` ("torch", "caffe") or
    the mean RGB subtracted, by `vgg_jax.preprocess` (one definition of the
    conventions); the host path (`on_device=False`) gives the same numbers.
    """
    mode = normalize or "paper"
    mean = None if normalize else tuple(mean_rgb or (0.0, 0.0, 0.0))

    def pixels(batch: dict[str, Any]) -> Any:
        import jax.numpy as jnp

        images = batch["image"].astype(jnp.float32) + batch["shift"][:, None, None, :]
        return preprocess(images, mode, mean, scale=255.0)

    return pixels


@dataclasses.dataclass(frozen=True)
class EvalTransform(grain.transforms.Map):
    """The centre square at `size` x `size` (`images.square_view`: torchvision's rule, Keras's for "caffe"
    pixels), mean subtracted or normalised; float32 out.

    The evaluator rescales these squares to each test scale Q.
    """

    size: int
    mean_rgb: Optional[tuple[float, float, float]] = None
    normalize: Optional[str] = None

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        image = square_view(element["image"], self.size, resize_rule(self.normalize)).astype(np.float32)
        if self.normalize is not None:
            image = normalize_pixels(image, self.normalize)
        elif self.mean_rgb is not None:
            image = image - np.asarray(self.mean_rgb, np.float32)
        return {"image": image, "label": element["label"]}


def mean_rgb(source: Any, max_images: int = 10_000) -> tuple[float, float, float]:
    """The mean RGB of a source's images (0-255), over at most `max_images` spread evenly."""
    indices = np.linspace(0, len(source) - 1, min(len(source), max_images)).astype(int)
    total, count = np.zeros(3), 0
    for index in indices:
        element = source[int(index)]
        if element is None:  # an unreadable file, skipped
            continue
        image = element["image"]
        total += image.reshape(-1, 3).sum(axis=0)
        count += image.shape[0] * image.shape[1]
    if count == 0:
        raise ValueError(f"no readable image in {source!r} to compute the mean RGB from")
    return tuple(float(v) for v in total / count)


def make_loader(
    source: Any,
    transform: grain.transforms.Transformation,
    batch_size: int,
    *,
    seed: int,
    shuffle: bool,
    num_epochs: Optional[int] = None,
    drop_remainder: bool = True,
    worker_count: int = 0,
    shard_index: Optional[int] = None,
    shard_count: Optional[int] = None,
) -> "Loader":
    """Batches `{"image": (B, H, W, 3), "label": (B,) int32, ...}` of `source` through `transform`.

    The order is a function of the seed alone (reshuffled each epoch), and the
    random transforms draw from (seed, position in the stream), so the stream
    is the same for any `worker_count`: the workers only transform elements,
    and the batches are formed in this process. The shard defaults to this JAX
    process's (`jax.process_index()` of `jax.process_count()`). Save
    `iter(loader).get_state()` to resume exactly, with any number of workers.
    """
    if shard_index is None or shard_count is None:
        import jax

        shard_index, shard_count = jax.process_index(), jax.process_count()
    if len(source) < shard_count * (batch_size if drop_remainder else 1):
        raise ValueError(
            f"a dataset of {len(source)} examples cannot fill a batch of {batch_size} on {shard_count} "
            "processes"
        )
    per_shard = len(source) // shard_count * shard_count  # equal shards: the remainder is left out
    dataset = grain.MapDataset.source(_Boxed(source))[:per_shard][shard_index::shard_count]
    if shuffle:
        dataset = dataset.shuffle(seed)  # a new permutation each epoch
    dataset = dataset.repeat(num_epochs)
    if isinstance(transform, grain.transforms.RandomMap):
        dataset = dataset.random_map(_RandomUnlessNone(transform), seed=seed)
    else:
        dataset = dataset.map(_UnlessNone(transform))
    return Loader(dataset.map_with_index(_with_index), batch_size, drop_remainder, worker_count)


class _Boxed:
    """A source whose elements are 1-tuples, so that an unreadable file's None keeps its place in the stream
    (Grain drops None elements, and with them the count the iterator's position rests on)."""

    def __init__(self, source: Any):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Any]:
        return (self.source[index],)

    def __repr__(self) -> str:
        return repr(self.source)


class _UnlessNone:
    """A Map transform of a boxed element that passes over an unreadable file (dropped when batching)."""

    def __init__(self, transform: Any):
        self.transform = transform

    def __call__(self, box: tuple[Any]) -> tuple[Any]:
        return (None if box[0] is None else self.transform.map(box[0]),)


class _RandomUnlessNone(_UnlessNone):
    def __call__(self, box: tuple[Any], rng: np.random.Generator) -> tuple[Any]:  # type: ignore[override]
        return (None if box[0] is None else self.transform.random_map(box[0], rng),)


def _with_index(index: int, box: tuple[Any]) -> tuple[int, Any]:
    return index, box[0]


def _worker_init(worker_index: int, worker_count: int) -> None:
    """In each input worker: Ctrl-C is the main process's to act on (it stops cleanly), so a worker prints no
    traceback; and the worker ends itself when the main process is gone (`_end_with_parent`)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_line_warnings()
    _end_with_parent()


# how often a worker looks for its parent: the longest an orphan lives
PARENT_POLL_S = 0.5


def _end_with_parent() -> None:
    """Ends this process soon after the process that started it ends, however it ended (kill -9 included).

    A worker whose parent died is adopted by init (or a subreaper), so its
    parent's PID changes. A daemon thread watches for that and exits at once:
    the worker's pipes and shared memory close with it, and the resource
    tracker, whose last client it was, then unlinks the segments and ends.
    """
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="vgg_jax-parent-watch", daemon=True).start()


class Loader:
    """An iterable of batches (`make_loader`); its iterators resume from `get_state()`, any worker count."""

    def __init__(self, dataset: Any, batch_size: int, drop_remainder: bool, worker_count: int):
        self.dataset, self.batch_size, self.drop_remainder, self.worker_count = (
            dataset,
            batch_size,
            drop_remainder,
            worker_count,
        )

    def __iter__(self) -> "LoaderIterator":
        return LoaderIterator(self)


class LoaderIterator:
    """Batches from a position in the element stream; the state is that position, as JSON bytes.

    The workers (or this process) read, transform and stack the elements of
    a run of `batch_size` positions, leaving out unreadable files; this
    process cuts the chunks into batches of exactly `batch_size`. So a batch
    is the same whatever the worker count, and a worker sends one array per
    chunk, not one per image.
    """

    def __init__(self, loader: Loader, position: int = 0):
        self.loader, self.position, self._chunks = loader, position, None
        self.skipped = 0  # unreadable files passed over since this iterator started (or was set)
        self._pending: list[
            tuple[np.ndarray, dict[str, np.ndarray]]
        ] = []  # (indices, arrays) not yet batched

    def _open(self) -> Any:
        loader = self.loader
        dataset = _Chunks(loader.dataset[self.position :], loader.batch_size).to_iter_dataset(READ_AHEAD)
        if loader.worker_count > 0:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # Grain's workers read its absl flags; the defaults serve
                flags.FLAGS.mark_as_parsed()
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=loader.worker_count), worker_init_fn=_worker_init
            )
        return iter(dataset)

    def __iter__(self) -> "LoaderIterator":
        return self

    def __next__(self) -> dict[str, Any]:
        if self._chunks is None:
            self._chunks = self._open()
        size = self.loader.batch_size
        while sum(len(indices) for indices, _ in self._pending) < size:
            try:
                indices, arrays, unreadable = next(self._chunks)
            except StopIteration:
                if self._pending and not self.loader.drop_remainder:
                    break
                raise
            self.skipped += unreadable
            if arrays is None:  # every file of the chunk was unreadable
                if not self._pending:  # else the state is the first pending element's, before this chunk
                    self.position = int(indices) + 1
                continue
            self._pending.append((indices, arrays))
        taken, count = [], 0
        while self._pending and count < size:
            indices, arrays = self._pending.pop(0)
            need = size - count
            if len(indices) > need:  # the rest of this chunk starts the next batch
                self._pending.insert(
                    0, (indices[need:], {key: value[need:] for key, value in arrays.items()})
                )
                indices, arrays = indices[:need], {key: value[:need] for key, value in arrays.items()}
            taken.append(arrays)
            count += len(indices)
            self.position = int(indices[-1]) + 1
        return {key: np.concatenate([arrays[key] for arrays in taken]) for key in taken[0]}

    def get_state(self) -> bytes:
        # the first element not yet in a batch: the next batch starts there
        start = int(self._pending[0][0][0]) if self._pending else self.position
        return json.dumps({"position": start}).encode()

    def set_state(self, state: bytes) -> None:
        try:
            position = json.loads(state)["position"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                "the checkpoint's data position was written by an older vgg_jax, whose input pipeline this "
                "version cannot continue exactly; start the run again with --overwrite"
            ) from None
        self.close()
        self.position, self._pending = int(position), []

    def close(self) -> None:
        """Stops the worker processes, if any (they also stop when the iterator is collected)."""
        chunks, self._chunks = self._chunks, None
        if chunks is not None and hasattr(chunks, "close"):
            chunks.close()


class _Chunks(grain.MapDataset):
    """`parent.batch(size, batch_fn=_stack_readable)`, each chunk's elements read in one call.

    Grain's `batch` asks its parent for one element at a time, and every
    stage on the way does its bookkeeping per element. Its parent's
    `_getitems` (Grain's batch read, which its own `batch` uses only as an
    experiment) does it once per chunk: the same elements, the same random
    draws (each by its index), and about 30% less host CPU for the input, which
    on a CPU is taken from the step (docs/benchmarks.md).
    A Grain without it reads element by element, as `batch` does.
    """

    def __init__(self, parent: grain.MapDataset, size: int):
        super().__init__(parent)
        self._size = size

    def __len__(self) -> int:
        return -(-len(self._parent) // self._size)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        indices = list(range(index * self._size, min(len(self._parent), (index + 1) * self._size)))
        read = getattr(self._parent, "_getitems", None)
        return _stack_readable(read(indices) if read else [self._parent[i] for i in indices])

    def __str__(self) -> str:
        return f"Chunks(size={self._size})"


def _stack_readable(chunk: Sequence[tuple[int, Any]]) -> tuple[Any, Any, int]:
    """A run of (index, element) as (indices, stacked arrays, unreadable count) of the readable ones; the
    last index and None when none is."""
    readable = [(index, element) for index, element in chunk if element is not None]
    if not readable:
        return chunk[-1][0], None, len(chunk)
    arrays = {key: np.stack([element[key] for _, element in readable]) for key in readable[0][1]}
    return np.asarray([index for index, _ in readable]), arrays, len(chunk) - len(readable)


MAX_WORKERS = 256  # beyond it, a typo


def workers_flag(value: Union[str, int]) -> Union[str, int]:
    """`--workers`: "auto", or a number of worker processes (0 or more)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if (
        isinstance(value, bool)
        or not 0 <= number <= MAX_WORKERS
        or (isinstance(value, float) and value != number)
    ):
        raise ValueError(f"expected auto or a number of worker processes (0 to {MAX_WORKERS}), got {value!r}")
    return number


def auto_workers(workers: Union[str, int], source: Any) -> int:
    """The worker processes `--workers` asks for: "auto" is one per core this process may use, less one for
    the main process, for sources that decode files; data in memory (digits, synthetic) needs none."""
    if workers != "auto":
        return int(workers)
    while isinstance(source, Subset):
        source = source.source
    if not isinstance(source, (ImageFolderSource, PackedSource)):
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores - 1, 32))


READ_AHEAD = grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)
"""Chunks (a batch's run of elements each) that Grain's reading threads keep ready, per process.

Two: enough to overlap reading with the step. Grain's default (16 threads,
500 ahead) scans its whole buffer for every item it returns; with elements
as items, that cost half the host's time per batch of 64 (47 ms against 24
ms with 128 ahead, on 2 EPYC cores; docs/benchmarks.md).
"""


DATA_FORMS = "digits, synthetic, folder:PATH or packed:PATH"


def parse_data(spec: Any) -> tuple[str, Optional[str]]:
    """The one reading of a `--data` spec: ("digits" | "synthetic", None) or ("folder" | "packed", PATH)."""
    if spec in ("digits", "synthetic"):
        return spec, None
    kind, sep, path = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not (sep and kind in ("folder", "packed") and path):
        raise ValueError(f"--data {spec!r} is unknown; use {DATA_FORMS}")
    return kind, path


def load_data(
    spec: str,
    image_size: int,
    seed: int = 0,
    num_examples: int = 2048,
    num_classes: int = 10,
    draft_short_side: Optional[int] = None,
):
    """Train and validation sources for a `--data` spec (`parse_data`).

    A folder holding `train/` and `val/` uses them, as a pack uses its val
    split; without one, a fixed 10% (seed 0) is held out for validation.
    `draft_short_side` (the largest training short side S) lets the training
    images' JPEGs decode at a reduced scale (`draft_size`); validation images
    decode in full.
    """
    kind, path = parse_data(spec)
    if kind == "digits":
        return load_digits(image_size)
    if kind == "synthetic":
        return (
            SyntheticSource(num_examples, image_size, num_classes, seed),
            SyntheticSource(max(num_examples // 8, 1), image_size, num_classes, seed + 1),
        )
    if kind == "packed":
        train, val = packed_splits(path, image_size)
    elif os.path.isdir(os.path.join(path, "train")):
        train = ImageFolderSource(os.path.join(path, "train"), draft_short_side=draft_short_side)
        val = ImageFolderSource(os.path.join(path, "val"), classes=train.classes)
    else:
        train, val = ImageFolderSource(path), None
    if val is not None:
        return train, val
    order = np.random.RandomState(0).permutation(len(train))
    held_out = max(1, len(train) // 10)
    drafted = train.with_draft(draft_short_side) if kind == "folder" else train
    return Subset(drafted, order[held_out:]), Subset(train, order[:held_out])


def packed_splits(path: str, image_size: int) -> tuple[Any, Any]:
    """A pack's train split and its val split (None when it has none), for crops of `image_size`."""
    meta = read_meta(path)
    if meta["short_side"] < image_size:
        raise ValueError(
            f"--data packed:{path} was packed at short side {meta['short_side']}, less than --image-size "
            f"{image_size}; pack the folder again at a short side of {image_size} or more"
        )
    return PackedSource(path, "train"), PackedSource(path, "val") if "val" in meta["splits"] else None
