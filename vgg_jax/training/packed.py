"""A packed ImageFolder: decoded once into Grain's ArrayRecord format, for repeated epochs without JPEGs.

    DST/meta.json              classes, splits, the short side, what was skipped (written last)
    DST/train.array_record     one record per image: raw uint8 RGB at the short side, label, source path
    DST/val.array_record       when the folder had val/ (else `--data packed:DST` holds out 10%, as folders
    do)

`pack` writes into `DST.partial` and renames it to DST when every record and
meta.json are written, so an interrupted pack leaves no DST that looks
finished, and an existing DST is never replaced. Reading a record costs a
copy of its pixels: crop and flip then cost microseconds per image.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from typing import Any, Callable, Optional

import numpy as np

from vgg_jax.training.sources import ImageFolderSource
from vgg_jax.util.images import rescale_short_side

META = "meta.json"
FORMAT = "vgg_jax packed ImageFolder 1"
_HEADER = struct.Struct("<IIiH")  # height, width, label, path length; then the path (UTF-8) and the pixels


def encode(pixels: np.ndarray, label: int, path: str) -> bytes:
    """One record: the header, the source path and the raw RGB pixels."""
    name = path.encode("utf-8")[:65535]
    height, width = pixels.shape[:2]
    return (
        _HEADER.pack(height, width, label, len(name))
        + name
        + np.ascontiguousarray(pixels, np.uint8).tobytes()
    )


def decode(record: bytes, where: str) -> dict[str, Any]:
    """A record's `{"image", "label", "path"}`; a ValueError naming `where` for a damaged one."""
    try:
        height, width, label, length = _HEADER.unpack_from(record)
        start = _HEADER.size + length
        path = record[_HEADER.size : start].decode("utf-8")
        if len(record) - start != height * width * 3:
            raise ValueError(f"{len(record) - start} pixel bytes for {height}x{width}x3")
        image = np.frombuffer(record, np.uint8, offset=start).reshape(height, width, 3)
    except (struct.error, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{where} is damaged ({error}); pack the folder again") from None
    return {"image": image, "label": label, "path": path}


def pack(
    src: str,
    dst: str,
    short_side: int = 256,
    overwrite: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict[str, Any]:
    """Writes the ImageFolder `src` (its train/ and val/ when it has them) into `dst`; returns meta.json's
    content.

    Every image is rescaled so that its short side is `short_side` (train at
    S up to it: `--scale` above it would upsample). Unreadable files are
    skipped with a warning naming each, and listed in meta.json.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    if short_side < 32:
        raise ValueError(f"short_side must be at least 32, got {short_side}")
    if os.path.exists(dst) and not overwrite:
        raise ValueError(f"{dst} already exists; choose another DST or pass --overwrite to replace it")
    splits = {"train": os.path.join(src, "train"), "val": os.path.join(src, "val")}
    if not all(os.path.isdir(path) for path in splits.values()):
        splits = {"train": src}
    sources = {"train": ImageFolderSource(splits["train"])}
    classes = sources["train"].classes
    if "val" in splits:  # labelled by the training folder's classes
        sources["val"] = ImageFolderSource(splits["val"], classes=classes)
    partial = dst.rstrip(os.sep) + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # an interrupted pack of the same DST
    os.makedirs(partial)
    total, done = sum(len(source) for source in sources.values()), 0
    meta: dict[str, Any] = {
        "format": FORMAT,
        "source": os.path.abspath(src),
        "short_side": short_side,
        "classes": classes,
        "splits": {},
        "skipped": [],
    }
    for name, source in sources.items():
        writer = ArrayRecordWriter(os.path.join(partial, f"{name}.array_record"), "group_size:1")
        count = 0
        try:
            for index in range(len(source)):
                element = source[index]  # an unreadable file: None, with a warning naming it
                done += 1
                if progress:
                    progress(done, total)
                if element is None:
                    continue
                pixels = rescale_short_side(element["image"], short_side)
                writer.write(encode(pixels, element["label"], source.files[index][0]))
                count += 1
        finally:
            writer.close()
        meta["splits"][name] = count
        meta["skipped"] += list(source.skipped)
    if not meta["splits"]["train"]:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"no image in {src} could be read; nothing was packed")
    with open(os.path.join(partial, META), "w") as file:
        json.dump(meta, file, indent=1)
    if os.path.exists(dst):  # --overwrite: the old pack goes only now that the new one is whole
        shutil.rmtree(dst)
    os.rename(partial, dst)
    meta["bytes"] = sum(os.path.getsize(os.path.join(dst, name)) for name in os.listdir(dst))
    return meta


def read_meta(dst: str) -> dict[str, Any]:
    """A finished pack's meta.json; one line saying what DST is instead when it is not one."""
    path = os.path.join(dst, META)
    if not os.path.isfile(path):
        interrupted = os.path.isdir(dst.rstrip(os.sep) + ".partial")
        raise ValueError(
            f"--data packed:{dst}: {dst} is not a finished pack (no {META})"
            + (
                "; an interrupted pack was left in "
                + dst.rstrip(os.sep)
                + ".partial: run pack_images.py again"
                if interrupted
                else "; make one with scripts/pack_images.py SRC DST"
            )
        )
    try:
        with open(path) as file:
            meta = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--data packed:{dst}: {path} could not be read ({error}); pack the folder again"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f"--data packed:{dst}: {path} is not a vgg_jax pack ({FORMAT!r}); pack the folder again"
        )
    return meta


class PackedSource:
    """One split of a pack, as a random-access source of `{"image", "label"}` (the path names bad records)."""

    def __init__(self, dst: str, split: str = "train"):
        import grain

        self.meta = read_meta(dst)
        self.path = os.path.join(dst, f"{split}.array_record")
        try:
            self.records = grain.sources.ArrayRecordDataSource([self.path])
        except Exception as error:  # array_record raises RuntimeError (and others) for a bad file
            raise ValueError(
                f"--data packed:{dst}: {self.path} could not be opened ({error}); pack again"
            ) from None
        self.classes = list(self.meta["classes"])
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        element = decode(self.records[index], f"record {index} of {self.path}")
        return {"image": element["image"], "label": element["label"]}

    def __repr__(self) -> str:
        return f"PackedSource({self.path!r}, records={len(self)})"
