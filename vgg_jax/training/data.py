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
import functools
import json
import math
import os
import sys
from typing import Any, Optional, Sequence, Union

import grain
import numpy as np
from grain.experimental import index_shuffle

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
    return Loader(
        _Stream(source, transform, seed, shuffle, num_epochs, shard_index, shard_count),
        batch_size,
        drop_remainder,
        worker_count,
    )


class _Stream:
    """`make_loader`'s elements: position p -> (p, transformed element, or None for an unreadable file).

    Position p is element k of this process's shard (every `shard_count`-th
    example from `shard_index`, the shards equal, the remainder left out) in
    epoch e = p // n, where k is p % n permuted by Grain's `index_shuffle` with
    seed + e; its random transform draws from a Philox generator of `seed` at
    counter (0, 0, 0, p). These are the rules of Grain's
    `source[:m][shard::count].shuffle(seed).repeat().random_map(t, seed)`, the
    pipeline this replaced, so a run resumed from an older checkpoint goes on
    with the same batches; read a chunk at a time, it skips Grain's
    per-element bookkeeping in each stage, which took three times the transform's
    own time (docs/benchmarks.md). Positions are read by several threads at
    once, so `read` keeps no state.
    """

    def __init__(
        self,
        source: Any,
        transform: grain.transforms.Transformation,
        seed: int,
        shuffle: bool,
        num_epochs: Optional[int],
        shard_index: int,
        shard_count: int,
    ):
        self.source, self.transform, self.seed, self.shuffle = source, transform, seed, shuffle
        self.shard_index, self.shard_count = shard_index, shard_count
        self.epoch_length = len(source) // shard_count
        self.length = sys.maxsize if num_epochs is None else num_epochs * self.epoch_length
        self.random = isinstance(transform, grain.transforms.RandomMap)

    def read(self, positions: Sequence[int]) -> list[tuple[int, Any]]:
        if self.random:
            rng = np.random.Generator(np.random.Philox(self.seed))
            state = rng.bit_generator.state
        elements = []
        for position in positions:
            epoch, k = divmod(position, self.epoch_length)
            if self.shuffle:
                k = _shuffled(k, self.epoch_length, (self.seed + epoch) % 2**32)
            element = self.source[self.shard_index + k * self.shard_count]
            if element is not None and not self.random:
                element = self.transform.map(element)
            elif element is not None:  # Grain's RandomMap draws: the generator at (0, 0, 0, position)
                state["state"]["counter"] = np.array([0, 0, 0, position], np.uint64)
                state.update(buffer=np.zeros(4, np.uint64), buffer_pos=4, has_uint32=0, uinteger=0)
                rng.bit_generator.state = state
                element = self.transform.random_map(element, rng)
            elements.append((position, element))
        return elements


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

    def __init__(self, stream: _Stream, batch_size: int, drop_remainder: bool, worker_count: int):
        self.stream, self.batch_size, self.drop_remainder, self.worker_count = (
            stream,
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
        dataset = _Chunks(loader.stream, self.position, loader.batch_size).to_iter_dataset(READ_AHEAD)
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


def _shuffled(index: int, length: int, seed: int) -> int:
    """`grain.experimental.index_shuffle(index, length - 1, seed, rounds=4)`, from a whole epoch's order
    where that is cheaper: Grain's cipher works on blocks of at least 16 bits and walks each index until it
    falls below `length`, about 10 us an index for 2,048 examples."""
    if SHUFFLE_TABLE_LENGTHS[0] <= length <= SHUFFLE_TABLE_LENGTHS[1]:
        return int(_epoch_order(length, seed)[index])
    return index_shuffle(index, max_index=length - 1, seed=seed, rounds=4)


SHUFFLE_TABLE_LENGTHS = (2**11, 2**22)
"""The epoch lengths whose order is computed whole: below, the walks are long; above, the cipher's table
(a uint64 per value of a block of up to 22 bits: 32 MB, in each worker) and its temporaries grow too big."""


@functools.lru_cache(maxsize=2)  # an epoch's and, while a chunk crosses into it, the next one's
def _epoch_order(length: int, seed: int) -> np.ndarray:
    """Grain's `index_shuffle` of every index of [0, length), vectorised: Simon with 4 round keys from
    `std::seed_seq{seed}`, on blocks of 2W >= 16 bits, each index encrypted until it is below `length`
    (cycle walking). Its C++ is the reference (tests/test_data.py)."""
    block = math.ceil(math.log2(length - 1))
    width = max(block + block % 2, 16) // 2
    keys = _seed_seq(seed, 4)
    encrypted = _simon(np.arange(1 << (2 * width), dtype=np.uint32), keys, width)  # blocks of <= 22 bits
    order = _simon(np.arange(length, dtype=np.uint32), keys, width)
    walking = np.flatnonzero(order >= length)
    while walking.size:
        order[walking] = encrypted[order[walking]]
        walking = walking[order[walking] >= length]
    return order


def _seed_seq(seed: int, count: int) -> list[int]:
    """`std::seed_seq{seed}.generate` of `count` 32-bit words (the C++ standard's [rand.util.seedseq])."""
    mask, words = 0xFFFFFFFF, [0x8B8B8B8B] * count
    t = (
        11
        if count >= 623
        else 7
        if count >= 68
        else 5
        if count >= 39
        else 3
        if count >= 7
        else (count - 1) // 2
    )
    p = (count - t) // 2
    q = p + t

    def mix(x: int) -> int:
        return x ^ (x >> 27)

    for k in range(max(2, count)):
        r1 = 1664525 * mix(words[k % count] ^ words[(k + p) % count] ^ words[(k - 1) % count]) & mask
        r2 = (r1 + (1 if k == 0 else k % count + seed if k == 1 else k % count)) & mask
        words[(k + p) % count] = (words[(k + p) % count] + r1) & mask
        words[(k + q) % count] = (words[(k + q) % count] + r2) & mask
        words[k % count] = r2
    for k in range(max(2, count), max(2, count) + count):
        r3 = (
            1566083941 * mix((words[k % count] + words[(k + p) % count] + words[(k - 1) % count]) & mask)
            & mask
        )
        r4 = (r3 - k % count) & mask
        words[(k + p) % count] ^= r3
        words[(k + q) % count] ^= r4
        words[k % count] = r4
    return words


def _simon(values: np.ndarray, keys: list[int], width: int) -> np.ndarray:
    """The Simon cipher's rounds, two per key pair, on blocks of 2 * `width` bits (unsigned values, a
    block's bits in `values`' type)."""
    kind = values.dtype.type
    mask = kind((1 << width) - 1)

    def rotl(x: np.ndarray, r: int) -> np.ndarray:
        return ((x << kind(r)) | (x >> kind(width - r))) & mask

    def f(x: np.ndarray) -> np.ndarray:
        return (rotl(x, 1) & rotl(x, 8)) ^ rotl(x, 2)

    left, right = (values >> kind(width)) & mask, values & mask
    for k1, k2 in zip(keys[::2], keys[1::2]):
        left = left ^ f(right) ^ (kind(k1) & mask)
        right = right ^ f(left) ^ (kind(k2) & mask)
    return (left << kind(width)) | right


class _Chunks(grain.MapDataset):
    """A stream's runs of `size` positions from `start`, each read in one call and stacked
    (`_stack_readable`): Grain's reading threads and workers hand over one array per chunk, not one per
    image."""

    def __init__(self, stream: _Stream, start: int, size: int):
        super().__init__()
        self._stream, self._start, self._size = stream, start, size

    def __len__(self) -> int:
        return max(0, -(-(self._stream.length - self._start) // self._size))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        begin = self._start + index * self._size
        return _stack_readable(self._stream.read(range(begin, min(self._stream.length, begin + self._size))))

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
