#!/usr/bin/env python
"""Train a VGG config, evaluate it the paper's way, and checkpoint it.

    python scripts/train.py --config A --data digits --image-size 32 --epochs 1 --workdir runs/a
    python scripts/train.py --config D --data digits --image-size 32 --epochs 1 --workdir runs/d --init-from runs/a
    python scripts/train.py --workdir runs/a --resume               # the run as it was started
    python scripts/train.py --workdir runs/a --epochs 3 --resume    # longer
    python scripts/train.py ... --devices 4        # data parallel over 4 devices (default: all)

Data: `digits` (scikit-learn's, no download), `synthetic`, or `folder:PATH`
(an ImageFolder). The workdir gets config.json, metrics.jsonl and checkpoints.
Ctrl-C or SIGTERM stops after the current step with a checkpoint. On
--resume every flag not given comes from the run's config.json; its length,
evaluation, logging and devices may change, and a flag that would change the
run itself (config, data, model, optimiser) is refused.
Every flag but --resume, --overwrite and the jax.distributed ones is a field
of vgg_jax.loop.TrainConfig (same name and default); the logic is in
vgg_jax/loop.py, and this script only parses arguments.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vgg_jax import loop  # noqa: E402
from vgg_jax.cli import (  # noqa: E402
    OneLineParser, add_config_flags, add_parallel_flags, config_from_args, given_fields, start_distributed,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, loop.TrainConfig)
    add_parallel_flags(parser, devices=False)  # --devices is a TrainConfig field
    parser.add_argument("--resume", action="store_true", help="continue the run in --workdir exactly")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --workdir (deleted once the new run's inputs are read)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not start_distributed(args, "train.py"):
        return 2
    given = given_fields(build_parser, argv, loop.TrainConfig)  # on --resume, every other field comes from the run
    return loop.main(config_from_args(args, loop.TrainConfig), resume=args.resume, overwrite=args.overwrite, given=given)


if __name__ == "__main__":
    sys.exit(main())
