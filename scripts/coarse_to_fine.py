#!/usr/bin/env python
"""The paper's coarse-to-fine initialisation, in miniature on the embedded digits.

    pip install -e ".[digits,plot]" && python scripts/coarse_to_fine.py --workdir runs/coarse_to_fine

Trains A, then D three ways with the same steps, data order and seeds: the
paper's N(0, 0.01) init, warm-started from A, and Glorot. Writes
coarse_to_fine.png (loss and validation accuracy against step) and
summary.json to the workdir. The defaults (width x0.25, fc 256, 12 epochs
each) take about 5 minutes on 2 CPU cores.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vgg_jax.cli import OneLineParser  # noqa: E402
from vgg_jax.coarse_to_fine import ExperimentConfig, run_experiment  # noqa: E402


def main(argv=None) -> int:
    defaults = ExperimentConfig()
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in ("workdir", "epochs", "source_epochs", "batch_size", "learning_rate", "width_scale", "fc_width", "image_size", "evals_per_epoch", "seed"):
        default = getattr(defaults, field)
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default, help=f"default {default}")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier experiment in --workdir")
    args = vars(parser.parse_args(argv))
    overwrite = args.pop("overwrite")
    try:
        run_experiment(ExperimentConfig(**args), overwrite=overwrite)
    except (ValueError, OSError) as error:
        print(f"coarse_to_fine.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
