"""A model to ship: "uint8 images in, probabilities out" as a `jax.export` artifact (serialized StableHLO).

The artifact holds the weights, the pixel convention and the softmax; its
batch dimension is symbolic. Its input is (N, S, S, 3) uint8 RGB at the
model's crop size S; resizing and centre-cropping a photo to S is the
client's job (docs/weights.md gives the few lines). A client needs jax and
jaxlib (and flatbuffers, which `jax.export.deserialize` reads with), never
vgg_jax:

    exported = jax.export.deserialize(open("model.jax", "rb").read())
    probabilities = exported.call(images_uint8)

A JSON file beside it (`model.jax.json`) records the crop size, the class
names and the pixel convention the artifact applies.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from vgg_jax.util import images as images_lib
from vgg_jax.util.files import write_bytes, write_text
from vgg_jax.weights.named import Resolved, require_pixels

PLATFORMS = ("cpu", "cuda")  # lowered for both: the artifact runs on a CPU or an NVIDIA GPU


def serving_function(named: Resolved) -> Any:
    """`uint8 (N, S, S, 3) -> float32 (N, classes)` probabilities, the weights closed over as constants."""
    named = require_pixels(named)
    model = dataclasses.replace(named.model, conv_impl="xla")  # the plain convolution, on every platform
    variables, mode, mean = named.variables, named.preprocess, named.mean_rgb

    def probabilities(images: jax.Array) -> jax.Array:
        logits = model.apply(variables, images_lib.preprocess(images, mode, mean))
        return jax.nn.softmax(logits, axis=-1)

    return probabilities


def export_serving(named: Resolved, path: str, platforms: Sequence[str] = PLATFORMS) -> dict[str, Any]:
    """Writes the serving artifact of `named` to `path` and its description to `path + ".json"`.

    Both are written atomically; an existing path is never replaced.
    Returns the description.
    """
    sidecar = path + ".json"
    for target in (path, sidecar):
        if os.path.exists(target):
            raise ValueError(f"{target} already exists; choose another output or remove it first")
    size = named.image_size
    (batch,) = jax.export.symbolic_shape("batch")
    try:
        exported = jax.export.export(jax.jit(serving_function(named)), platforms=tuple(platforms))(
            jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8)
        )
        data = exported.serialize()
    except ImportError as error:  # jax.export's serializer needs flatbuffers
        raise ValueError(
            f"exporting for serving needs flatbuffers: pip install flatbuffers ({error})"
        ) from None
    write_bytes(path, data)
    description = {
        "input": f"uint8 RGB images (batch, {size}, {size}, 3): resize the short side to "
        f"{round(size * 256 / 224)}, then crop the centre {size}x{size}",
        "output": f"float32 probabilities (batch, {named.model.num_classes})",
        "image_size": size,
        "preprocess": named.preprocess,
        "mean_rgb": None if named.mean_rgb is None else list(named.mean_rgb),
        "classes": named.classes,
        "platforms": list(exported.platforms),
        "source": named.description,
    }
    write_text(sidecar, json.dumps(description, indent=1))
    return description
