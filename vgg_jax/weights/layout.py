"""What every weights converter shares: the model's own layout (`variable_shapes`), the load report, and
nested-dict helpers.

A converter maps a file's tensors to these shapes by name and reports every
difference (`LoadReport`); `checked` gives the variables, raising on any
difference (strict) or warning of each (`LoadWarning`).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Mapping

import numpy as np

FC_WINDOW = 7  # torchvision pools to 7x7 before fc6; Keras's top expects 224 images


class LoadWarning(UserWarning):
    """A non-strict load let differences from the model's layout through (the message lists them)."""


@dataclasses.dataclass
class LoadReport:
    """What a conversion of `source` mapped, and every difference from the target layout; `hint` says how
    to fix them, where it can be told."""

    mapped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    source: str = "the weights"
    hint: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        lines = [f"  missing: {name}" for name in self.missing]
        lines += [f"  unexpected: {name}" for name in self.unexpected]
        lines += [
            f"  wrong shape: {name}: expected {want}, file has {got}" for name, want, got in self.mismatched
        ]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])

    def summary(self) -> str:
        return f"mapped {len(self.mapped)} tensors" + ("" if self.ok else "\n" + self.problems())


def as_numpy(tensor: Any) -> np.ndarray:
    """A NumPy copy of a torch tensor or array-like, without needing torch."""
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        tensor = tensor.numpy()
    return np.asarray(tensor)


def set_in(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        flat.update(flatten(value, path) if isinstance(value, Mapping) else {path: np.asarray(value)})
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        set_in(tree, tuple(path.split("/")), np.asarray(value))
    return tree


@functools.lru_cache(maxsize=32)
def variable_shapes(
    config: str, batch_norm: bool = False, num_classes: int = 1000, fc_width: int = 4096
) -> dict[str, Any]:
    """`{collection: {layer: {leaf: shape}}}` of a model initialised at 224 pixels (fc6 takes 7x7xC).

    From `jax.eval_shape(model.init, ...)`: the model itself says what its
    weights look like, and nothing is computed. Every converter checks
    against these shapes. The result is cached: do not change it.
    """
    import jax
    import jax.numpy as jnp
    from flax.core import unfreeze

    from vgg_jax.model.vgg import VGG

    model = VGG(config=config, batch_norm=batch_norm, num_classes=num_classes, fc_width=fc_width)
    abstract = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    )
    return jax.tree.map(lambda leaf: tuple(leaf.shape), unfreeze(abstract))


def checked(variables: dict, report: LoadReport, strict: bool) -> dict:
    """The converted variables. Any difference from the layout raises, listing each (strict), or is a
    `LoadWarning`; the report's notes are warnings either way."""
    if not report.ok:
        message = f"{report.source} does not match the model:\n{report.problems()}{report.hint}"
        if strict:
            raise ValueError(message)
        warnings.warn(message, LoadWarning, stacklevel=3)
    for note in report.notes:
        warnings.warn(note, stacklevel=3)
    return variables
