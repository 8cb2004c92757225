"""Checks every command makes on its output paths before it reads or writes anything."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ts2d_xray.errors import InputError

__all__ = ["check_folder", "check_outputs"]


def check_outputs(inputs: Iterable[Path | None], outputs: Iterable[Path | None]) -> None:
    """Refuse (InputError) an output path that is one of the inputs; None entries are skipped."""
    ins = {p.resolve() for p in inputs if p is not None}
    for out in outputs:
        if out is not None and out.resolve() in ins:
            raise InputError(out, "output would overwrite an input")


def check_folder(folder: Path) -> None:
    """Refuse (InputError) an output folder path that is taken by something else than a folder."""
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder")
