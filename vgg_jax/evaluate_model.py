"""Evaluate any model the project can name: a run's checkpoint, a weights file or a pretrained name.

`scripts/evaluate.py` is its command line. The model, its variables and the
pixel convention come from the source: a run's config.json (its config,
widths, mean RGB or `--preprocess`, crop size), the weights themselves for a
file (read as `config`), or the registry for a pretrained name. The images are
the run's own validation split for a run; for a file or a name, an
ImageFolder's `val/` when it has one, else every image in it, or the
digits' 297 held-out images. Every method and scale of the paper's Sec. 3.2
is available (`vgg_jax.evaluate`), with a progress bar over the batches.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Optional, Sequence

from vgg_jax import data as data_lib
from vgg_jax import evaluate as evaluate_lib
from vgg_jax import finetune
from vgg_jax.model import VGG


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


def open_target(spec: str, config: str = "D", preprocess: Optional[str] = None, crop_size: Optional[int] = None) -> Target:
    """The model and variables `spec` names (a run's workdir, a weights file, or SOURCE:NAME)."""
    from vgg_jax import loop
    from vgg_jax.perceptual import infer_model

    kind = finetune.describe_init_from(spec)
    if kind is None:
        raise ValueError(f"{spec} is not a run's workdir (no config.json), a weights file ({', '.join(finetune.WEIGHT_FILES)}) "
                         "or a pretrained name such as torchvision:vgg16")
    variables, source_config, description = finetune.read_init_source(spec, config, loop.load_params)
    if kind == "run":
        saved = loop.read_config(spec, "evaluate")
        classes = variables["params"]["fc8"]["kernel"].shape[-1]
        model = loop.build_model(saved, classes)
        mean = None if saved.mean_rgb is None else tuple(saved.mean_rgb)
        return Target(model, variables, description, crop_size or saved.image_size, preprocess or saved.preprocess, mean, saved.data)
    model = infer_model(variables, source_config)
    if kind == "pretrained":
        preprocess = preprocess or finetune.weights_preprocess(spec)
    return Target(model, variables, description, crop_size or 224, preprocess)


def evaluation_images(target: Target, data: Optional[str]) -> Any:
    """The images to evaluate on: the run's validation split, or `data` (digits, folder:PATH)."""
    spec = data or target.run_data
    if spec is None:
        raise ValueError("say which images to evaluate on: --data digits or --data folder:PATH")
    if target.run_data is not None and spec == target.run_data or spec == "digits":
        return data_lib.load_data(spec, target.crop_size)[1]
    if not spec.startswith("folder:"):
        raise ValueError(f"unknown --data {spec!r}; use digits or folder:PATH")
    root = spec[len("folder:") :]
    return data_lib.ImageFolderSource(os.path.join(root, "val") if os.path.isdir(os.path.join(root, "val")) else root)


def run(
    target: Target,
    images: Any,
    method: str = "center",
    scales: Optional[Sequence[int]] = None,
    batch_size: int = 32,
    workers: int = 0,
    progress: Callable[[Any, int], Any] = lambda batches, total: batches,
) -> dict[str, Any]:
    """Top-1 and top-5 error of `target` on `images` by one of the paper's methods, as `vgg_jax.evaluate.evaluate`."""
    if method not in evaluate_lib.METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(evaluate_lib.METHODS)}")
    scales = list(scales or [target.crop_size])
    loader = data_lib.make_loader(
        images, data_lib.EvalTransform(max(scales), target.mean_rgb, target.preprocess), batch_size,
        seed=0, shuffle=False, num_epochs=1, drop_remainder=False, worker_count=workers,
    )
    total = math.ceil(len(images) / batch_size)
    result = evaluate_lib.evaluate(target.model, target.variables, progress(loader, total), method, scales, target.crop_size)
    return {"model": target.description, **result}
