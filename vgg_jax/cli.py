"""The one module that builds command lines: one-line errors, argument types, and flags made from dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Optional, Sequence


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


def _integer(text: str) -> int:
    return _int_at_least(text, -(2**63))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


_TYPES = {int: _integer, float: _number, str: str, list[int]: int_list, list[float]: float_list}


def add_config_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per field of a dataclass (`vgg_jax.loop.TrainConfig`), with its default, help and choices.

    The flag is `--field-name`; a field's metadata may give another spelling
    (`"flag": "--lr"`), which is then the documented one, the derived one
    still accepted. Booleans get `--name` and `--no-name`. A field without a
    default is a required flag. Values are checked for their kind here and
    for their range by the library's validation.
    """
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        kind, optional = _unwrap(hints[field.name])
        derived = "--" + field.name.replace("_", "-")
        spelled = field.metadata.get("flag")
        flags = [spelled, derived] if spelled and spelled != derived else [derived]
        required = field.default is dataclasses.MISSING
        default = None if required else field.default
        text = field.metadata.get("help", "")
        if not required and kind is not bool and "default" not in text:
            text += f" (default: {_shown(default)})"
        options: dict[str, Any] = dict(dest=field.name, help=text)
        if kind is bool:
            options.update(action=argparse.BooleanOptionalAction, default=default)
        else:
            options.update(type=_TYPES[kind], default=default, required=required)
            if field.metadata.get("choices"):
                options["choices"] = field.metadata["choices"]
            if field.metadata.get("metavar"):
                options["metavar"] = field.metadata["metavar"]
        parser.add_argument(*flags, **options)


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of a field's annotation: `Optional[int]` gives (int, True)."""
    arguments = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(arguments) == 1:
        return arguments[0], True
    return hint, False


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def given_fields(build_parser: Callable[[], argparse.ArgumentParser], argv: Optional[Sequence[str]], config_class: type) -> set[str]:
    """The fields of `config_class` whose flags appear in `argv` (not filled in from defaults).

    `--resume` takes every other field from the saved run, so it must know
    which values the user typed and which are the parser's defaults.
    """
    unset = object()  # not a string: argparse converts string defaults with the flag's type
    probe = build_parser()
    names = {field.name for field in dataclasses.fields(config_class)}
    probe.set_defaults(**{name: unset for name in names})
    return {name for name, value in vars(probe.parse_args(argv)).items() if name in names and value is not unset}


def config_from_args(args: argparse.Namespace, config_class: type) -> Any:
    """The dataclass built from the parsed flags that `add_config_flags` added."""
    return config_class(**{field.name: getattr(args, field.name) for field in dataclasses.fields(config_class)})


def add_parallel_flags(parser: argparse.ArgumentParser, devices: bool = True) -> None:
    """--devices (unless a config's field gives it) and the jax.distributed flags, shared by train.py and bench.py."""
    if devices:
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
