"""Config dataclass fields that carry their own command-line description.

A library config (`TrainConfig`, `BenchSpec`) declares each field with
`option(...)`: its default, help text, and where they differ from the field,
its flag spelling, choices and metavar. `vgg_jax.cli.add_config_flags` makes
the command line from them, so a field added to a config is a flag with no
other edit, with the same default, and the library never parses flags itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence


def positive(text: str) -> int:
    """A positive integer from a flag's text (an `each` converter); ValueError otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError("expected a positive integer")
    return value


def option(
    default: Any,
    help: str,
    flag: Optional[str] = None,
    choices: Optional[Sequence[Any]] = None,
    metavar: Optional[str] = None,
    each: Optional[Callable[[str], Any]] = None,
    every: Optional[Sequence[Any]] = None,
    positional: bool = False,
    parse: Optional[Callable[[str], Any]] = None,
    resumable: bool = False,
) -> Any:
    """A dataclass field whose metadata makes it a flag.

    Args:
        default: the field's default (and the flag's).
        help: the flag's help text; "(default: ...)" is added unless it says "default".
        flag: the documented spelling when it is not `--field-name` (which stays accepted).
        choices: the allowed values (of each item, for a tuple field).
        metavar: the value's name in `--help`.
        each: for a tuple field (a comma-separated flag): turns one item's text into its value,
            raising ValueError for a bad one (aliases, spellings).
        every: for a tuple field: what the word `all` stands for.
        positional: a required positional argument (`bench_data.py DATA`) instead of a flag.
        parse: turns the flag's text into the value, raising ValueError for a bad one, where the
            field's type alone does not say (`--workers auto` or a number).
        resumable: a run setting that cannot change what is computed (length, evaluation, logging,
            workers, devices), so `--resume` may give it anew.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "choices": None if choices is None else tuple(choices),
        "metavar": metavar,
        "each": each,
        "every": None if every is None else tuple(every),
        "positional": positional,
        "parse": parse,
        "resumable": resumable,
    }
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field) -> str:
    """The documented flag of a config field: the spelling its metadata gives, else `--field-name`."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def shown(value: Any) -> str:
    """A field's value as its flag takes it, for messages: lists comma-separated, None as "none"."""
    if isinstance(value, (list, tuple)) and value:
        return ",".join(map(str, value))
    return "none" if value is None or value == () or value == [] else str(value)
