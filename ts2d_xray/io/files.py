"""Small helpers shared by the readers and writers."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

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


@contextlib.contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder to fill; on success its files are moved into ``folder``.

    A new ``folder`` appears at once (the temporary folder is renamed onto it).  In an
    existing folder, each file replaces the one of the same name (``os.replace``: atomic
    per file).  On any error the temporary folder is removed and ``folder`` is left as
    it was (missing parent folders may have been created).
    """
    folder = Path(folder).resolve()  # "." has no name to build a sibling's from
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{folder.name}")
    temp.mkdir()
    try:
        yield temp
        if folder.exists():
            for item in sorted(temp.iterdir()):
                os.replace(item, folder / item.name)
        else:
            os.replace(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
