"""Time VGG forward, forward-backward and train steps: the original TF1 benchmark's job, done properly.

    python scripts/bench.py --config D
    python scripts/bench.py --config all --batch-size 2 --steps 2 --json out.json
    python scripts/bench.py --config D --dtype bfloat16 --mode train-step --vs torch
    python scripts/bench.py --config D --batch-size 256 --scaling   # every device, and 1, 2, 4, ... of them

Every flag but the jax.distributed ones is a field of
vgg_jax.benchmark.bench.BenchSpec or BenchConfig, with the same default.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from vgg_jax.benchmark import bench
from vgg_jax.cli import Distributed, fail, parse, prog_name, start_distributed

PROG = "bench.py"


@dataclasses.dataclass(frozen=True)
class BenchCommand:
    """bench.py's command line: the benchmark's config, and jax.distributed's flags."""

    bench: bench.BenchConfig = bench.BenchConfig()
    distributed: Distributed = Distributed()


COMMAND = BenchCommand  # what the command line parses (docs checked in tests/test_readme.py)


def bench_config(argv: Optional[Sequence[str]] = None) -> bench.BenchConfig:
    """The BenchConfig the flags describe (a bad flag exits with status 2 after tyro's message)."""
    return parse(BenchCommand, argv, PROG, __doc__).bench


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark; 0, or 2 after one line on stderr for bad input or a batch that does not fit."""
    command = parse(BenchCommand, argv, PROG, __doc__)
    if not start_distributed(command.distributed, prog_name(PROG)):
        return 2
    try:
        bench.execute(command.bench, log=lambda line: print(line, flush=True))
    except (ValueError, OSError) as error:
        return fail(prog_name(PROG), error, config_class=BenchCommand)
    return 0
