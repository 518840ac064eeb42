"""Data sources: random-access (`__len__`, `__getitem__`) images and labels, for the input pipeline.

Each element is `{"image": uint8 HWC RGB, "label": int}`: an ImageFolder
(one sub-folder per class), scikit-learn's handwritten digits (shipped with
it: no download), in-memory arrays, a pool of synthetic images, or a fixed
subset of another source. `vgg_jax.training.data` streams them; packs
(`vgg_jax.training.packed`) are written from and read like them.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import warnings
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from vgg_jax.util.images import IMAGE_EXTENSIONS, to_rgb8

DIGITS_VALIDATION = 297  # fixed held-out digits; 1,500 remain for training


class ArraySource:
    """Images and labels held in memory (small data: digits, tests)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        classes: Optional[Sequence[str]] = None,
    ):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.num_classes = images, labels.astype(np.int32), num_classes
        self.classes = None if classes is None else list(classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "label": int(self.labels[index])}

    def __repr__(self) -> str:  # Grain checks it when an iterator state is restored
        return f"ArraySource(images={self.images.shape}, num_classes={self.num_classes})"


class SyntheticSource:
    """Random images and labels (benchmarks, smoke tests): element i is image i % 256 of a pool made once.

    Drawing a fresh random image for every element cost more host time
    than the rest of the input pipeline together, and this source is what
    measures the training loop's own overhead (docs/benchmarks.md).
    """

    POOL = 256

    def __init__(self, num_examples: int, image_size: int, num_classes: int, seed: int = 0):
        self.num_examples, self.image_size, self.num_classes, self.seed = (
            num_examples,
            image_size,
            num_classes,
            seed,
        )
        self._pool = []
        for index in range(min(num_examples, self.POOL)):
            rng = np.random.default_rng((seed, index))
            image = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
            image.setflags(write=False)  # shared by every element that reuses it
            self._pool.append((image, int(rng.integers(num_classes))))

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self._pool[index % len(self._pool)]
        return {"image": image, "label": label}

    def __repr__(self) -> str:
        return (
            f"SyntheticSource({self.num_examples}, {self.image_size}, {self.num_classes}, seed={self.seed})"
        )


class DataWarning(UserWarning):
    """Something in a data folder was skipped or is missing; printed as one line naming it."""


class UnreadableImageWarning(DataWarning):
    """An image file was skipped: empty, truncated, corrupt or not an image. The message names it.

    Printed as one line, `warning: skipping image PATH: REASON`, where
    `one_line_warnings` was called (the commands and the input workers).
    """


def one_line_warnings() -> None:
    """Prints `DataWarning`s as one line, `warning: MESSAGE`, without Python's source-line echo.

    A process-wide setting, so it is the command line's to make (and each
    input worker's, which `make_loader` starts): importing the library
    changes nothing.
    """
    default = warnings.formatwarning
    if getattr(default, "vgg_jax_one_line", False):
        return

    def formatwarning(message, category, filename, lineno, line=None):
        if isinstance(category, type) and issubclass(category, DataWarning):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    formatwarning.vgg_jax_one_line = True
    warnings.formatwarning = formatwarning


class ImageFolderSource:
    """An ImageFolder layout: one sub-folder per class holding JPEG/PNG files.

    Only the file list is held in memory; each image is decoded when read.
    Classes are the sorted sub-folder names, labels their positions (an empty
    class folder keeps its label, with a warning, so labels match the folder
    names). Bad files, with a warning naming each:

    - grayscale, palette, CMYK or RGBA images are converted to RGB;
    - zero-byte files are skipped when the folder is listed;
    - truncated, corrupt or non-image files are skipped when read: the
      element is None, and `make_loader` filters it out before batching.

    `skipped` lists the files skipped so far in this process. A folder with no
    files, or whose every file fails, is an error.
    """

    def __init__(
        self, root: str, classes: Optional[Sequence[str]] = None, draft_short_side: Optional[int] = None
    ):
        self.draft_short_side = draft_short_side
        if not os.path.isdir(root):
            raise ValueError(f"image folder {root} does not exist or is not a directory")
        self.root = root
        self.classes = (
            list(classes)
            if classes is not None
            else sorted(
                entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
            )
        )
        if not self.classes:
            raise ValueError(
                f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>.png)"
            )
        self.files: list[tuple[str, int]] = []
        self.skipped: list[str] = []
        self._failed: set[int] = set()
        for label, name in enumerate(self.classes):
            directory = os.path.join(root, name)
            if not os.path.isdir(directory):
                warnings.warn(
                    f"class folder {directory} is missing; class {name!r} keeps label {label} and has no "
                    "images",
                    DataWarning,
                    stacklevel=2,
                )
                continue
            found = 0
            for file in sorted(os.listdir(directory)):
                if not file.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                path = os.path.join(directory, file)
                if os.path.getsize(path) == 0:
                    self._skip(path, "the file is empty (0 bytes)")
                    continue
                self.files.append((path, label))
                found += 1
            if not found:
                warnings.warn(
                    f"class folder {directory} holds no usable images; class {name!r} keeps label {label}",
                    DataWarning,
                    stacklevel=2,
                )
        if not self.files:
            raise ValueError(
                f"image folder {root} holds no usable {'/'.join(IMAGE_EXTENSIONS)} files in its class folders"
                + (f" ({len(self.skipped)} skipped as empty)" if self.skipped else "")
            )
        self.num_classes = len(self.classes)

    def with_draft(self, short_side: Optional[int]) -> "ImageFolderSource":
        """The same files, JPEGs decoded at a reduced scale where `short_side` is at most half theirs."""
        copy = object.__new__(ImageFolderSource)
        copy.__dict__.update(self.__dict__, draft_short_side=short_side)
        return copy

    def _skip(self, path: str, reason: str) -> None:
        self.skipped.append(path)
        warnings.warn(f"skipping image {path}: {reason}", UnreadableImageWarning, stacklevel=3)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        path, label = self.files[index]
        try:
            with Image.open(path) as image:
                if self.draft_short_side and image.format == "JPEG":
                    image.draft(image.mode, draft_size(image.size, self.draft_short_side))
                image.load()  # decodes fully: truncated files fail here, not later
                pixels = to_rgb8(image)  # 16-bit and float modes scaled, not clipped
        except Exception as error:  # PIL raises several types for bad files
            if index not in self._failed:
                self._failed.add(index)
                self._skip(path, f"{type(error).__name__}: {error}")
            if len(self._failed) == len(self.files):
                raise ValueError(
                    f"no image in {self.root} could be read ({len(self._failed)} failed; the first was "
                    f"{self.skipped[0]})"
                ) from None
            return None
        return {"image": pixels, "label": label}

    def __repr__(self) -> str:
        return f"ImageFolderSource({self.root!r}, files={len(self.files)}, classes={len(self.classes)})"


