"""Classify images with ImageNet weights: the top classes and their probabilities.

    python scripts/predict.py cat.jpg dog.png --model vgg16
    python scripts/predict.py photos/*.jpg --model keras:vgg19 --top 3 --json
    python scripts/predict.py cat.jpg --model my_weights.msgpack --config D --dense
    python scripts/predict.py photos/ --model runs/finetune          # every image in the folder, sorted
    python scripts/predict.py photos/ --model vgg16 --embed emb.npy  # fc7 embeddings, (N, 4096)

`--model` is a published name (`vgg16`, `keras:vgg19`; downloaded and
cached once), a weights file, or a training run's workdir (its newest
checkpoint, named with its own classes). Images are preprocessed as the
weights expect (the registry's convention, the file's metadata, or
`--preprocess`; a file that does not say is refused, never guessed): the
centre square at 256, centre crop 224, or with `--dense` the paper's dense
evaluation at the image's own size. An unreadable image is reported and the
others classified; the exit status is then 1.
"""

import dataclasses
import io
import json
import os
import sys
from typing import Annotated, Literal, Optional

import numpy as np
import tyro

from vgg_jax.cli import WeightsFlags, fail, parse, prog_name
from vgg_jax.util.files import write_bytes, write_text
from vgg_jax.util.options import one, positive
from vgg_jax.weights import predict
from vgg_jax.weights.zoo import SOURCES

PROG = "predict.py"


@dataclasses.dataclass(frozen=True)
class PredictCommand:
    """predict.py's command line."""

    images: Annotated[tyro.conf.Positional[tuple[str, ...]], tyro.conf.arg(metavar="IMAGE")]
    """JPEG or PNG files, or folders (the images directly in each, sorted)"""
    model: str = "vgg16"
    """a published name (vgg11 ... vgg19, _bn, a paper letter; keras:vgg16, timm:vgg16), a weights file or a
    run's workdir"""
    source: Literal[SOURCES] = "torchvision"
    """the source of a name without a prefix (keras:vgg16 says it)"""
    weights: WeightsFlags = WeightsFlags()
    top: Annotated[int, one("N", positive)] = 5
    """classes per image"""
    dense: bool = False
    """the paper's dense evaluation at the image's own size"""
    batch_size: Annotated[int, one("N", positive)] = 16
    """images per batch"""
    json: bool = False
    """print the results as JSON, for scripts"""
    embed: Annotated[Optional[str], tyro.conf.arg(metavar="OUT.npy")] = None
    """write the pre-logits embeddings (fc7 after its ReLU) instead of classifying: an (N, fc_width) float32
    array, its rows' image paths in OUT.images.txt"""


COMMAND = PredictCommand  # what the command line parses (docs checked in tests/test_readme.py)


def main(argv=None) -> int:
    args = parse(PredictCommand, argv, PROG, __doc__)
    if not args.images:
        return fail(prog_name(PROG), "give one or more images (JPEG or PNG files, or folders of them)")
    if args.embed is not None:
        return _embed(args)
    try:
        named = predict.load_model(args.model, args.source, args.weights.config, args.weights.preprocess)
        results = predict.classify(
            named.model,
            named.variables,
            predict.expand_paths(args.images),
            named.preprocess,
            top=min(args.top, named.model.num_classes),
            dense=args.dense,
            batch_size=args.batch_size,
            mean_rgb=named.mean_rgb,
            classes=named.classes,
        )
    except (ValueError, OSError) as error:
        return fail(prog_name(PROG), error, config_class=PredictCommand)
    failed = [result for result in results if "error" in result]
    for result in failed:
        fail(prog_name(PROG), result["error"])
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            if "error" in result:
                continue
            print(result["image"])
            for rank, best in enumerate(result["top"], 1):
                print(f"  {rank}. {best['name']:<30} {best['probability']:7.2%}  (class {best['index']})")
    if failed:
        print(f"{prog_name(PROG)}: {len(failed)} of {len(results)} images could not be read", file=sys.stderr)
        return 1
    return 0


def _embed(args: PredictCommand) -> int:
    """--embed OUT.npy: the embeddings of every readable image, and the list of their paths beside them."""
    prog = prog_name(PROG)
    try:
        if not args.embed.endswith(".npy"):
            raise ValueError(f"--embed writes a .npy file; got {args.embed}")
        for path in (args.embed, _rows_file(args.embed)):
            if os.path.exists(path):
                raise ValueError(f"{path} already exists; choose another --embed or remove it first")
        named = predict.load_model(args.model, args.source, args.weights.config, args.weights.preprocess)
        read, embeddings, errors = predict.embed(
            named.model,
            named.variables,
            predict.expand_paths(args.images),
            named.preprocess,
            dense=args.dense,
            batch_size=args.batch_size,
            mean_rgb=named.mean_rgb,
        )
        for path, error in errors.items():
            fail(prog, error)
        if embeddings is None:
            raise ValueError("no image could be read; nothing to embed")
        buffer = io.BytesIO()
        np.save(buffer, embeddings)
        write_bytes(args.embed, buffer.getvalue())
        write_text(_rows_file(args.embed), "".join(f"{path}\n" for path in read))
    except (ValueError, OSError) as error:
        return fail(prog, error, config_class=PredictCommand)
    print(
        f"{len(read)} embeddings {embeddings.shape} -> {args.embed}; rows' images in {_rows_file(args.embed)}"
    )
    return 1 if errors else 0


def _rows_file(npy: str) -> str:
    return npy[: -len(".npy")] + ".images.txt"


if __name__ == "__main__":
    sys.exit(main())
