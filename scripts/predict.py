#!/usr/bin/env python
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
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vgg_jax import predict  # noqa: E402
from vgg_jax.cli import OneLineParser, positive_int  # noqa: E402
from vgg_jax.zoo import SOURCES  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="JPEG or PNG files")
    parser.add_argument("--model", default="vgg16",
                        help="a published name (vgg11 ... vgg19, _bn, a paper letter; keras:vgg16, timm:vgg16), a weights file or a run's workdir")
    parser.add_argument("--source", default="torchvision", choices=SOURCES, help="the source of a name without a prefix (keras:vgg16 says it)")
    parser.add_argument("--config", default=None, help="the config of a weights file that does not say (default: read off the file)")
    parser.add_argument("--preprocess", default=None, choices=("torch", "caffe"),
                        help="the pixels the weights expect (default: the name's, the file's metadata, or the run's)")
    parser.add_argument("--top", type=positive_int, default=5, help="classes per image (default 5)")
    parser.add_argument("--dense", action="store_true", help="the paper's dense evaluation at the image's own size")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON, for scripts")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        named = predict.load_model(args.model, args.source, args.config, args.preprocess)
        results = predict.classify(named.model, named.variables, args.images, named.preprocess, top=min(args.top, named.model.num_classes),
                                   dense=args.dense, batch_size=args.batch_size, mean_rgb=named.mean_rgb, classes=named.classes)
    except (ValueError, OSError) as error:
        print(f"predict.py: error: {error}", file=sys.stderr)
        return 2
    failed = [result for result in results if "error" in result]
    for result in failed:
        print(f"predict.py: error: {result['error']}", file=sys.stderr)
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
        print(f"predict.py: {len(failed)} of {len(results)} images could not be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
