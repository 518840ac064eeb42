"""The command lines: one module per command, and the helpers they share.

The top of the package: the commands import the library, and nothing in the
library imports them. Each command is a `main(argv=None) -> int` run by
`scripts/NAME.py` and by the console command `vgg-jax-NAME` that `pip install`
makes. The helpers here give every command one-line errors with status 2,
argument types, and flags made from the library's config dataclasses. The
process-wide settings of a command line are made here, not by importing the
library: data warnings print as one line (`sources.one_line_warnings`), and
XLA:CPU's faster convolutions are on (`xla_flags.apply`, before any backend starts).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
import types
import typing
from typing import Any, Callable, Optional, Sequence

from vgg_jax.training.sources import one_line_warnings
from vgg_jax.util import xla_flags
from vgg_jax.util.images import NORMALIZE_MODES
from vgg_jax.util.options import flag_of, shown

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


def fail(
    prog: str, error: BaseException | str, status: int = 2, parser: Optional[argparse.ArgumentParser] = None
) -> int:
    """Prints `prog: error: MESSAGE` as one line on stderr and returns `status` (2: bad input).

    A message of several lines (a strict load's report, say) is joined with
    "; " after its first line, so that every failure is one line and no
    traceback. With `parser`, the library's argument names become its flags
    (`flagged`).
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = flagged(lines[0] if lines else type(error).__name__, parser)
    if len(lines) > 1:
        text += f" ({'; '.join(flagged(line, parser) for line in lines[1:])})"
    print(f"{prog}: error: {text}", file=sys.stderr, flush=True)
    return status


def flagged(text: str, parser: Optional[argparse.ArgumentParser]) -> str:
    """A library message or log line as the command line says it: argument names become the parser's flags.

    The library names a config's fields and a function's arguments, never
    flags: at the start of a message ("fc_width must be ...") and in
    backticks elsewhere ("pass `resume` to continue it"). Each of those that
    is one of the parser's destinations becomes its documented flag
    ("--fc-width must be ...", "pass --resume to continue it").
    """
    if parser is None:
        return text
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    # a name standing alone: `data/vgg16.msgpack ...` and a file named `data` are paths, shown as typed
    leading = re.match(r"[a-z_]+(?=[ :,]|$)", text)
    if leading and leading[0] in flags and not os.path.exists(leading[0]):
        text = flags[leading[0]] + text[len(leading[0]) :]
    return re.sub(r"`([a-z_]+)`", lambda match: flags.get(match[1], match[0]), text)


def printer(parser: argparse.ArgumentParser) -> Callable[[str], None]:
    """A `log` for the library: each line printed as the command line says it (`flagged`)."""

    def say(line: str) -> None:
        print(flagged(line, parser), flush=True)

    return say


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


def float_list(text: str) -> list[float]:
    """Numbers separated by commas: '123.7,116.3,103.5'."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


_TYPES = {int: int, float: float, str: str, list[int]: int_list, list[float]: float_list}


def add_config_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per field of a config dataclass (`TrainConfig`, `BenchConfig`), with its default, help and
    choices.

    Field metadata comes from `vgg_jax.util.options.option`. The flag is
    `--field-name`, or the spelling the metadata gives (then the documented
    one, the derived one still accepted). Booleans get `--name` and
    `--no-name`. A tuple field is a comma-separated list, its items checked
    against the choices (`all` for every one, where the field allows it). A
    field that is itself a dataclass contributes its own fields. A field
    without a default is a required flag. A flag not given stays unset in the
    parsed namespace (`given_fields`), and `config_from_args` takes the field's
    default. Values are checked for their kind here, and for their range by
    the library's validation.
    """
    hints = typing.get_type_hints(config_class)
    for field in sorted(dataclasses.fields(config_class), key=lambda field: field.kw_only):  # inherited last
        if dataclasses.is_dataclass(hints[field.name]):
            add_config_flags(parser, hints[field.name])
            continue
        kind, _ = _unwrap(hints[field.name])
        if field.metadata.get("positional"):
            parser.add_argument(
                field.name, metavar=field.name.upper(), type=_TYPES[kind], help=field.metadata.get("help", "")
            )
            continue
        flags = list(dict.fromkeys([flag_of(field), "--" + field.name.replace("_", "-")]))  # the derived too
        required = field.default is dataclasses.MISSING
        default = argparse.SUPPRESS  # unset unless given: config_from_args fills in the field's default
        text = field.metadata.get("help", "")
        is_list = typing.get_origin(kind) is tuple
        if is_list and field.metadata.get("choices"):
            text += f"; from {', '.join(map(str, field.metadata['choices']))}" + (
                " or all" if field.metadata.get("every") else ""
            )
        if not required and "default" not in text:
            text += f" (default: {shown(field.default)})"
        options: dict[str, Any] = dict(dest=field.name, help=text)
        if kind is bool:
            options.update(action=argparse.BooleanOptionalAction, default=default)
        else:
            options.update(
                type=_list_type(kind, field.metadata)
                if is_list
                else _argument_type(field.metadata.get("parse")) or _TYPES[kind],
                default=default,
                required=required,
            )
            if field.metadata.get("choices") and not is_list:
                options["choices"] = field.metadata["choices"]
            if field.metadata.get("metavar"):
                options["metavar"] = field.metadata["metavar"]
        parser.add_argument(*flags, **options)


def _argument_type(parse: Optional[Callable[[str], Any]]) -> Optional[Callable[[str], Any]]:
    """A library parser as an argparse type: its ValueError's message becomes the flag's error."""
    if parse is None:
        return None

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _list_type(kind: Any, metadata: Any) -> Callable[[str], tuple]:
    """The argparse type of a tuple field: comma-separated items, each converted and checked, duplicates
    dropped."""
    item = typing.get_args(kind)[0]
    convert = metadata.get("each") or _TYPES[item]
    choices, every = metadata.get("choices"), metadata.get("every")

    def parse(text: str) -> tuple:
        if every and text.strip().lower() == "all":
            return tuple(every)
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected one or more values separated by commas, got {text!r}")
        values = []
        for part in parts:
            try:
                value = convert(part)
            except (ValueError, argparse.ArgumentTypeError) as error:
                raise argparse.ArgumentTypeError(f"{part!r}: {error}") from None
            if choices and value not in choices:
                raise argparse.ArgumentTypeError(f"{part!r} is not one of {', '.join(map(str, choices))}")
            values.append(value)
        return tuple(dict.fromkeys(values))

    return parse


def add_weights_flags(parser: argparse.ArgumentParser, recorded: bool = False) -> None:
    """--config and --preprocess, for the commands that take a model spec (a name, a weights file, a run)."""
    parser.add_argument(
        "--config",
        default=None,
        help="the config of a weights file that does not say (default: its metadata, else read off the file)",
    )
    parser.add_argument(
        "--preprocess",
        default=None,
        choices=NORMALIZE_MODES,
        help="the pixels the weights expect"
        + (", recorded in the output" if recorded else "")
        + " (default: what the name, the run or the file's metadata says)",
    )


def names(choices: Sequence[str]) -> Callable[[str], tuple]:
    """An argparse type: names from `choices`, comma-separated ('D,E'), as a tuple without duplicates."""
    return _list_type(tuple[str, ...], {"choices": tuple(choices)})


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of a field's annotation: `Optional[int]` gives (int, True)."""
    arguments = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(arguments) == 1:
        return arguments[0], True
    return hint, False


def given_fields(args: argparse.Namespace, config_class: type) -> set[str]:
    """The fields of `config_class` whose flags were given (`add_config_flags` leaves the others unset).

    `--resume` takes every other field from the saved run, so it must know
    which values the user typed and which are defaults.
    """
    hints = typing.get_type_hints(config_class)
    given = set()
    for field in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[field.name]):  # a held config (`model`): its fields by their names
            given |= given_fields(args, hints[field.name])
        elif hasattr(args, field.name):
            given.add(field.name)
    return given


