#!/usr/bin/env python
"""Classify images with ImageNet weights: the top classes and their probabilities.

    python scripts/predict.py cat.jpg dog.png --model vgg16
    python scripts/predict.py photos/*.jpg --model vgg19 --source keras --top 3 --json
    python scripts/predict.py cat.jpg --model my_weights.msgpack --config D --dense

`--model` is a published name (downloaded and cached once; see
vgg_jax.zoo) or a weights file that vgg_jax.load reads. Images are
preprocessed as the weights expect: short side to 256, centre crop 224, or
with `--dense` the paper's dense evaluation at the image's own size.
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
    parser.add_argument("--model", default="vgg16", help="a published name (vgg11 ... vgg19, _bn, or a paper letter) or a weights file")
    parser.add_argument("--source", default="torchvision", choices=SOURCES, help="where published weights come from")
    parser.add_argument("--config", default=None, help="the config of a weights file that does not say (default: read off the file)")
    parser.add_argument("--top", type=positive_int, default=5, help="classes per image (default 5)")
    parser.add_argument("--dense", action="store_true", help="the paper's dense evaluation at the image's own size")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON, for scripts")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model, variables, mode = predict.load_model(args.model, args.source, args.config)
        results = predict.classify(model, variables, args.images, mode, top=min(args.top, 1000), dense=args.dense, batch_size=args.batch_size)
    except (ValueError, OSError) as error:
        print(f"predict.py: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(result["image"])
        for rank, best in enumerate(result["top"], 1):
            print(f"  {rank}. {best['name']:<30} {best['probability']:7.2%}  (class {best['index']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
