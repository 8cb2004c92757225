"""Argument types of the ``ts2d-xray`` command line (shared by ``synth``'s subcommands).

Each turns one command-line word into a value or raises ``argparse.ArgumentTypeError``
with a message that says what was expected.  :data:`SubParsers` is the type of the
object each command's ``add_parser(sub)`` registers itself on.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

__all__ = [
    "SubParsers",
    "fold",
    "name_list",
    "non_negative_int",
    "pixel_shape",
    "positive_int",
    "spacing_mm",
    "spacing_or_native",
    "spacing_pair_mm",
]

#: What ``ArgumentParser.add_subparsers()`` returns (argparse names it only privately).
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _int(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: epochs, workers, cases)."""
    return _int(text, 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds, epochs of encoder freezing)."""
    return _int(text, 0, "an integer >= 0")


def fold(text: str) -> int | str:
    """A fold number >= 0, or ``"all"``."""
    return text if text == "all" else _int(text, 0, "a fold number >= 0 or 'all'")


def spacing_mm(text: str, *, native: bool = False) -> float | None:
    """A pixel size in mm (> 0); with ``native``, the word ``native`` gives None."""
    if native and text.lower() == "native":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in mm{' or native' if native else ''}, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"spacing must be > 0 mm, got {value}")
    return value


def spacing_pair_mm(text: str) -> tuple[float, float]:
    """``MM`` or ``ROW,COL`` in mm, each > 0: a pixel size, the same or per axis."""
    parts = [spacing_mm(p) for p in text.split(",")]
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected MM or ROW,COL in mm, got {text!r}")
    return (parts[0], parts[-1])


def spacing_or_native(text: str) -> float | None:
    """:func:`spacing_mm` that also accepts ``native`` (keep the input's spacing)."""
    return spacing_mm(text, native=True)


def pixel_shape(text: str) -> tuple[int, int]:
    """``H,W`` (or ``HxW``) in pixels, both >= 1."""
    try:
        h, w = (int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W in pixels (e.g. 512,512), got {text!r}") from None
    if min(h, w) < 1:
        raise argparse.ArgumentTypeError(f"H and W must be >= 1, got {text!r}")
    return h, w


def name_list(text: str) -> list[str]:
    """Comma-separated names, blanks dropped."""
    return [n.strip() for n in text.split(",") if n.strip()]
