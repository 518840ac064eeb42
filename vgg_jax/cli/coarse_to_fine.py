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

import dataclasses
import json
import os
import sys
from typing import Annotated, Literal, Optional

from vgg_jax.cli import fail, parse, prog_name
from vgg_jax.experiments.coarse_to_fine import report as report
from vgg_jax.experiments.coarse_to_fine import study as c2f
from vgg_jax.util.files import write_text
from vgg_jax.util.options import comma

PROG = "coarse_to_fine.py"


@dataclasses.dataclass(frozen=True)
class CoarseToFineCommand:
    """coarse_to_fine.py's command line."""

    preset: Literal[tuple(sorted(c2f.PRESETS))] = "cpu"
    """model size and step budgets"""
    workdir: str = "runs/coarse_to_fine"
    """where results.json, the plot and the table go"""
    targets: Annotated[tuple[str, ...], comma("D[,E]", str.upper, choices=c2f.TARGETS)] = c2f.TARGETS
    """comma-separated, from D,E"""
    arms: Annotated[tuple[str, ...], comma("ARM[,ARM]", choices=c2f.ARM_NAMES)] = tuple(c2f.ARM_NAMES)
    """comma-separated arms (default all)"""
    seeds: Optional[int] = None
    """number of seeds, 0..N-1 (default the preset's 3)"""
    tiny: bool = False
    """a tiny width and a few steps: checks the whole pipeline in seconds"""
    sweep: bool = False
    """run the recipe sweep on A (tuning split) and write sweep.json and sweep.md"""
    render: bool = False
    """only redraw the plot and the table from --workdir's results.json"""
    overwrite: bool = False
    """replace an earlier experiment in --workdir"""


COMMAND = CoarseToFineCommand  # what the command line parses (docs checked in tests/test_readme.py)


def main(argv=None) -> int:
    args = parse(CoarseToFineCommand, argv, PROG, __doc__)
    preset = c2f.PRESETS[args.preset]
    if args.tiny:
        preset = c2f.tiny(preset)
    try:
        if args.seeds is not None:
            if args.seeds < 1:
                raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
            preset = dataclasses.replace(preset, seeds=tuple(range(args.seeds)))
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
            log=lambda line: print(line, flush=True),
        )
    except (ValueError, OSError) as error:
        return fail(prog_name(PROG), error, config_class=CoarseToFineCommand)
    return 0


def _sweep(preset: "c2f.Preset", args: CoarseToFineCommand) -> int:
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
