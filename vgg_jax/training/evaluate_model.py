"""Evaluate any model the project can name: a run's checkpoint, a weights file or a pretrained name.

`scripts/evaluate.py` is its command line. The model, its variables and the
pixel convention come from the source: a run's config.json (its config,
widths, mean RGB or `--preprocess`, crop size), the weights themselves for a
file (read as `config`), or the registry for a pretrained name. The images are
the run's own validation split for a run; for a file or a name, an
ImageFolder's `val/` when it has one, else every image in it, or the
digits' 297 held-out images. Every method and scale of the paper's Sec. 3.2
is available (`vgg_jax.training.evaluate`), with a progress bar over the batches.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from vgg_jax.model.vgg import VGG
from vgg_jax.training import data as data_lib
from vgg_jax.training import evaluate as evaluate_lib
from vgg_jax.training import sources
from vgg_jax.util.images import NORMALIZE_MODES
from vgg_jax.weights import resolve
from vgg_jax.weights.named import require_pixels


@dataclasses.dataclass(frozen=True)
class Target:
    """What to evaluate: the model, its variables, and how its pixels and crop were set up."""

    model: VGG
    variables: dict[str, Any]
    description: str
    crop_size: int
    preprocess: Optional[str] = None
    mean_rgb: Optional[tuple[float, float, float]] = None
    run_data: Optional[str] = None  # a run's --data: its validation split is used
    classes: Optional[list[str]] = None  # the model's class names, where known


def open_target(
    spec: str, config: Optional[str] = None, preprocess: Optional[str] = None, crop_size: Optional[int] = None
) -> Target:
    """The model and variables `spec` names (`vgg_jax.weights.resolve`: a run's workdir, a weights file, or
    a published name)."""
    named = require_pixels(resolve.resolve(spec, config, preprocess))
    run_data = named.run["data"] if named.run else None
    mean = named.mean_rgb if named.preprocess == "paper" else None
    normalize = named.preprocess if named.preprocess in NORMALIZE_MODES else None
    return Target(
        named.model,
        named.variables,
        named.description,
        crop_size or named.image_size,
        normalize,
        mean,
        run_data,
        named.classes,
    )


def label_map(target: Target, images: Any) -> Optional[np.ndarray]:
    """The model's class index of each of the images' labels; None when they are the same classes.

    A model whose classes differ in count from the images' is refused in one
    line, unless every class of the images is among the model's names (an
    ImageFolder of some ImageNet classes, scored by a 1,000-class model).
    """
    classes = getattr(images, "classes", None)
    count = getattr(images, "num_classes", None)
    if (
        count is None
        or count == target.model.num_classes
        and (classes is None or target.classes is None or classes == target.classes)
    ):
        return None
    if classes is not None and target.classes is not None:
        index = {_key(name): position for position, name in enumerate(target.classes)}
        missing = [name for name in classes if _key(name) not in index]
        if not missing:
            return np.asarray([index[_key(name)] for name in classes], np.int32)
        if count == target.model.num_classes:
            return None  # same count, other names (a run's own folder, renamed): scored by position
        raise ValueError(
            f"{target.description} has {target.model.num_classes} classes and the images {count}, and the "
            "images' classes "
            f"{', '.join(repr(name) for name in missing[:3])}{' ...' if len(missing) > 3 else ''} are not "
            "among the model's; "
            "evaluate on images of the model's own classes"
        )
    if count == target.model.num_classes:
        return None
    raise ValueError(
        f"{target.description} has {target.model.num_classes} classes and the images {count}; the scores "
        "would be meaningless: "
        "evaluate on images of the model's own classes (or fine-tune it on these with train.py --init-from)"
    )


def _key(name: str) -> str:
    return " ".join(str(name).replace("_", " ").lower().split())


def evaluation_images(target: Target, data: Optional[str]) -> Any:
    """The images to evaluate on: the run's validation split, or any `--data` spec train.py takes.

    The run's own spec, digits and synthetic give their validation split; a
    folder or a pack named here gives its val split, else all its images.
    """
    spec = data or target.run_data
    if spec is None:
        raise ValueError(f"--data: say which images to evaluate on ({data_lib.DATA_FORMS})")
    kind, path = data_lib.parse_data(spec)
    if spec == target.run_data or kind in ("digits", "synthetic"):
        return data_lib.load_data(spec, target.crop_size)[1]
    if kind == "packed":
        train, val = data_lib.packed_splits(path, target.crop_size)
        return val if val is not None else train
    return sources.ImageFolderSource(
        os.path.join(path, "val") if os.path.isdir(os.path.join(path, "val")) else path
    )


def run(
    target: Target,
    images: Any,
    method: str = "center",
    scales: Optional[Sequence[int]] = None,
    batch_size: int = 32,
    workers: Union[str, int] = "auto",
    progress: Callable[[int], Callable[[int], None]] = lambda total: lambda done: None,
) -> dict[str, Any]:
    """Top-1 and top-5 error of `target` on `images` by one of the paper's methods, as
    `vgg_jax.training.evaluate.evaluate`.

    `progress(total_views)` returns the callback the evaluation calls with
    the views done after each call of the network (`evaluate.views_per_image`
    per image: 50 per scale for multi-crop).
    """
    if method not in evaluate_lib.METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(evaluate_lib.METHODS)}")
    scales = list(scales or [target.crop_size])
    mapping = label_map(target, images)
    loader = data_lib.make_loader(
        images,
        data_lib.EvalTransform(max(scales), target.mean_rgb, target.preprocess),
        batch_size,
        seed=0,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
        worker_count=data_lib.auto_workers(workers, images),
    )
    batches = (
        loader
        if mapping is None
        else ({**batch, "label": mapping[np.asarray(batch["label"])]} for batch in loader)
    )
    advance = progress(len(images) * evaluate_lib.views_per_image(method, scales))
    result = evaluate_lib.evaluate(
        target.model, target.variables, batches, method, scales, target.crop_size, progress=advance
    )
    return {"model": target.description, **result}