def config_from_args(args: argparse.Namespace, config_class: type) -> Any:
    """The dataclass built from the parsed flags that `add_config_flags` added."""
    hints = typing.get_type_hints(config_class)
    return config_class(
        **{
            field.name: config_from_args(args, hints[field.name])
            if dataclasses.is_dataclass(hints[field.name])
            else getattr(args, field.name, field.default)
            for field in dataclasses.fields(config_class)
            if hasattr(args, field.name)
            or field.default is not dataclasses.MISSING
            or dataclasses.is_dataclass(hints[field.name])
        }
    )


def add_parallel_flags(parser: argparse.ArgumentParser, devices: bool = True) -> None:
    """--devices (unless a config's field gives it) and the jax.distributed flags, shared by train.py and
    bench.py."""
    if devices:
        parser.add_argument(
            "--devices",
            type=positive_int,
            default=None,
            help="use this many devices (default: all; an equal share per process)",
        )
    group = parser.add_argument_group("several processes (jax.distributed; see docs/scaling.md)")
    group.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="process 0's address (or JAX_COORDINATOR_ADDRESS)",
    )
    group.add_argument(
        "--num-processes", type=positive_int, default=None, help="number of processes (or JAX_NUM_PROCESSES)"
    )
    group.add_argument(
        "--process-id", type=non_negative_int, default=None, help="this process's index (or JAX_PROCESS_ID)"
    )


def start_distributed(args: argparse.Namespace, prog: str) -> bool:
    """Starts jax.distributed from the flags or the environment; False after a one-line error on stderr."""
    from vgg_jax.training import parallel

    try:
        parallel.initialize(args.coordinator, args.num_processes, args.process_id)
    except (ValueError, RuntimeError) as error:
        fail(prog, error)
        return False
    return True
