"""Typed, read-only records (dataclasses) from and to plain dicts (JSON, YAML, presets).

The one home of "build a config dataclass from a mapping": unknown keys are refused
with the known ones listed, missing keys keep their defaults, and lists become tuples
where the field is a tuple.  Field types come from the class's resolved annotations
(:func:`typing.get_type_hints`), never from comparing type names as strings.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Window:
    ...     level: float = 40.0
    ...     width_range: tuple[float, float] = (300.0, 500.0)
    ...     invert: bool = False
    >>> record_from_dict(Window, {"width_range": [350, 450]})
    Window(level=40.0, width_range=(350, 450), invert=False)
    >>> record_to_dict(Window())
    {'level': 40.0, 'width_range': [300.0, 500.0], 'invert': False}
    >>> record_from_dict(Window, {"levle": 50})
    Traceback (most recent call last):
    ...
    ValueError: unknown Window key 'levle'; expected one of ['level', 'width_range', 'invert']
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Mapping, TypeVar

__all__ = ["check_keys", "field_types", "is_bool_field", "is_tuple_field", "record_from_dict", "record_to_dict"]

T = TypeVar("T")


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> Mapping[str, Any]:
    """``{field name: resolved type}`` of a dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    return types.MappingProxyType({f.name: hints[f.name] for f in dataclasses.fields(cls)})


def _without_none(tp: Any) -> Any:
    """``X | None`` -> ``X`` (other unions and types unchanged)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def is_tuple_field(cls: type, name: str) -> bool:
    """Whether field ``name`` of dataclass ``cls`` holds a tuple (``tuple[...]``, optionally ``| None``)."""
    tp = _without_none(field_types(cls)[name])
    return tp is tuple or typing.get_origin(tp) is tuple


def is_bool_field(cls: type, name: str) -> bool:
    """Whether field ``name`` of dataclass ``cls`` is a ``bool``."""
    return _without_none(field_types(cls)[name]) is bool


def check_keys(cls: type, data: Mapping[str, Any], *, what: str | None = None) -> None:
    """Refuse ``data`` unless it is a mapping whose keys all name fields of dataclass ``cls``.

    For mappings whose values are not the fields' values themselves (e.g. ranges to
    sample them from); :func:`record_from_dict` makes the same checks.

    Raises:
        TypeError: ``data`` is not a mapping.
        ValueError: A key names no field (the message lists the fields).
    """
    what = what or cls.__name__
    if not isinstance(data, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(data).__name__}")
    known = list(field_types(cls))
    for key in data:
        if key not in known:
            raise ValueError(f"unknown {what} key {key!r}; expected one of {known}")


def record_from_dict(cls: type[T], data: Mapping[str, Any], *, what: str | None = None) -> T:
    """An instance of dataclass ``cls`` from a mapping.

    Args:
        cls: The dataclass.
        data: Field name -> value; lists (JSON arrays) for tuple fields.
        what: How errors name the mapping (default: the class name).

    Raises:
        TypeError: ``data`` is not a mapping.
        ValueError: A key names no field.  Invalid values raise what ``cls``'s own
            checks (``__post_init__``) raise.
    """
    check_keys(cls, data, what=what)
    values = {}
    for key, value in data.items():
        if isinstance(value, list) and is_tuple_field(cls, key):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def record_to_dict(record: Any) -> dict[str, Any]:
    """A dataclass instance as a plain dict: tuples become lists, nested records dicts (JSON-ready)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return record_to_dict(value)
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(record, f.name)) for f in dataclasses.fields(record)}