def draft_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """The (width, height) to ask of Pillow's JPEG `draft` so that the short side stays `short_side` or more.

    Pillow then decodes at the smallest of 1/1, 1/2, 1/4 and 1/8 of the size
    that still covers it (a DCT-domain downscale, several times cheaper than
    decoding in full): only when `short_side` is at most half the image's.
    """
    width, height = size
    factor = short_side / min(width, height)
    return max(1, math.ceil(width * factor)), max(1, math.ceil(height * factor))


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits (0-16) and labels: from scikit-learn, else from the file `$VGG_JAX_DIGITS` names."""
    path = os.environ.get("VGG_JAX_DIGITS")
    if path:
        try:
            with np.load(path) as arrays:
                return arrays["images"], arrays["target"]
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(
                f"VGG_JAX_DIGITS={path} is not a digits file from vgg_jax.training.sources.export_digits "
                f"({error})"
            ) from None
    csv = _sklearn_digits_csv()
    if csv is not None:  # the file scikit-learn's load_digits reads, without importing scikit-learn (2 s)
        with gzip.open(csv, "rt") as file:
            table = np.loadtxt(file, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ValueError(
            "--data digits needs scikit-learn: pip install -e '.[digits]' (without it, set VGG_JAX_DIGITS "
            "to a file written by vgg_jax.training.sources.export_digits on a machine that has it)"
        ) from None
    digits = sklearn_digits()
    return digits.images, digits.target


def _sklearn_digits_csv() -> Optional[str]:
    """The digits table inside an installed scikit-learn (`datasets/data/digits.csv.gz`), found without
    importing it; None where scikit-learn is missing or keeps the file elsewhere."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            return path
    return None


def export_digits(path: str) -> None:
    """Saves scikit-learn's digits (images and labels, about 45 KB) to `path`, for machines without
    scikit-learn.

    There, set `VGG_JAX_DIGITS=path`; `load_digits` then reads this file.
    """
    from vgg_jax.util.files import atomic_write

    images, target = _digits_arrays()

    def write(temporary: str) -> None:
        with open(temporary, "wb") as file:
            np.savez_compressed(file, images=np.asarray(images).astype(np.uint8), target=np.asarray(target))

    atomic_write(path, write)


def load_digits(image_size: int = 32) -> tuple[ArraySource, ArraySource]:
    """scikit-learn's handwritten digits (ships inside the package): train and validation.

    1,797 images of 8x8 in 17 grey levels, upsampled bilinearly to
    `image_size` and repeated to RGB. The split is fixed: a seed-0 permutation,
    the first 297 for validation. Needs the `digits` extra (scikit-learn), or
    `$VGG_JAX_DIGITS` naming a file from `export_digits`.
    """
    images_8x8, target = _digits_arrays()
    grey = (np.asarray(images_8x8, np.float64) * (255.0 / 16.0)).round().astype(np.uint8)
    resized = np.stack(
        [np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR)) for im in grey]
    )
    images = np.repeat(resized[..., None], 3, axis=-1)
    order = np.random.RandomState(0).permutation(len(images))
    val, train = order[:DIGITS_VALIDATION], order[DIGITS_VALIDATION:]
    labels = np.asarray(target).astype(np.int32)
    names = [str(digit) for digit in range(10)]
    return ArraySource(images[train], labels[train], 10, names), ArraySource(
        images[val], labels[val], 10, names
    )


class Subset:
    """A fixed subset of a random-access source."""

    def __init__(self, source: Any, indices: np.ndarray):
        self.source, self.indices, self.num_classes = source, np.sort(indices), source.num_classes
        self.classes = getattr(source, "classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.source[int(self.indices[index])]

    def __repr__(self) -> str:
        return f"Subset({self.source!r}, {len(self.indices)} of {len(self.source)})"
