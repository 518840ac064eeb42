"""Coarse-to-fine initialisation (Sec. 3.1): seed a deeper config from a shallower one, by name.

"We initialised the first four convolutional layers and the last three
fully-connected layers with the layers of net A (the intermediate layers were
initialised randomly)." A's first four convs (conv1_1, conv2_1, conv3_1,
conv3_2) exist with the same shapes in B, C, D and E, so the copy works by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Union

import jax
import jax.numpy as jnp

from vgg_jax.model.configs import conv_layers, resolve_config
from vgg_jax.model.infer import SHAPE_FIELDS, infer_model, init_image_size
from vgg_jax.model.vgg import CLASSIFIER, VGG

LAYER_CHOICES = ("paper", "matching")  # the named choices of `layers`; explicit layer names work too
# The target's fields that fix its parameters' shapes: by default the source's own, read off its variables.


class LayerShapeError(ValueError):
    """A layer asked for has other shapes in the target than in the source; it names the layer and both."""

    def __init__(self, layer: str, source: str, source_shapes: Any, target: str, target_shapes: Any) -> None:
        self.layer, self.source_shapes, self.target_shapes = layer, source_shapes, target_shapes
        super().__init__(
            f"layer {layer} has shapes {source_shapes} in {source} but {target_shapes} in {target}; "
            f"match num_classes / image_size / width_scale / fc_width to the source's, or pass "
            f"exclude=['{layer}']"
        )


@dataclasses.dataclass
class WarmStartReport:
    """What `warm_start` copied from the source and what the target initialised itself."""

    source_config: str
    target_config: str
    copied: list[str]
    initialised: list[str]
    excluded: list[str]

    def __str__(self) -> str:
        lines = [
            f"warm start {self.source_config} -> {self.target_config}",
            f"  copied from {self.source_config}: {', '.join(self.copied) or '(none)'}",
            f"  initialised by {self.target_config}: {', '.join(self.initialised) or '(none)'}",
        ]
        if self.excluded:
            lines.append(f"  excluded by the caller: {', '.join(self.excluded)}")
        return "\n".join(lines)


def _shapes(tree: Any) -> dict:
    return jax.tree.map(jnp.shape, tree)


def _asked_layers(layers: Any, source: str, target: str, source_params: Any, target_params: Any) -> list[str]:
    """The layer names `layers` asks for ("paper", "matching" or explicit names)."""
    if layers == "paper":
        source_convs, target_convs = conv_layers(source), conv_layers(target)
        if len(source_convs) > len(target_convs):
            raise ValueError(
                f"coarse-to-fine goes from a shallower config to a deeper one; {source} has more convs than "
                f"{target}"
            )
        return [name for name, _, _ in source_convs[:4]] + list(CLASSIFIER)
    if layers == "matching":
        return [name for name in source_params if name in target_params and not name.endswith("_bn")]
    if isinstance(layers, str):
        raise ValueError(f"layers must be 'paper', 'matching' or a list of layer names, got {layers!r}")
    return list(layers)


def warm_start(
    source_variables: dict[str, Any],
    source_config: str,
    target_config: str,
    rng: jax.Array,
    layers: Union[str, Iterable[str]] = "paper",
    *,
    exclude: Iterable[str] = (),
    image_size: int | None = None,
    **target_model_kwargs: Any,
) -> tuple[dict[str, Any], WarmStartReport]:
    """Initialises `target_config` and copies layers of a trained source into it.

    Args:
        source_variables: the source's variables ({"params": ...}, plus
            "batch_stats" with BN).
        source_config, target_config: config names or aliases.
        rng: initialises the target's own layers with its init scheme.
        layers: "paper" (the source's first four convs and fc6-fc8),
            "matching" (every layer present in both), or explicit layer names.
        exclude: layer names not to copy (for example "fc8" for other classes).
        image_size: the target's init image size; by default the source's (from its fc6 kernel).
        **target_model_kwargs: `VGG` fields of the target (num_classes, width_scale, batch_norm, ...);
            the shape-defining ones (`SHAPE_FIELDS`) default to the source's, read off its variables.

    Returns:
        (target_variables, report). A layer's BN parameters and statistics
        travel with it.

    Raises:
        ValueError: a named layer is missing from either model, a layer asked for
            has other shapes in the target (the message names it and both
            shapes), nothing would be copied, or a 'paper' warm start goes
            from a deeper config to a shallower one.
    """
    source, target = resolve_config(source_config), resolve_config(target_config)
    source_params = source_variables["params"]
    inferred = infer_model(source_variables, source)
    target_model_kwargs = {
        **{field: getattr(inferred, field) for field in SHAPE_FIELDS},
        **target_model_kwargs,
    }
    model = VGG(config=target, **target_model_kwargs)
    if image_size is None:
        image_size = (
            init_image_size(source_params, source, inferred.width_scale) if "fc6" in source_params else 224
        )
    target_variables = dict(jax.jit(model.init)(rng, jnp.zeros((1, image_size, image_size, 3), jnp.float32)))
    target_params = target_variables["params"]
    excluded = list(dict.fromkeys(exclude))

    wanted = _asked_layers(layers, source, target, source_params, target_params)
    wanted = [name for name in wanted if name not in excluded]

    for name in wanted:
        for side, params in (("source " + source, source_params), ("target " + target, target_params)):
            if name not in params:
                raise ValueError(f"layer {name} is not in the {side} model; its layers are {sorted(params)}")
        source_shapes, target_shapes = _shapes(source_params[name]), _shapes(target_params[name])
        if source_shapes != target_shapes:
            raise LayerShapeError(name, source, source_shapes, target, target_shapes)
    if not wanted:
        raise ValueError(
            f"warm start {source} -> {target} would copy no layer (layers={layers!r}, exclude={excluded}); "
            "name layers that both models have"
        )

    for name in wanted:  # a layer's BN parameters and statistics travel with it
        for collection in ("params", "batch_stats"):
            for key in (name, f"{name}_bn"):
                if key in source_variables.get(collection, {}) and key in target_variables.get(
                    collection, {}
                ):
                    target_variables[collection] = {
                        **target_variables[collection],
                        key: source_variables[collection][key],
                    }
    initialised = [name for name in target_params if name not in wanted and not name.endswith("_bn")]
    return target_variables, WarmStartReport(source, target, wanted, initialised, excluded)
