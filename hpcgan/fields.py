"""Typed config fields that carry their own help and allowed values (docs/design.md, section 4).

A field is declared once, with :func:`option`: its default, its help text, and what values it
allows (``choices``, or a :class:`Range`). Setting a field by its dotted key from a YAML or
command-line value converts the value to the field's type and checks it against what the field
allows, so a bad value is refused where it is read, naming the key and the fix, and ``--help``
lists the same rules (:func:`help_text`). Supported types: ``bool``, ``int``, ``float``,
``str``, ``list[X]`` and ``X | None`` of those.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpcgan.errors import UserError

Choices = tuple[str, ...] | Callable[[], tuple[str, ...]]


@dataclass(frozen=True)
class Range:
    """Allowed numbers: ``low`` and/or ``high`` bounds, each closed unless said open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"

    def complaint(self, value: float) -> str | None:
        """Why ``value`` is outside the range (NaN always is), or None."""
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        if low_ok and high_ok:
            return None
        if self.high is not None and self.low is not None:
            return f"must be in {self}"
        if self.low == 0:
            return "must be positive" if self.low_open else "must not be negative"
        if self.low is not None:
            return (
                f"must be greater than {self.low:g}"
                if self.low_open
                else f"must be at least {self.low:g}"
            )
        return (
            f"must be less than {self.high:g}"
            if self.high_open
            else f"must be at most {self.high:g}"
        )


AT_LEAST_1 = Range(1)
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)


def option(
    default: Any, help: str, *, choices: Choices | None = None, range: Range | None = None
) -> Any:
    """A dataclass field with its help text and allowed values (``choices`` may be a function
    returning them, read when a value is checked: e.g. the names of a registry)."""
    metadata = {"help": help, "choices": choices, "range": range}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    c = f.metadata.get("choices")
    return c() if callable(c) else c


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _name(typ: Any) -> str:
    return getattr(typ, "__name__", str(typ))


def _scalar(key: str, value: Any, typ: type) -> Any:
    """A YAML/CLI value as ``typ`` (bool, int, float, str), or a UserError saying why not."""
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise UserError(f"{key}: expected {_name(typ)}, got {value!r}")


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert ``value`` to the type ``hint`` (a scalar type, ``list[X]`` or ``X | None``)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(key, value, inner)
    if typing.get_origin(hint) is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(
                f"{key}: expected a list of {_name(args[0])} (e.g. [1, 2]), got {value!r}"
            )
        return [coerce(key, v, args[0]) for v in value]
    return _scalar(key, value, hint)


def check(key: str, value: Any, f: dataclasses.Field) -> None:
    """Refuse a value (each entry of a list) outside the field's choices or range."""
    choices, bounds = choices_of(f), f.metadata.get("range")
    for v in value if isinstance(value, list) else [value]:
        if v is None:
            continue
        if choices and v not in choices:
            raise UserError(f"{key}: '{v}' is not one of {', '.join(choices)}")
        why = bounds.complaint(v) if bounds is not None else None
        if why:
            raise UserError(f"{key} {why}, got {v}")


def set_key(root: Any, key: str, value: Any) -> None:
    """Set ``section.name`` of the nested dataclass ``root`` from a YAML/CLI value."""
    parts = key.split(".")
    sections = {f.name: f for f in dataclasses.fields(root)}
    if len(parts) != 2 or parts[0] not in sections:
        raise UserError(f"unknown config key '{key}' (sections: {', '.join(sections)})")
    section = getattr(root, parts[0])
    fields = {f.name: f for f in dataclasses.fields(section)}
    if parts[1] not in fields:
        raise UserError(f"unknown config key '{key}' (keys of {parts[0]}: {', '.join(fields)})")
    coerced = coerce(key, value, _hints(type(section))[parts[1]])
    check(key, coerced, fields[parts[1]])
    setattr(section, parts[1], coerced)


def flatten(tree: Any, prefix: str, source: str) -> dict[str, Any]:
    """``{"train": {"steps": 3}}`` -> ``{"train.steps": 3}`` (lists are values)."""
    if not isinstance(tree, dict):
        raise UserError(f"{source}: expected a mapping at '{prefix or 'top level'}'")
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            flat.update(flatten(v, key, source))
        else:
            flat[key] = v
    return flat


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def help_text(root: type) -> str:
    """The ``key=value`` reference of a nested dataclass, as ``--help`` prints it."""
    lines = []
    for section in dataclasses.fields(root):
        lines.append(f"  {section.name}:")
        for f in dataclasses.fields(section.default_factory()):
            choices, bounds = choices_of(f), f.metadata.get("range")
            allowed = f" {{{'|'.join(choices)}}}" if choices else ""
            if bounds is not None:  # [>= 1], or an interval as it is: [0, 1)
                allowed += f" {bounds}" if str(bounds)[0] in "[(" else f" [{bounds}]"
            lines.append(
                f"    {section.name}.{f.name}{allowed} (default {_default(f)!r})\n"
                f"        {f.metadata['help']}"
            )
    return "\n".join(lines)
