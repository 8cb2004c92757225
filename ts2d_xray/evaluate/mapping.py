"""A user's mapping from their ground-truth mask names to catalog or derived structures (a YAML file).

Example file::

    lung_field_left.png: lung_left
    lung_field_right.png: lung_right
    heart_outline.png: heart
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any, Mapping

from ts2d_xray import labels as catalog
from ts2d_xray.errors import InputError

__all__ = ["check_mapping", "read_mapping"]


def read_mapping(path: str | PathLike) -> dict[str, str]:
    """Read a YAML mapping from a user's mask names to catalog or derived structures.

    Each key is a mask's file name (``lung_field_left.png``), its stem
    (``lung_field_left``) or a segment name; each value a catalog class or derived
    structure (``lung_left``).  Example file::

        lung_field_left.png: lung_left
        lung_field_right.png: lung_right
        heart_outline.png: heart

    Raises:
        InputError: Missing file, invalid YAML, not a mapping of names to names, an
            unknown structure, or two masks mapped to one structure.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such mapping file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(path, f"not valid YAML{line} ({getattr(err, 'problem', None) or type(err).__name__})") from None
    return check_mapping(data, path)


def check_mapping(data: Any, source: str | PathLike = "mapping") -> dict[str, str]:
    """Validate a ``{mask name: structure}`` mapping (see :func:`read_mapping`)."""
    if not isinstance(data, Mapping) or not data:
        raise InputError(source, "a mapping must be a non-empty set of 'mask name: structure' lines")
    out: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InputError(source, f"entry {key!r}: {value!r} must map a mask name to one structure name")
        try:
            catalog.expand(value)
        except ValueError as err:
            raise InputError(source, f"entry {key!r}: {err}") from None
        out[key] = value
    targets = list(out.values())
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        raise InputError(source, f"several masks map to {', '.join(repeated)}; map one mask per structure")
    return out
