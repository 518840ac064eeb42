#!/usr/bin/env python
"""Train a VGG config, evaluate it the paper's way, and checkpoint it.

    python scripts/train.py --config A --data digits --image-size 32 --epochs 1 --workdir runs/a
    python scripts/train.py --config D --data digits --image-size 32 --epochs 1 --workdir runs/d --init-from runs/a
    python scripts/train.py --workdir runs/a --epochs 3 --resume
    python scripts/train.py ... --devices 4        # data parallel over 4 devices (default: all)

Data: `digits` (scikit-learn's, no download), `synthetic`, or `folder:PATH`
(an ImageFolder). The workdir gets config.json, metrics.jsonl and checkpoints.
The logic is in vgg_jax/loop.py; this script only parses arguments.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vgg_jax import loop  # noqa: E402
from vgg_jax.cli import DISTRIBUTED_FLAGS, OneLineParser, add_parallel_flags, int_list, non_negative_int, start_distributed  # noqa: E402


def parse_args(argv=None):
    p = OneLineParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="where config.json, metrics.jsonl and checkpoints go")
    p.add_argument("--config", default="A", help="config or alias (default A)")
    p.add_argument("--data", default="digits", help="digits | synthetic | folder:PATH")
    p.add_argument("--image-size", type=int, default=32, help="training crop size (default 32)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--batch-size", type=int, default=16, help="the global batch, split over the devices (default 16)")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate (the paper's 1e-2)")
    p.add_argument("--lr-policy", default="paper", choices=["paper", "step", "cosine"])
    p.add_argument("--plateau-patience", type=int, default=3, help="evaluations without improvement before --lr-policy paper divides the rate by 10")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--width-scale", type=float, default=1.0)
    p.add_argument("--fc-width", type=int, default=4096)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--batch-norm", action="store_true")
    p.add_argument("--init", dest="init_scheme", default="kaiming", choices=["glorot", "paper", "kaiming"],
                   help="kaiming (torchvision's; the default here: it trained A on digits fastest, see docs/coarse_to_fine.md), glorot, paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int_list, default=None, help="training short side S, or S_min,S_max for scale jittering")
    p.add_argument("--no-flip", dest="flip", action="store_false")
    p.add_argument("--pca-std", type=float, default=0.0, help="AlexNet PCA colour shift std (paper: 0.1)")
    p.add_argument("--eval", dest="eval_method", default="center", choices=["center", "dense", "multi-crop", "dense+multi-crop"])
    p.add_argument("--eval-scales", type=int_list, default=None, help="test scales Q (default: the image size)")
    p.add_argument("--eval-every", type=int, default=0, help="steps between evaluations (default: each epoch)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (default: each evaluation)")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--workers", type=int, default=0, help="Grain worker processes (0: in this process)")
    p.add_argument("--init-from", default=None, help="warm start from that run's latest checkpoint (coarse-to-fine)")
    p.add_argument("--skip-nonfinite", type=non_negative_int, default=0, metavar="N",
                   help="skip (and count) up to N steps whose loss or gradients are NaN/Inf before stopping (default 0: stop at the first)")
    p.add_argument("--remat", action="store_true", help="recompute each conv block in the backward pass: less activation memory, more time")
    p.add_argument("--shard-fc", action="store_true", help="split the FC kernels and their optimizer state over the devices")
    add_parallel_flags(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir exactly")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --workdir")
    return p.parse_args(argv)


def main(argv=None) -> int:
    namespace = parse_args(argv)
    if not start_distributed(namespace, "train.py"):
        return 2
    args = {name: value for name, value in vars(namespace).items() if name not in DISTRIBUTED_FLAGS}
    resume, overwrite = args.pop("resume"), args.pop("overwrite")
    args["learning_rate"], args["dropout_rate"] = args.pop("lr"), args.pop("dropout")
    return loop.main(loop.TrainConfig(**args), resume=resume, overwrite=overwrite)


if __name__ == "__main__":
    sys.exit(main())
