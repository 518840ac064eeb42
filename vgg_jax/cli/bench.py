"""Time VGG forward, forward-backward and train steps: the original TF1 benchmark's job, done properly.

    python scripts/bench.py --config D
    python scripts/bench.py --config all --batch-size 2 --steps 2 --json out.json
    python scripts/bench.py --config D --dtype bfloat16 --mode train-step --vs torch
    python scripts/bench.py --config D --batch-size 256 --scaling   # every device, and 1, 2, 4, ... of them

Every flag but the jax.distributed ones is a field of
vgg_jax.benchmark.bench.BenchSpec or BenchConfig, with the same default.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from vgg_jax.benchmark import bench
from vgg_jax.cli import (
    OneLineParser,
    add_config_flags,
    add_parallel_flags,
    config_from_args,
    fail,
    printer,
    prog_name,
    start_distributed,
)

PROG = "bench.py"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog_name(PROG), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser, bench.BenchConfig)
    add_parallel_flags(parser, devices=False)  # --devices is a BenchSpec field
    return parser


def bench_config(argv: Optional[Sequence[str]] = None) -> bench.BenchConfig:
    """The BenchConfig the flags describe (argparse exits with one line for a bad one)."""
    return config_from_args(build_parser().parse_args(argv), bench.BenchConfig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark; 0, or 2 after one line on stderr for bad input or a batch that does not fit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not start_distributed(args, prog_name(PROG)):
        return 2
    try:
        config = config_from_args(args, bench.BenchConfig)
        bench.execute(config, log=printer(parser))
    except (ValueError, OSError) as error:
        return fail(prog_name(PROG), error, parser=parser)
    return 0
