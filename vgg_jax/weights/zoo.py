"""The model zoo: ImageNet weights in one line, `weights = vgg_jax.pretrained("vgg16")`.

The published files are downloaded once (`vgg_jax.weights.hub.fetch`: cached,
hash-verified, atomic, mirror-aware), converted once, and the converted
variables cached beside them as `.msgpack`, so a second call reads one local
file and makes no request.

Sources: `torchvision` (its `.pth` files; reading them once needs torch),
`keras` (`VGG16`/`VGG19` `.h5`, with or without the top; h5py) and `timm`
(its torch-free `.safetensors` copies of the torchvision weights, checked
against the SHA-256 the Hugging Face hub publishes).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from vgg_jax.model.configs import TORCHVISION_NAMES, resolve_config
from vgg_jax.model.vgg import VGG
from vgg_jax.weights import hub, imagenet
from vgg_jax.weights.named import Resolved

TORCHVISION_BASE = "https://download.pytorch.org/models/"
KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
TORCHVISION_LICENCE = (
    "BSD-3-Clause (torchvision); trained on ImageNet-1k, whose terms allow non-commercial research use"
)
TIMM_BASE = "https://huggingface.co/timm/"
TIMM_LICENCE = (
    "BSD-3-Clause (torchvision's weights, republished by timm as .safetensors); ImageNet-1k, "
    "non-commercial research use"
)
KERAS_LICENCE = "CC BY 4.0 (the original VGG release by Oxford's Visual Geometry Group, converted by Keras)"


@dataclasses.dataclass(frozen=True)
class Weights:
    """One published weight file and what a user needs to know about it."""

    name: str  # e.g. "vgg16_bn"
    source: str  # "torchvision" or "keras"
    config: str  # "A" ... "E"
    batch_norm: bool
    url: str
    sha256: Optional[str]  # a prefix where that is what the publisher gives (torchvision's file names)
    md5: Optional[str]  # Keras publishes MD5s
    top1: Optional[float]  # the publisher's ImageNet validation accuracy, percent
    top5: Optional[float]
    preprocess: str  # the `vgg_jax.preprocess` mode the weights expect
    licence: str
    include_top: bool = True
    # the Hugging Face hub publishes each file's SHA-256 in its X-Linked-Etag header
    hash_from_server: bool = False
    # the file's name in the cache and on a mirror (default: the URL's last part)
    cache_name: Optional[str] = None

    @property
    def file(self) -> str:
        return self.cache_name or self.url.rsplit("/", 1)[-1]


def _torchvision(name: str, file: str, top1: float, top5: float) -> Weights:
    config = next(c for c, n in TORCHVISION_NAMES.items() if name.split("_")[0] == n)
    return Weights(
        name,
        "torchvision",
        config,
        name.endswith("_bn"),
        TORCHVISION_BASE + file,
        file.rsplit("-", 1)[1][:8],
        None,
        top1,
        top5,
        "torch",
        TORCHVISION_LICENCE,
    )


def _keras(
    name: str, file: str, md5: str, include_top: bool, top1: Optional[float], top5: Optional[float]
) -> Weights:
    config = "D" if name.startswith("vgg16") else "E"
    return Weights(
        name,
        "keras",
        config,
        False,
        KERAS_BASE + name.split("_")[0] + "/" + file,
        None,
        md5,
        top1,
        top5,
        "caffe",
        KERAS_LICENCE,
        include_top,
    )


def _timm(entry: Weights) -> Weights:
    """timm's copy of a torchvision file (`timm/vgg16.tv_in1k`): the same weights as .safetensors, read
    without torch.

    timm stores fc6 as a 7x7 conv (`pre_logits.fc1`); `vgg_jax.weights` reads that layout.
    """
    repo = f"{entry.name}.tv_in1k"
    return dataclasses.replace(
        entry,
        source="timm",
        url=f"{TIMM_BASE}{repo}/resolve/main/model.safetensors",
        sha256=None,
        licence=TIMM_LICENCE,
        hash_from_server=True,
        cache_name=f"timm-{repo}.safetensors",
    )


# torchvision's figures: its model builders' metadata (ImageNet-1k validation, resize 256, centre crop 224).
# Keras's: the keras.io applications table (VGG16 71.3 / 90.1, VGG19 71.3 / 90.0).
WEIGHTS: dict[tuple[str, str], Weights] = {
    (w.name, w.source): w
    for w in (
        _torchvision("vgg11", "vgg11-8a719046.pth", 69.020, 88.628),
        _torchvision("vgg11_bn", "vgg11_bn-6002323d.pth", 70.370, 89.810),
        _torchvision("vgg13", "vgg13-19584684.pth", 69.928, 89.246),
        _torchvision("vgg13_bn", "vgg13_bn-abd245e5.pth", 71.586, 90.374),
        _torchvision("vgg16", "vgg16-397923af.pth", 71.592, 90.382),
        _torchvision("vgg16_bn", "vgg16_bn-6c64b313.pth", 73.360, 91.516),
        _torchvision("vgg19", "vgg19-dcbb9e9d.pth", 72.376, 90.876),
        _torchvision("vgg19_bn", "vgg19_bn-c79401a0.pth", 74.218, 91.842),
        _keras(
            "vgg16",
            "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            "64373286793e3c8b2b4e3219cbf3544b",
            True,
            71.3,
            90.1,
        ),
        _keras(
            "vgg16_notop",
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "6d6bbae143d832006294945121d1f1fc",
            False,
            None,
            None,
        ),
        _keras(
            "vgg19",
            "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
            "cbe5617147190e668d6c5d5026f83318",
            True,
            71.3,
            90.0,
        ),
        _keras(
            "vgg19_notop",
            "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "253f8cb515780f3b799900260a226db6",
            False,
            None,
            None,
        ),
    )
}
WEIGHTS.update(
    {
        (name, "timm"): _timm(entry)
        for (name, source), entry in list(WEIGHTS.items())
        if source == "torchvision"
    }
)
SOURCES = ("torchvision", "keras", "timm")


def weights_info(name: str, source: str = "torchvision") -> Weights:
    """The entry for a name (`vgg16`, `vgg16_bn`, a paper letter such as "D", `vgg16_notop` for Keras) and
    source."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
    key = str(name).strip().lower().replace("-", "_")
    suffix = next((s for s in ("_bn", "_notop") if key.endswith(s)), "")
    base = key[: len(key) - len(suffix)] if suffix else key
    try:
        base = TORCHVISION_NAMES.get(resolve_config(base), base)
    except ValueError:
        pass
    entry = WEIGHTS.get((base + suffix, source))
    if entry is None:
        names = ", ".join(sorted(n for n, s in WEIGHTS if s == source))
        raise ValueError(f"no {source} weights named {name!r}; {source} publishes {names}")
    return entry


