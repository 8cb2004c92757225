"""Small helpers shared by the readers and writers."""

from __future__ import annotations

from pathlib import Path

#: Suffixes made of two parts, recognised before the last suffix alone.
MULTI_PART_SUFFIXES = (".seg.nrrd", ".nii.gz")


def format_suffix(path: Path) -> str:
    """Lower-case format suffix of a path: ``.seg.nrrd`` and ``.nii.gz`` count as one."""
    name = path.name.lower()
    return next((s for s in MULTI_PART_SUFFIXES if name.endswith(s)), path.suffix.lower())


def sidecar_path(path: Path) -> Path:
    """The JSON sidecar beside an image or mask file: ``<name>.json`` for ``<name>.nii.gz``."""
    return path.with_name(path.name[: len(path.name) - len(format_suffix(path))] + ".json")


def brief(err: BaseException) -> str:
    """One line for an error message from a library exception.

    ITK and pydicom messages can span many lines (file and line locations first); the
    last non-empty line names the problem.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
