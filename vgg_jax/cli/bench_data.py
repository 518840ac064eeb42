"""Time the training input pipeline on an ImageFolder: img/s per worker and in total, against torchvision.

    python scripts/bench_data.py PATH                                # the paper's jitter, S in [256, 512]
    python scripts/bench_data.py PATH --scale 256 --workers 2 --vs torch
    python scripts/bench_data.py PATH --workers 4 --feed 4000        # the workers a 4,000 img/s step needs

Every flag is a field of vgg_jax.benchmark.data_bench.DataBenchConfig, with the same default.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Optional, Sequence

from vgg_jax.benchmark import data_bench
from vgg_jax.cli import fail, parse, prog_name

PROG = "bench_data.py"


@dataclasses.dataclass(frozen=True)
class BenchDataCommand:
    """bench_data.py's command line."""

    bench: data_bench.DataBenchConfig
    json: bool = False
    """print the record as JSON too"""


COMMAND = BenchDataCommand  # what the command line parses (docs checked in tests/test_readme.py)


def main(argv: Optional[Sequence[str]] = None) -> int:
    command = parse(BenchDataCommand, argv, PROG, __doc__)
    try:
        record = data_bench.run(command.bench)
    except (ValueError, OSError, ImportError) as error:
        return fail(prog_name(PROG), error, config_class=BenchDataCommand)
    if command.json:
        print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
