"""The paper's coarse-to-fine experiment, in miniature on the embedded digits.

    pip install -e ".[digits,plot]" && python scripts/coarse_to_fine.py --preset cpu --workdir runs/c2f

Trains A (and B) for three seeds, then D and E under six arms each (scratch
N(0, 0.01), from A rest N(0, 0.01), scratch Glorot, from A rest Glorot,
scratch with batch norm, and D from B / E from D), every arm for the same
seeds, steps and data order. Writes results.json, coarse_to_fine.png (mean
curves, +-1 std bands) and coarse_to_fine.md (the tables) to the workdir.
`--preset cpu` takes about 16 minutes on 2 CPU cores; `--preset paper` (the
paper's widths) is for an accelerator. `--tiny` runs either in seconds.
`--sweep` reruns the recipe sweep on A (tuning split only) instead.
"""

import argparse
import json
import os
import sys

from vgg_jax.cli import OneLineParser, fail, names, printer, prog_name
from vgg_jax.experiments.coarse_to_fine import report as report
from vgg_jax.experiments.coarse_to_fine import study as c2f
from vgg_jax.util.files import write_text

PROG = "coarse_to_fine.py"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog_name(PROG), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset",
        choices=sorted(c2f.PRESETS),
        default="cpu",
        help="model size and step budgets (default cpu)",
    )
    parser.add_argument(
        "--workdir", default="runs/coarse_to_fine", help="where results.json, the plot and the table go"
    )
    parser.add_argument(
        "--targets",
        type=names(c2f.TARGETS),
        default=c2f.TARGETS,
        help="comma-separated, from D,E (default both)",
    )
    parser.add_argument(
        "--arms",
        type=names(c2f.ARM_NAMES),
        default=tuple(c2f.ARM_NAMES),
        help=f"comma-separated, from {','.join(c2f.ARM_NAMES)} (default all)",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of seeds, 0..N-1 (default the preset's 3)"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a tiny width and a few steps: checks the whole pipeline in seconds",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="run the recipe sweep on A (tuning split) and write sweep.json and sweep.md",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only redraw the plot and the table from --workdir's results.json",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier experiment in --workdir")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    preset = c2f.PRESETS[args.preset]
    if args.tiny:
        preset = c2f.tiny(preset)
    try:
        if args.seeds is not None:
            if args.seeds < 1:
                raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
            preset = c2f.dataclasses.replace(preset, seeds=tuple(range(args.seeds)))
        if args.sweep:
            return _sweep(preset, args)
        if args.render:
            print(report.markdown(report.render(args.workdir)))
            return 0
        c2f.run_experiment(
            preset,
            args.workdir,
            targets=args.targets,
            arms=args.arms,
            overwrite=args.overwrite,
            log=printer(parser),
        )
    except (ValueError, OSError) as error:
        return fail(prog_name(PROG), error, parser=parser)
    return 0


def _sweep(preset: "c2f.Preset", args: argparse.Namespace) -> int:
    path = os.path.join(args.workdir, "sweep.json")
    if os.path.exists(path) and not args.overwrite:
        raise ValueError(f"{args.workdir} already holds a sweep (sweep.json); pass --overwrite to replace it")
    os.makedirs(args.workdir, exist_ok=True)
    records = c2f.sweep(preset, c2f.sweep_grid(), seeds=preset.seeds[:2])
    write_text(path, json.dumps(records, indent=1))
    table = c2f.sweep_markdown(records)
    write_text(os.path.join(args.workdir, "sweep.md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
