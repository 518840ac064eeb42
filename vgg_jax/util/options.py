"""What the commands' config dataclasses share: a bad field's error, and flags that take comma lists.

A config (`TrainConfig`, `ModelConfig`, `BenchSpec`) is a plain frozen
dataclass; each field's docstring is its help, and `tyro` makes the command
line from it (`vgg_jax.cli`). A field whose flag takes several values at
once ("D,E", "256,512") is annotated with `comma(...)`; a field that
`--resume` may give anew is declared with `resumable(default)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence


class FieldError(ValueError):
    """A config field's bad value. The message begins with the field's name; `field` and `problem` let a
    command put its flag there instead."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


def resumable(default: Any) -> Any:
    """A run setting that cannot change what is computed (length, evaluation, logging, workers, devices, the
    implementations), so that `--resume` may give it anew."""
    return dataclasses.field(default=default, metadata={"resumable": True})


def positive(text: str) -> int:
    """A positive integer from a flag's text (an `each` converter); ValueError otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def comma(
    metavar: str,
    each: Callable[[str], Any] = str,
    choices: Optional[Sequence[Any]] = None,
    every: Optional[Sequence[Any]] = None,
    kind: type = tuple,
) -> Any:
    """A flag that takes its values in one argument, separated by commas ('D,E', '256,512'): a tyro
    constructor for a tuple (duplicates dropped) or a list (`kind`) field.

    `each` turns one item's text into its value (aliases, spellings),
    raising ValueError for a bad one; `choices` are the values allowed;
    `every` is what the word `all` stands for.
    """
    from tyro.constructors import PrimitiveConstructorSpec

    def parse(arguments: list[str]) -> Any:
        text = arguments[0]
        if every and text.strip().lower() == "all":
            return kind(every)
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise ValueError(f"expected one or more values separated by commas, got {text!r}")
        values = []
        for part in parts:
            try:
                value = each(part)
            except ValueError as error:
                raise ValueError(f"{part!r}: {error}") from None
            if choices and value not in choices:
                raise ValueError(f"{part!r} is not one of {', '.join(map(str, choices))}")
            values.append(value)
        return kind(dict.fromkeys(values)) if kind is tuple else kind(values)

    return PrimitiveConstructorSpec(
        nargs=1,
        metavar=metavar,
        instance_from_str=parse,
        is_instance=lambda value: value is None or isinstance(value, (tuple, list)),
        str_from_instance=lambda value: [shown(value)],
    )


def one(metavar: str, parse: Callable[[str], Any]) -> Any:
    """A flag whose text `parse` turns into its value where the field's type alone does not say
    (`--workers auto` or a number); a tyro constructor."""
    from tyro.constructors import PrimitiveConstructorSpec

    return PrimitiveConstructorSpec(
        nargs=1,
        metavar=metavar,
        instance_from_str=lambda arguments: parse(arguments[0]),
        is_instance=lambda value: True,
        str_from_instance=lambda value: [shown(value)],
    )


def flag(config_class: type, field: str) -> Optional[str]:
    """The flag of `field` in a command's config (its held configs' fields included): the name its
    annotation gives (`--lr`), else `--field-name`; None when no field has that name."""
    import typing

    import tyro

    arg_config = type(tyro.conf.arg())
    hints = typing.get_type_hints(config_class, include_extras=True)
    for declared in dataclasses.fields(config_class):
        hint = hints[declared.name]
        plain = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        if dataclasses.is_dataclass(plain):
            found = flag(plain, field)
            if found:
                return found
        elif declared.name == field:
            named = [
                m.name for m in getattr(hint, "__metadata__", ()) if isinstance(m, arg_config) and m.name
            ]
            return "--" + (named[0] if named else field.replace("_", "-"))
    return None


def shown(value: Any) -> str:
    """A field's value as its flag takes it, for messages: lists comma-separated, None as "none"."""
    if isinstance(value, (list, tuple)) and value:
        return ",".join(map(str, value))
    return "none" if value is None or value == () or value == [] else str(value)
