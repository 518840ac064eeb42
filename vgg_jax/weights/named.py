"""A model with everything needed to use it: what every way of naming one gives (`resolve`, `pretrained`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional

from vgg_jax.model.vgg import VGG, ModelConfig
from vgg_jax.util import images as images_lib


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A model named by a spec, with everything needed to feed it and to name its outputs.

    Attributes:
        model: the VGG these variables belong to (config, BN, widths, classes).
        variables: `{"params": ..., "batch_stats": ...}`.
        config: the canonical config ("A" ... "E").
        preprocess: "torch", "caffe" or "paper" (subtract `mean_rgb`), or None where nothing says.
        mean_rgb: the mean RGB (0-255) for "paper" pixels.
        classes: the class names, where known (ImageNet's for published weights, a run's folders).
        image_size: the crop the model was trained at (224 for published weights).
        description: what was read, for logs ("keras:vgg16", "run runs/a, step 40").
        kind: "pretrained", "file" or "run".
        run: a run's saved config.json (dict), else None.

    `model, variables = resolved` unpacks it, the Flax idiom (it is not a
    sequence otherwise), and `prepare(images)` turns RGB images into the
    pixels these weights expect.
    """

    model: VGG
    variables: dict[str, Any]
    config: str
    preprocess: Optional[str]
    mean_rgb: Optional[tuple[float, float, float]]
    classes: Optional[list[str]]
    image_size: int
    description: str
    kind: str
    run: Optional[dict[str, Any]] = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.variables))

    def prepare(self, images: Any, scale: float = 1.0) -> Any:
        """The model's input for RGB NHWC images (uint8, or float in [0, scale]): `vgg_jax.preprocess` with
        these weights' convention."""
        require_pixels(self, "preprocess=")
        return images_lib.preprocess(images, self.preprocess, self.mean_rgb, scale=scale)

    def metadata(self) -> dict[str, Any]:
        """What `vgg_jax.weights.save` records so that the weights can be used alone later."""
        return {
            key: value
            for key, value in {
                "config": self.config,
                "preprocess": self.preprocess,
                "mean_rgb": None if self.mean_rgb is None else list(self.mean_rgb),
                "classes": self.classes,
                "image_size": self.image_size,
                "source": self.description,
                "model": {  # VGG's settings whole (a `ModelConfig`), for the model to be built as it was
                    field.name: getattr(self.model, field.name) for field in dataclasses.fields(ModelConfig)
                },
            }.items()
            if value is not None
        }


def require_pixels(resolved: Resolved, argument: str = "--preprocess") -> Resolved:
    """The resolved model, or one line asking for `preprocess` when nothing says how its pixels were
    prepared."""
    if resolved.preprocess is None:
        raise ValueError(
            f"{resolved.description} does not say which pixels its weights expect; pass {argument} torch "
            "(torchvision's "
            f"weights: ImageNet mean and std) or caffe (Keras's and Caffe's: BGR minus the mean)"
        )
    if resolved.preprocess == "paper" and resolved.mean_rgb is None:
        raise ValueError(
            f"{resolved.description}: paper pixels need the training set's mean RGB, which it does not record"
        )
    return resolved
