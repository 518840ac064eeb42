"""Time the training input pipeline on an ImageFolder: img/s per worker and in total, against torchvision.

    python scripts/bench_data.py PATH                                # the paper's jitter, S in [256, 512]
    python scripts/bench_data.py PATH --scale 256 --workers 2 --vs torch
    python scripts/bench_data.py PATH --workers 4 --feed 4000        # the workers a 4,000 img/s step needs

Every flag is a field of vgg_jax.benchmark.data_bench.DataBenchConfig, with the same default.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from vgg_jax.benchmark import data_bench
from vgg_jax.cli import OneLineParser, add_config_flags, config_from_args, fail, prog_name

PROG = "bench_data.py"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog_name(PROG), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser, data_bench.DataBenchConfig)
    parser.add_argument("--json", action="store_true", help="print the record as JSON too")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        record = data_bench.run(config_from_args(args, data_bench.DataBenchConfig))
    except (ValueError, OSError, ImportError) as error:
        return fail(prog_name(PROG), error, parser=parser)
    if args.json:
        print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
