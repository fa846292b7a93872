"""Typed configuration records, and the command-line flags built from them.

A configuration is a dataclass whose fields are declared with :func:`option`: the default (the one
place it lives), a help text, and optionally the flag's name when it differs from the field's, its
choices, its help group, or ``cli=False`` for fields the command line does not show. :func:`flags_of`
reads those fields (type from the annotation: ``int``, ``float``, ``str``, ``bool`` as
``--x/--no-x``, ``tuple[float, float]`` as two values, ``X | None`` as ``X``) and :func:`add_flag`
adds one to a parser with default ``None`` ("not given"), so that named recipes can sit between the
dataclass default and the flag. :func:`to_record` / :func:`from_record` convert to and from plain
dicts (YAML, weights-only checkpoints); :func:`with_overrides` is ``dataclasses.replace`` that also
merges nested configurations and turns lists into tuples.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["Flag", "add_flag", "field_names", "field_of", "flags_of", "from_record", "option", "to_record", "value_problem",
           "with_overrides"]

C = TypeVar("C")


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    choices: tuple[Any, ...] | None = None,
    group: str | None = None,
    cli: bool = True,
    required: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its command-line description in ``metadata``."""
    metadata = {"help": help, "flag": flag, "choices": choices, "group": group, "cli": cli, "required": required}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_of(cls: type, name: str, default: Any = dataclasses.MISSING) -> Any:
    """The field ``name`` of the config ``cls`` (same help and flag) for another config, with its default or ``default``."""
    base = {f.name: f for f in dataclasses.fields(cls)}[name]
    if default is dataclasses.MISSING:
        default = base.default
    return dataclasses.field(default=default, metadata=base.metadata)


@dataclasses.dataclass(frozen=True)
class Flag:
    """The command-line flag of one configuration field."""

    name: str  # flag name without dashes (the argparse ``dest``)
    field: str  # the field it sets
    kind: type  # int, float, str or bool
    nargs: int | None  # 2 for a pair
    help: str
    choices: tuple[Any, ...] | None
    group: str | None
    required: bool


def _scalar_type(annotation: Any) -> tuple[type, int | None]:
    """``(type, nargs)`` of a field annotation: ``X | None`` -> X, ``tuple[X, X]`` -> (X, 2)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return _scalar_type(inner)
    if origin is tuple:
        return args[0], len(args)
    return annotation, None


def field_names(cls: type) -> set[str]:
    """Names of the fields of the configuration class ``cls``."""
    return {f.name for f in dataclasses.fields(cls)}


def flags_of(cls: type) -> list[Flag]:
    """The flags of the command-line fields of ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", False):
            continue
        kind, nargs = _scalar_type(hints[f.name])
        out.append(Flag(meta["flag"] or f.name, f.name, kind, nargs, meta["help"], meta["choices"], meta["group"],
                        meta["required"]))
    return out


def add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: Flag, default_text: str | None) -> None:
    """Add ``--<flag.name>`` (default ``None``: not given) with ``default_text`` appended to its help."""
    text = flag.help if default_text is None else f"{flag.help} (default: {default_text})"
    text = text.replace("%", "%%")
    if flag.kind is bool:
        parser.add_argument(f"--{flag.name}", action=argparse.BooleanOptionalAction, default=None, help=text)
        return
    metavar = tuple(f"{flag.name.upper()}_{i}" for i in range(flag.nargs)) if flag.nargs else None
    parser.add_argument(f"--{flag.name}", type=flag.kind, nargs=flag.nargs, choices=flag.choices, default=None,
                        required=flag.required, metavar=metavar, help=text)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_record(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_record(config: Any) -> dict[str, Any]:
    """The configuration as plain nested dicts and lists (YAML and weights-only checkpoint safe)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _coerce(annotation: Any, current: Any, value: Any) -> Any:
    """``value`` for a field of type ``annotation``: nested configs merged, lists made tuples."""
    if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
        return with_overrides(current, value)
    kind_origin = typing.get_origin(annotation)
    if kind_origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        kind_origin = typing.get_origin(inner[0]) if len(inner) == 1 else None
    if kind_origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def with_overrides(config: C, overrides: Mapping[str, Any]) -> C:
    """A copy of ``config`` with ``overrides`` (field name -> value); ``TypeError`` naming unknown fields."""
    unknown = sorted(set(overrides) - field_names(type(config)))
    if unknown:
        raise TypeError(f"{type(config).__name__} has no field(s) {unknown}")
    hints = typing.get_type_hints(type(config))
    values = {k: _coerce(hints[k], getattr(config, k), v) for k, v in overrides.items()}
    return dataclasses.replace(config, **values)


def from_record(cls: type[C], record: Mapping[str, Any]) -> C:
    """The configuration ``cls`` described by ``record`` (as :func:`to_record` writes; missing fields default)."""
    return with_overrides(cls(), record)


def _is_kind(kind: Any, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return not isinstance(kind, type) or kind is Any or isinstance(value, kind)


def value_problem(cls: type, name: str, value: Any) -> str | None:
    """Why ``value`` (as YAML gives it) cannot be field ``name`` of ``cls``: wrong type, count or choice; None if it can."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    annotation = typing.get_type_hints(cls)[name]
    if value is None:
        return None if type(None) in typing.get_args(annotation) else "may not be null"
    kind, nargs = _scalar_type(annotation)
    if nargs and not (isinstance(value, (list, tuple)) and len(value) == nargs):
        return f"expected {nargs} values, got {value!r}"
    if not all(_is_kind(kind, v) for v in (value if nargs else [value])):
        kind_name = "a number" if kind is float else f"a {getattr(kind, '__name__', kind)}"
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if kind is float and isinstance(value, str) else ""
        return f"expected {kind_name}, got {value!r}{hint}"
    choices = field.metadata.get("choices")
    if choices and value not in choices:
        return f"must be one of {list(choices)}, got {value!r}"
    return None