def pretrained(
    name: str, source: str = "torchvision", mirror: Optional[str] = None, **model_kwargs: Any
) -> Resolved:
    """Published ImageNet weights, downloaded and converted once, with their model and pixel convention.

    The result has `.model`, `.variables`, `.preprocess` (the convention),
    `.classes` (ImageNet's names) and `.prepare(images)` (uint8 RGB images to
    the model's input); it unpacks as `model, variables = pretrained(...)`.
    `model_kwargs` go to `VGG` (dtype, conv_impl, remat, ...); the config,
    batch norm and classes come from the weights.
    """
    fixed = sorted(set(model_kwargs) & {"config", "batch_norm", "num_classes"})
    if fixed:
        raise ValueError(
            f"pretrained({name!r}) takes {', '.join(fixed)} from the weights; leave it out (fine-tune a new "
            "fc8 with warm_start)"
        )
    entry = weights_info(name, source)
    variables = _converted(entry, mirror)
    num_classes = variables["params"]["fc8"]["kernel"].shape[-1] if "fc8" in variables["params"] else 1000
    model = VGG(config=entry.config, batch_norm=entry.batch_norm, num_classes=num_classes, **model_kwargs)
    classes = imagenet.class_names() if num_classes == imagenet.NUM_CLASSES else None
    return Resolved(
        model,
        variables,
        model.config,
        entry.preprocess,
        None,
        classes,
        224,
        f"{source}:{entry.name}",
        "pretrained",
    )


def _converted(entry: Weights, mirror: Optional[str]) -> dict[str, Any]:
    """The entry's variables from the converted copy in the cache, tied to the hash of the file it came from.

    The copy records the SHA-256 and MD5 of its source. It is used when the
    source in the cache (verified by `hub.fetch`) has that SHA-256, or, with
    the source gone, when the recorded hashes are the published ones; else
    the verified source is converted again and the copy replaced. So a file
    replaced in the cache never hides behind a stale copy.
    """
    from vgg_jax.weights import formats as weights_lib

    converted = os.path.join(hub.cache_dir(), f"{entry.file}.vgg_jax.msgpack")
    source = os.path.join(hub.cache_dir(), entry.file)
    cached, recorded = None, {}
    if os.path.isfile(converted):  # read once, with its metadata: the copy is most often current
        try:
            cached, _, recorded = weights_lib.read_with_metadata(
                converted, entry.config, recorded_first=False
            )
        except ValueError:  # a damaged copy (a full disk, a kill mid-write by an older version) is made again
            cached, recorded = None, {}
    if (
        recorded
        and not os.path.isfile(source)
        and _published(entry, recorded.get("source_sha256"), recorded.get("source_md5"))
    ):
        return cached
    path = hub.fetch(
        entry.url,
        sha256=entry.sha256,
        md5=entry.md5,
        filename=entry.file,
        mirror=mirror,
        published_sha256=entry.hash_from_server,
    )
    found = hub.digests(path)
    if recorded.get("source_sha256") == found["sha256"]:
        return cached
    if entry.include_top:
        variables = weights_lib.load(path, entry.config, batch_norm=entry.batch_norm)
    else:  # a no-top file: the convs only, as its entry says
        variables = weights_lib.read(path, entry.config, batch_norm=entry.batch_norm)[0]
    metadata = {
        "config": entry.config,
        "preprocess": entry.preprocess,
        "source": f"{entry.source}:{entry.name}",
        "source_sha256": found["sha256"],
        "source_md5": found["md5"],
    }
    staging = f"{converted}.{os.getpid()}.msgpack"
    try:
        weights_lib.save(variables, staging, metadata=metadata)
        # a stale copy is replaced whole; a concurrent converter writes the same bytes
        os.replace(staging, converted)
    except (OSError, ValueError):
        pass  # a read-only cache: the variables are still right, only not cached
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return variables


def _published(entry: Weights, sha256: Optional[str], md5: Optional[str]) -> bool:
    """Whether recorded source hashes are the entry's published ones (timm's hash is on the hub: any
    recorded one was checked)."""
    if entry.sha256:
        return bool(sha256) and sha256.startswith(entry.sha256)
    if entry.md5:
        return md5 == entry.md5
    return bool(sha256)
