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

import dataclasses
import shlex
import signal
import sys
import threading
from typing import Collection, Optional, Sequence

from vgg_jax.cli import Distributed, fail, invocation, parse, prog_name, start_distributed
from vgg_jax.training import loop, rundir
from vgg_jax.training.config import TrainConfig, read_config
from vgg_jax.training.rundir import CheckpointWriteError

PROG = "train.py"


@dataclasses.dataclass(frozen=True)
class TrainCommand:
    """train.py's command line: the run's config, and how to start it."""

    run: TrainConfig
    resume: bool = False
    """continue the run in --workdir exactly"""
    overwrite: bool = False
    """replace the run in --workdir (deleted once the new run's inputs are read)"""
    distributed: Distributed = Distributed()


COMMAND = TrainCommand  # what the command line parses (docs checked in tests/test_readme.py)


def main(argv: Optional[Sequence[str]] = None) -> int:
    command = parse(TrainCommand, argv, PROG, __doc__)
    if not start_distributed(command.distributed, prog_name(PROG)):
        return 2
    saved, given = None, None
    if command.resume and rundir.holds_run(command.run.workdir):
        # the run's config, read once: every flag not given takes its value from it
        try:
            saved = read_config(command.run.workdir)
        except (ValueError, OSError) as error:
            return fail(prog_name(PROG), error, config_class=TrainCommand)
        command = parse(TrainCommand, argv, PROG, __doc__, default=dataclasses.replace(command, run=saved))
        ours, theirs = loop.settings(command.run), loop.settings(saved)
        given = {name for name in loop.FIELDS if ours[name] != theirs[name]}
    return train(command.run, command.resume, command.overwrite, given, saved)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    given: Optional[Collection[str]] = None,
    saved: Optional[TrainConfig] = None,
) -> int:
    """Runs `vgg_jax.training.loop.run`; the exit status, after one line on stderr for bad input, signals or
    non-finite numbers.

    0: done; 1: non-finite numbers or a checkpoint that could not be
    written; 2: bad input; 130 or 143: stopped by Ctrl-C or SIGTERM, with a
    checkpoint. Ctrl-C's default action (end the process) stands in for
    KeyboardInterrupt here, so that a second Ctrl-C during the clean stop
    ends it at once.
    """
    prog = prog_name(PROG)

    def warn(message: str) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)

    def log(line: str) -> None:
        print(line, flush=True)

    previous = (
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        loop.run(cfg, resume=resume, overwrite=overwrite, log=log, warn=warn, given=given, saved=saved)
    except loop.StopRequested as stopped:
        resume = f"{invocation('train')} --workdir {shlex.quote(cfg.workdir)} --resume"
        print(f"{prog}: {stopped}. Continue with: {resume}", file=sys.stderr)
        return stopped.exit_status
    except (loop.NonFiniteError, CheckpointWriteError) as error:
        return fail(prog, error, status=1, config_class=TrainCommand)
    except (ValueError, OSError) as error:
        return fail(prog, error, config_class=TrainCommand)
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
