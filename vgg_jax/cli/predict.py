"""Classify images with ImageNet weights: the top classes and their probabilities.

    python scripts/predict.py cat.jpg dog.png --model vgg16
    python scripts/predict.py photos/*.jpg --model keras:vgg19 --top 3 --json
    python scripts/predict.py cat.jpg --model my_weights.msgpack --config D --dense

`--model` is a published name (`vgg16`, `keras:vgg19`; downloaded and
cached once), a weights file, or a training run's workdir (its newest
checkpoint, named with its own classes). Images are preprocessed as the
weights expect (the registry's convention, the file's metadata, or
`--preprocess`; a file that does not say is refused, never guessed): the
centre square at 256, centre crop 224, or with `--dense` the paper's dense
evaluation at the image's own size. An unreadable image is reported and the
others classified; the exit status is then 1.
"""

import argparse
import json
import sys

from vgg_jax.cli import OneLineParser, add_weights_flags, fail, positive_int, prog_name
from vgg_jax.weights import predict
from vgg_jax.weights.zoo import SOURCES

PROG = "predict.py"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog_name(PROG), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", help="JPEG or PNG files")
    parser.add_argument(
        "--model",
        default="vgg16",
        help="a published name (vgg11 ... vgg19, _bn, a paper letter; keras:vgg16, timm:vgg16), a weights "
        "file or a run's workdir",
    )
    parser.add_argument(
        "--source",
        default="torchvision",
        choices=SOURCES,
        help="the source of a name without a prefix (keras:vgg16 says it)",
    )
    add_weights_flags(parser)
    parser.add_argument("--top", type=positive_int, default=5, help="classes per image (default 5)")
    parser.add_argument(
        "--dense", action="store_true", help="the paper's dense evaluation at the image's own size"
    )
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON, for scripts")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        named = predict.load_model(args.model, args.source, args.config, args.preprocess)
        results = predict.classify(
            named.model,
            named.variables,
            args.images,
            named.preprocess,
            top=min(args.top, named.model.num_classes),
            dense=args.dense,
            batch_size=args.batch_size,
            mean_rgb=named.mean_rgb,
            classes=named.classes,
        )
    except (ValueError, OSError) as error:
        return fail(prog_name(PROG), error)
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


if __name__ == "__main__":
    sys.exit(main())
