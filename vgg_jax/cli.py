"""What the command lines in scripts/ share: one-line errors and argument types."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose bad flags end with one line on stderr and status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def int_list(text: str) -> list[int]:
    """Integers separated by commas: '256' or '256,512'."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


DISTRIBUTED_FLAGS = ("coordinator", "num_processes", "process_id")


def add_parallel_flags(parser: argparse.ArgumentParser) -> None:
    """--devices and the jax.distributed flags, shared by train.py and bench.py."""
    parser.add_argument("--devices", type=positive_int, default=None, help="use this many devices (default: all; an equal share per process)")
    group = parser.add_argument_group("several processes (jax.distributed; see docs/scaling.md)")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address (or JAX_COORDINATOR_ADDRESS)")
    group.add_argument("--num-processes", type=positive_int, default=None, help="number of processes (or JAX_NUM_PROCESSES)")
    group.add_argument("--process-id", type=non_negative_int, default=None, help="this process's index (or JAX_PROCESS_ID)")


def start_distributed(args: argparse.Namespace, prog: str) -> bool:
    """Starts jax.distributed from the flags or the environment; False after a one-line error on stderr."""
    import sys

    from vgg_jax import parallel

    try:
        parallel.initialize(args.coordinator, args.num_processes, args.process_id)
    except (ValueError, RuntimeError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return False
    return True
