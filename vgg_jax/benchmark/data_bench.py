"""The input pipeline's speed: images per second per worker and in total, against torchvision's DataLoader.

Training feeds the device uint8 crops (`TrainTransform(on_device=True)`),
so that is what is timed here: decode (JPEGs at a reduced scale where the
largest S allows), scale jittering, the crop (only its window resized), the
flip and the PCA colour draw. torchvision's DataLoader runs the same
augmentation the way its users write it (`Resize(S)` with S drawn per image,
`RandomCrop`, `RandomHorizontalFlip`, `ToTensor`, the PCA shift,
`Normalize`), on the same files with the same number of workers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Annotated, Any, Callable, Iterable, Optional

import numpy as np
import tyro

from vgg_jax.util.options import FieldError, comma, positive

PEERS = ("torch",)


@dataclasses.dataclass(frozen=True)
class DataBenchConfig:
    """What to time; one field per `scripts/bench_data.py` flag."""

    data: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="DATA")]
    """an ImageFolder (PATH or folder:PATH; its train/ when it has one), or a pack (packed:PATH,
    scripts/pack_images.py)"""
    image_size: int = 224
    """the crop"""
    scale: Annotated[tuple[int, ...], comma("S[,S_MAX]", positive)] = (256, 512)
    """the short side S: S_MIN,S_MAX drawn per image (the paper's jitter) or one S"""
    batch_size: int = 32
    """images per batch"""
    batches: int = 20
    """timed batches"""
    warmup: int = 3
    """untimed batches first (worker start-up, caches)"""
    workers: int = 0
    """worker processes: Grain's for ours, the DataLoader's for torchvision (0: in this process)"""
    peers: Annotated[
        tuple[str, ...],
        comma("PEER", str.lower, choices=PEERS),
        tyro.conf.arg(name="vs", aliases=("--peers",)),
    ] = ()
    """also time torchvision's DataLoader in the same run"""
    feed: Annotated[Optional[float], tyro.conf.arg(metavar="IMG_PER_S")] = None
    """a step's rate in img/s: print the workers needed to feed it"""


def folder_of(spec: str) -> str:
    """The ImageFolder a DATA argument names (its train/ when it has one); one line when it is none."""
    from vgg_jax.training.data import parse_data

    _, path = parse_data(data_spec(spec))
    if not os.path.isdir(path):
        raise ValueError(
            f"DATA {spec}: no such folder; give an ImageFolder (one sub-folder of images per class)"
        )
    return os.path.join(path, "train") if os.path.isdir(os.path.join(path, "train")) else path


def data_spec(data: str) -> str:
    """DATA as a run's `data` spells it: a bare PATH is an ImageFolder."""
    return data if data.startswith(("folder:", "packed:")) else f"folder:{data}"


def check(config: DataBenchConfig) -> None:
    """Refuses settings that cannot run, before any worker starts."""
    if config.data is None:
        raise ValueError("give DATA, an ImageFolder or packed:PATH")
    if not 1 <= len(config.scale) <= 2 or min(config.scale) < config.image_size:
        raise FieldError(
            "scale", f"takes S or S_MIN,S_MAX, each at least the crop {config.image_size}, got {config.scale}"
        )
    for name in ("image_size", "batch_size", "batches"):
        if getattr(config, name) < 1:
            raise FieldError(name, f"must be at least 1, got {getattr(config, name)}")
    if config.warmup < 0 or config.workers < 0:
        raise ValueError("--warmup and --workers must be 0 or more")
    if config.feed is not None and not config.feed > 0:
        raise FieldError("feed", f"must be a positive rate in img/s, got {config.feed}")
    from vgg_jax.training.data import packed_splits, parse_data

    kind, path = parse_data(data_spec(config.data))
    if kind != "packed":
        folder_of(config.data)
    elif config.peers:
        raise FieldError("peers", "torch reads an ImageFolder; give the folder the pack was made from")
    else:
        packed_splits(path, config.image_size)  # one line when it is no pack, or packed too small


def time_batches(batches: Iterable[Any], count: int, warmup: int, batch_size: int) -> float:
    """Images per second over `count` batches after `warmup` untimed ones."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count * batch_size / (time.perf_counter() - start)


def ours(config: DataBenchConfig) -> Iterable[Any]:
    """vgg_jax's training loader on the data, as `train.py --data folder:PATH` (or `packed:PATH`) builds
    it."""
    from vgg_jax.training import data as data_lib

    scale = config.scale[0] if len(config.scale) == 1 else tuple(config.scale)
    source, _ = data_lib.load_data(
        data_spec(config.data), config.image_size, seed=0, draft_short_side=max(config.scale)
    )
    transform = data_lib.TrainTransform(config.image_size, scale, True, 0.1, None, "torch", on_device=True)
    return data_lib.make_loader(
        source,
        transform,
        config.batch_size,
        seed=0,
        shuffle=True,
        worker_count=config.workers,
        shard_index=0,
        shard_count=1,
    )


def torchvision_loader(config: DataBenchConfig) -> Iterable[Any]:
    """torchvision's ImageFolder and DataLoader with the same augmentation (needs torch and torchvision)."""
    import torch
    from torchvision import datasets, transforms

    from vgg_jax.training.data import PCA_EIGVAL, PCA_EIGVEC
    from vgg_jax.util.images import TORCH_MEAN, TORCH_STD

    low, high = min(config.scale), max(config.scale)
    eigval, eigvec = torch.from_numpy(PCA_EIGVAL / 255.0), torch.from_numpy(PCA_EIGVEC)

    def random_short_side(image: Any) -> Any:
        return transforms.functional.resize(image, int(torch.randint(low, high + 1, ()).item()))

    def lighting(tensor: Any) -> Any:  # AlexNet's PCA colour shift, on [0, 1] pixels
        alpha = torch.normal(0.0, 0.1, (3,))
        return tensor + (eigvec @ (alpha * eigval)).view(3, 1, 1)

    augment = transforms.Compose(
        [
            transforms.Lambda(random_short_side),
            transforms.RandomCrop(config.image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Lambda(lighting),
            transforms.Normalize(TORCH_MEAN, TORCH_STD),
        ]
    )
    dataset = datasets.ImageFolder(folder_of(config.data), transform=augment)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=config.workers,
        drop_last=True,
        persistent_workers=config.workers > 0,
    )


def _endless(make: Callable[[], Iterable[Any]]) -> Iterable[Any]:
    while True:
        yield from make()


def run(config: DataBenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Times ours (and the peers asked for) on the same files; returns the record and prints a summary."""
    check(config)
    workers = max(config.workers, 1)
    record: dict[str, Any] = {
        "data": config.data if config.data.startswith("packed:") else folder_of(config.data),
        "workers": config.workers,
        "scale": list(config.scale),
        "image_size": config.image_size,
        "batch_size": config.batch_size,
    }
    rate = time_batches(_endless(lambda: ours(config)), config.batches, config.warmup, config.batch_size)
    record["images_per_s"], record["images_per_s_per_worker"] = rate, rate / workers
    log(f"vgg_jax (Grain, uint8 to the device): {rate:.1f} img/s, {rate / workers:.1f} per worker")
    if "torch" in config.peers:
        peer = time_batches(
            _endless(lambda: torchvision_loader(config)), config.batches, config.warmup, config.batch_size
        )
        record["torch"] = {"images_per_s": peer, "images_per_s_per_worker": peer / workers}
        record["ratio"] = rate / peer
        log(
            f"torchvision DataLoader: {peer:.1f} img/s, {peer / workers:.1f} per worker; "
            f"ours / torchvision {rate / peer:.2f}x"
        )
    if config.feed:
        needed = math.ceil(config.feed / record["images_per_s_per_worker"])
        record["workers_to_feed"] = needed
        log(f"to feed {config.feed:g} img/s: about {needed} workers at this rate each (cores permitting)")
    return record


def write_jpeg_folder(
    root: str, count: int, size: tuple[int, int] = (500, 375), classes: int = 2, seed: int = 0
) -> str:
    """Writes `count` JPEGs of `size` (width, height) in `classes` folders, about ImageNet's ~75 KiB each.

    Smooth noise at quality 90, so that the files decode like photographs,
    not like flat colour; for tests and for `docs/benchmarks.md`'s runs.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    for index in range(count):
        folder = os.path.join(root, f"class{index % classes}")
        os.makedirs(folder, exist_ok=True)
        coarse = Image.fromarray(
            rng.integers(0, 256, (max(height // 8, 1), max(width // 8, 1), 3), dtype=np.uint8)
        )
        pixels = np.asarray(coarse.resize((width, height), Image.BICUBIC)).astype(np.int16)
        pixels = np.clip(pixels + rng.integers(-12, 13, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{index:05d}.jpg"), quality=90)
    return root
