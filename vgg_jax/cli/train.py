"""Train a VGG config, evaluate it the paper's way, and checkpoint it.

    python scripts/train.py --config A --data digits --image-size 32 --epochs 1 --workdir runs/a
    python scripts/train.py --config D --data digits --image-size 32 --epochs 1 --workdir runs/d --init-from
    runs/a
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
of vgg_jax.training.loop.TrainConfig (same name and default); the logic is in
vgg_jax/training/loop.py, and this script only parses arguments.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from typing import Collection, Optional, Sequence

from vgg_jax.cli import (
    OneLineParser,
    add_config_flags,
    add_parallel_flags,
    config_from_args,
    fail,
    flagged,
    given_fields,
    invocation,
    printer,
    prog_name,
    start_distributed,
)
from vgg_jax.training import loop
from vgg_jax.training.config import TrainConfig
from vgg_jax.training.rundir import CheckpointWriteError

PROG = "train.py"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog_name(PROG), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser, TrainConfig)
    add_parallel_flags(parser, devices=False)  # --devices is a TrainConfig field
    parser.add_argument("--resume", action="store_true", help="continue the run in --workdir exactly")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --workdir (deleted once the new run's inputs are read)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not start_distributed(args, prog_name(PROG)):
        return 2
    given = given_fields(args, TrainConfig)  # on --resume, every other field comes from the run
    return train(
        config_from_args(args, TrainConfig), resume=args.resume, overwrite=args.overwrite, given=given
    )


def train(
    cfg: TrainConfig, resume: bool = False, overwrite: bool = False, given: Optional[Collection[str]] = None
) -> int:
    """Runs `vgg_jax.training.loop.run`; the exit status, after one line on stderr for bad input, signals or
    non-finite numbers.

    0: done; 1: non-finite numbers or a checkpoint that could not be
    written; 2: bad input; 130 or 143: stopped by Ctrl-C or SIGTERM, with a
    checkpoint. Ctrl-C's default action (end the process) stands in for
    KeyboardInterrupt here, so that a second Ctrl-C during the clean stop
    ends it at once.
    """
    prog, parser = prog_name(PROG), build_parser()

    def warn(message: str) -> None:
        print(f"{prog}: warning: {flagged(message, parser)}", file=sys.stderr, flush=True)

    previous = (
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        loop.run(cfg, resume=resume, overwrite=overwrite, log=printer(parser), warn=warn, given=given)
    except loop.StopRequested as stopped:
        resume = f"{invocation('train')} --workdir {shlex.quote(cfg.workdir)} --resume"
        print(f"{prog}: {stopped}. Continue with: {resume}", file=sys.stderr)
        return stopped.exit_status
    except (loop.NonFiniteError, CheckpointWriteError) as error:
        return fail(prog, error, status=1, parser=parser)
    except (ValueError, OSError) as error:
        return fail(prog, error, parser=parser)
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; the last finished checkpoint stays; continue with: {invocation('train')} "
            f"--workdir {shlex.quote(cfg.workdir)} --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
