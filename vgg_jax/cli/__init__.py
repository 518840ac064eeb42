"""The command lines: one module per command, and the helpers they share.

The top of the package: the commands import the library, and nothing in the
library imports them. Each command is a `main(argv=None) -> int` run by
`scripts/NAME.py` and by the console command `vgg-jax-NAME` that `pip install`
makes. The helpers here parse a command's config dataclass with tyro (`parse`),
and give every command one-line errors with status 2 (`fail`). The
process-wide settings of a command line are made here, not by importing the
library: data warnings print as one line (`sources.one_line_warnings`), and
XLA:CPU's faster convolutions are on (`xla_flags.apply`, before any backend starts).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from typing import Annotated, Any, Literal, Optional, Sequence

from tyro.conf import arg as tyro_arg

from vgg_jax.training.sources import one_line_warnings
from vgg_jax.util import xla_flags
from vgg_jax.util.images import NORMALIZE_MODES
from vgg_jax.util.options import FieldError, flag

xla_flags.apply()
one_line_warnings()
# multiprocessing's resource tracker (a process of its own, started with these options) warns of the shared
# memory it unlinks for input workers that ended with a killed run: it is the clean-up working, printed
# after the run's last line. A run that ends on its own closes its workers and leaves it nothing to do.
sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")


def prog_name(script: str) -> str:
    """The name a command reports itself by: the console command that ran it (`vgg-jax-train`), else
    `script` (train.py)."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("vgg-jax-") else script


def invocation(command: str) -> str:
    """The command line that runs `vgg_jax.cli.<command>` as this process was started: the console command
    (`vgg-jax-train`), `python PATH/train.py` as typed, else `python -m vgg_jax.cli.train`."""
    invoked = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(invoked)
    if name.startswith("vgg-jax-"):
        return name
    if name == f"{command}.py" and os.path.basename(os.path.dirname(os.path.abspath(invoked))) != "cli":
        return f"python {shlex.quote(invoked)}"
    return f"python -m vgg_jax.cli.{command}"


def parse(
    config_class: type, argv: Optional[Sequence[str]], script: str, doc: str, default: Any = None
) -> Any:
    """The `config_class` instance the command line describes, parsed by tyro.

    Each field is a flag: its docstring the help, its annotation what it
    takes (`vgg_jax.util.options`). A held config (`TrainConfig.model`,
    `BenchConfig.spec`) contributes its fields without a prefix. `default`:
    the values of flags not given (a resumed run's config). A bad flag exits
    with status 2 after tyro's message, which names it and suggests the near
    one.
    """
    import tyro

    return tyro.cli(
        config_class,
        args=argv,
        prog=prog_name(script),
        description=_description(doc),
        config=(tyro.conf.OmitArgPrefixes,),
        **({} if default is None else {"default": default}),
    )


def fail(prog: str, error: BaseException | str, status: int = 2, config_class: Optional[type] = None) -> int:
    """Prints `prog: error: MESSAGE` as one line on stderr and returns `status` (2: bad input).

    A message of several lines (a strict load's report, say) is joined with
    "; " after its first line, so that every failure is one line and no
    traceback. A `FieldError` of `config_class`'s fields names the field's
    flag.
    """
    named = flag(config_class, error.field) if isinstance(error, FieldError) and config_class else None
    if named:
        error = f"{named} {error.problem}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    if len(lines) > 1:
        text += f" ({'; '.join(lines[1:])})"
    print(f"{prog}: error: {text}", file=sys.stderr, flush=True)
    return status


def _description(doc: str) -> str:
    """A command's docstring for `--help` in 80 columns: prose rewrapped at 78, each line led by a space
    (tyro joins lines that start with a letter), the indented examples as they are."""
    import textwrap

    lines, paragraph = [], []
    for line in (doc or "").strip().splitlines() + [""]:
        if line.strip() and not line.startswith(" "):
            paragraph.append(line.strip())
            continue
        if paragraph:
            lines += [" " + wrapped for wrapped in textwrap.wrap(" ".join(paragraph), 78)]
            paragraph = []
        lines.append(line)
    return "\n".join(lines).rstrip()


@dataclasses.dataclass(frozen=True)
class Distributed:
    """The jax.distributed flags of train.py and bench.py (see docs/scaling.md)."""

    coordinator: Annotated[Optional[str], tyro_arg(metavar="HOST:PORT")] = None
    """process 0's address (or JAX_COORDINATOR_ADDRESS)"""
    num_processes: Optional[int] = None
    """number of processes (or JAX_NUM_PROCESSES)"""
    process_id: Optional[int] = None
    """this process's index (or JAX_PROCESS_ID)"""


@dataclasses.dataclass(frozen=True)
class WeightsFlags:
    """How to read a weights file that does not say (evaluate.py, predict.py, convert_weights.py)."""

    config: Optional[str] = None
    """the config of a weights file that does not say (default: its metadata, else read off the file)"""
    preprocess: Optional[Literal[NORMALIZE_MODES]] = None
    """the pixels the weights expect (default: what the name, the run or the file's metadata says)"""


def start_distributed(distributed: Distributed, prog: str) -> bool:
    """Starts jax.distributed from the flags or the environment; False after a one-line error on stderr."""
    from vgg_jax.training import parallel

    try:
        parallel.initialize(distributed.coordinator, distributed.num_processes, distributed.process_id)
    except (ValueError, RuntimeError) as error:
        fail(prog, error)
        return False
    return True
