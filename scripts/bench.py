#!/usr/bin/env python
"""Time VGG forward, forward-backward and train steps: the original TF1 benchmark's job, done properly.

    python scripts/bench.py --config D
    python scripts/bench.py --config all --batch-size 2 --steps 2 --json out.json
    python scripts/bench.py --config D --dtype bfloat16 --mode train-step --vs torch
    python scripts/bench.py --config D --batch-size 256 --scaling   # every device, and 1, 2, 4, ... of them

On CPU the defaults are batch 4, 5 steps, 1 warm-up (accelerators: 32 / 100 / 10).
The logic is in vgg_jax/bench.py; this script builds its BenchConfig from the flags.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vgg_jax import bench  # noqa: E402
from vgg_jax.cli import OneLineParser, add_parallel_flags, non_negative_int, start_distributed  # noqa: E402
from vgg_jax.model import CONV_IMPLS, POOL_IMPLS, RELU_IMPLS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(prog="bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="D", help="config or alias, comma-separated list, or 'all' (default D)")
    parser.add_argument("--batch-size", default=None, help="global batch size (split over the devices), or a comma-separated sweep (default 32; CPU 4)")
    parser.add_argument("--steps", type=non_negative_int, default=None, help="timed steps (default 100; CPU 5)")
    parser.add_argument("--warmup", type=non_negative_int, default=None, help="untimed steps after compiling (default 10; CPU 1)")
    parser.add_argument("--image-size", type=int, default=224, help="square image size in pixels (default 224)")
    parser.add_argument("--dtype", default="float32", help="compute dtype(s): float32, bfloat16, or both comma-separated")
    parser.add_argument("--mode", default="forward,forward-backward", help="forward, forward-backward, train-step (comma-separated)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the records as JSON (schema in the README)")
    parser.add_argument("--plot", default=None, metavar="PATH", help="write images/s per config and batch (.png, .jpg, .svg or .pdf)")
    parser.add_argument("--vs", default=None, help="also time torchvision in the same run: torch, torch-compile, or both comma-separated")
    parser.add_argument("--remat", action="store_true", help="also time remat=True (jax.checkpoint per conv block) and report its temp memory and step time")
    parser.add_argument("--cache-dir", default=None, help="JAX's persistent compilation cache directory")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s for MFU on a device the table lacks")
    parser.add_argument("--conv-impl", default="auto", choices=CONV_IMPLS, help="the model's conv implementation (auto: custom_vjp on CPU, xla elsewhere)")
    parser.add_argument("--relu-impl", default="jax", choices=RELU_IMPLS, help="jax.nn.relu, or output_mask (its gradient masked by the output)")
    parser.add_argument("--profile", default=None, metavar="DIR", help="trace 3 steps of each case with jax.profiler into DIR and print device time by kind")
    parser.add_argument("--pool-impl", default="auto", choices=POOL_IMPLS, help="auto (reshape on CPU, else reduce_window), reduce_window (nn.max_pool) or reshape (a reshape and a max)")
    parser.add_argument("--freeze", default=None, metavar="LAYER", help="fine-tuning cost: the layers up to LAYER frozen, as train.py --freeze (pool5: the classifier alone)")
    parser.add_argument("--scaling", action="store_true", help="also time 1, 2, 4, ... devices at the same per-device batch; report scaling efficiency")
    add_parallel_flags(parser)
    parser.add_argument("--width-scale", type=float, default=1.0, help="multiply conv channels (small experiments)")
    parser.add_argument("--fc-width", type=int, default=4096, help="width of fc6 and fc7 (default 4096)")
    parser.add_argument("--num-classes", type=int, default=1000, help="outputs of fc8 (default 1000)")
    return parser.parse_args(argv)


def bench_config(args: argparse.Namespace) -> bench.BenchConfig:
    """The flags as a BenchConfig; the comma-separated lists are parsed (BenchError names a bad one)."""
    spec = bench.BenchSpec(
        configs=bench.parse_configs(args.config),
        batch_sizes=None if args.batch_size is None else bench.parse_positive_ints(args.batch_size, "--batch-size"),
        steps=args.steps, warmup=args.warmup, image_size=args.image_size,
        dtypes=bench.parse_dtypes(args.dtype), modes=bench.parse_modes(args.mode), **bench.parse_peers(args.vs),
        remat=args.remat, devices=args.devices, scaling=args.scaling, width_scale=args.width_scale,
        fc_width=args.fc_width, num_classes=args.num_classes, peak_tflops=args.peak_tflops, conv_impl=args.conv_impl,
        relu_impl=args.relu_impl, pool_impl=args.pool_impl, profile_dir=args.profile, freeze=args.freeze,
    )
    return bench.BenchConfig(spec=spec, json=args.json, plot=args.plot, cache_dir=args.cache_dir)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not start_distributed(args, "bench.py"):
        return 2
    try:
        config = bench_config(args)
    except bench.BenchError as error:
        print(f"bench.py: error: {error}", file=sys.stderr)
        return 2
    return bench.main(config)


if __name__ == "__main__":
    sys.exit(main())
