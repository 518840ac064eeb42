"""A model to ship: "uint8 images in, probabilities out" as a `jax.export` artifact (serialized StableHLO).

The artifact holds the weights, the pixel convention and the softmax; its
batch dimension is symbolic. Its input is (N, S, S, 3) uint8 RGB at the
model's crop size S; resizing and centre-cropping a photo to S is the
client's job (docs/weights.md gives the few lines). A client needs jax and
jaxlib (and flatbuffers, which `jax.export.deserialize` reads with), never
vgg_jax:

    exported = jax.export.deserialize(open("model.jax", "rb").read())
    probabilities = exported.call(images_uint8)

Beside it: `model.jax.json` records the crop size, the class names and the
pixel convention the artifact applies; `model.jax.requirements.txt` lists
what a client needs (`CLIENT_REQUIREMENTS`); `model.jax.client.py` is such a
client, which resizes and crops photos as the docs say and prints each one's
top classes.
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
# A client's needs, never vgg_jax: jax reads the artifact (jax.export reads those of older versions too),
# flatbuffers is its deserializer's, NumPy and Pillow make the crops (the client beside the artifact).
CLIENT_REQUIREMENTS = ("jax>={jax}", "jaxlib>={jax}", "flatbuffers>=23", "numpy>=1.24", "Pillow>=9")
CLIENT = """\"""Top classes of photos from {name}, the serving artifact beside this file; it needs {needs}.

    python -m pip install -r {name}.requirements.txt
    python {name}.client.py cat.jpg dog.png

Each photo's short side is resized to round(S * 256 / 224) and its centre S x S
cropped (torchvision's Resize(256) + CenterCrop(224), scaled to the artifact's
crop S), with Pillow's bilinear resize. Prints one JSON line per photo.
\"""

import json
import os
import sys

import jax
import numpy as np
from PIL import Image

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), {name!r})


def crop(path, size):
    image = Image.open(path).convert("RGB")
    scale = round(size * 256 / 224) / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)


def main(paths, top=5):
    with open(HERE, "rb") as file:
        exported = jax.export.deserialize(file.read())
    with open(HERE + ".json") as file:
        described = json.load(file)
    crops = np.stack([crop(path, described["image_size"]) for path in paths])
    names = described["classes"]
    for path, row in zip(paths, np.asarray(exported.call(crops))):
        best = np.argsort(-row)[:top]
        found = [
            dict(index=int(i), name=names[i] if names else str(i), probability=float(row[i])) for i in best
        ]
        print(json.dumps(dict(image=path, top=found)))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(f"usage: python {{sys.argv[0]}} IMAGE [IMAGE ...]")
    main(sys.argv[1:])
"""


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
    sidecar, requirements, client = path + ".json", path + ".requirements.txt", path + ".client.py"
    for target in (path, sidecar, requirements, client):
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
    needs = [requirement.format(jax=jax.__version__) for requirement in CLIENT_REQUIREMENTS]
    write_text(requirements, "".join(f"{requirement}\n" for requirement in needs))
    name = os.path.basename(path)
    write_text(client, CLIENT.format(name=name, needs=", ".join(n.split(">")[0] for n in needs)))
    return description
