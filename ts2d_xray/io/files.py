"""Files: the one atomic writer, staged folders, JSON reading and writing, error lines.

Every file the project writes goes through :func:`atomic_paths` (or a helper built on
it): data is written to a hidden temporary sibling (``.tmp-<random>-<name>``, unique
per writer, in the same folder so that the final ``os.replace`` is an atomic rename)
and moved onto its name only once complete; on any error the temporary file is
removed.  Folders are filled the same way (:func:`staged_folder`, :func:`new_folder`).
So no reader ever sees a half-written file, and a failed or killed run leaves the
previous file (or nothing) behind.

A write that fails for want of room or permission (disk full, file too large,
read-only folder, a parent path that is a file) raises
:class:`~ts2d_xray.errors.OutputError` naming the final path and the cause, never the
temporary one, so callers tell it from a bad input (:func:`output_error`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from os import PathLike
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from ts2d_xray.errors import InputError, OutputError
from ts2d_xray.kinds import format_stem

__all__ = [
    "atomic_paths",
    "brief",
    "json_default",
    "missing_folders",
    "new_folder",
    "is_output_error",
    "output_error",
    "read_json",
    "remove_empty",
    "remove_tree",
    "sidecar_path",
    "staged_folder",
    "temp_sibling",
    "write_json",
    "write_text",
]


def sidecar_path(path: Path) -> Path:
    """The JSON sidecar beside an image or mask file: ``<name>.json`` for ``<name>.nii.gz``."""
    return path.with_name(format_stem(path) + ".json")


def brief(err: BaseException) -> str:
    """One line for an error message from a library exception.

    ITK and pydicom messages can span many lines (file and line locations first); the
    last non-empty line names the problem.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def temp_sibling(path: Path, prefix: str = ".tmp") -> Path:
    """A unique hidden path beside ``path`` that ends with its name (libraries pick formats by suffix)."""
    return path.with_name(f"{prefix}-{uuid.uuid4().hex[:8]}-{path.name}")


#: Errors that only writing gives: whatever the path, the output place is at fault.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def output_error(err: OSError, path: Path, temp: Path | None = None) -> OutputError:
    """``err`` (raised while writing ``path``) as an :class:`OutputError` naming ``path`` and the cause.

    When ``temp`` is the temporary folder being filled for ``path``, a file the error
    names inside it is named at its final place in ``path``.  Without ``temp`` a plain
    OSError is named ``path`` (the temporary file it names is gone) and an OutputError
    is returned as it is.
    """
    if isinstance(err, OutputError):
        named, cause = err.path, err.problem
    else:
        named, cause = (err.filename if temp is not None else None), err.strerror or brief(err)
    where = Path(os.fsdecode(named)) if named is not None else path
    if temp is not None and (where == temp or temp in where.parents):
        where = path / where.relative_to(temp)
    return err if isinstance(err, OutputError) and where == Path(err.path or path) else OutputError(where, cause)


def missing_folders(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist (deepest first): what writing ``path`` creates."""
    return [p for p in path.parents if not p.exists()]


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove each folder that is (still) empty, in the order given (deepest first), ignoring the others."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def is_output_error(err: OSError, *places: Path) -> bool:
    """Whether ``err`` comes from writing into ``places`` (not from reading an input elsewhere).

    True for errors that only writing gives (disk full, file too large, read-only file
    system) and for errors naming a path in one of ``places``.
    """
    if isinstance(err, OutputError) or err.errno in _OUTPUT_ERRNOS:
        return True
    named = [Path(os.fsdecode(f)) for f in (err.filename, err.filename2) if f is not None]
    return any(n == p or p in n.parents for n in named for p in places)


def _make_parent(path: Path) -> None:
    """Create ``path``'s missing parent folders; OutputError when that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        file = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise OutputError(file, "is a file, not a folder, so nothing can be written in it") from None
    except OSError as err:
        raise OutputError(path.parent, err.strerror or brief(err)) from None


@contextlib.contextmanager
def atomic_paths(*paths: str | PathLike) -> Iterator[tuple[Path, ...]]:
    """Yield temporary paths to write; move them onto ``paths`` on success, delete them on error.

    Missing parent folders are created.  The files are moved in the order given, so the
    last one can serve as a completion marker.

    Raises:
        OutputError: Any OSError while creating the folders, writing the temporary
            files (the body only writes them) or moving them, naming the final path.
    """
    paths = tuple(Path(p) for p in paths)
    created = sorted({f for p in paths for f in missing_folders(p)}, key=lambda f: -len(f.parts))
    temps = tuple(temp_sibling(p) for p in paths)
    try:
        for p in paths:
            _make_parent(p)
        try:
            yield temps
        except OSError as err:
            failed = next((p for t, p in zip(temps, paths) if is_output_error(err, t)), paths[0])
            raise output_error(err, failed) from err
        for temp, p in zip(temps, paths):
            try:
                os.replace(temp, p)
            except OSError as err:
                raise output_error(err, p) from err
    except BaseException:
        for temp in temps:
            with contextlib.suppress(OSError):  # missing, or never creatable
                temp.unlink()
        remove_empty(created)  # a failed write leaves no new empty folder either
        raise


def write_text(path: str | PathLike, text: str) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    with atomic_paths(path) as (temp,):
        temp.write_text(text)
    return path


def json_default(value: Any) -> Any:
    """JSON for numpy values and read-only mappings (``json.dumps(..., default=json_default)``)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"parameter of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def write_json(path: str | PathLike, value: Any, *, indent: int | None = 1) -> Path:
    """Write ``value`` as JSON atomically; numpy values and mappings are converted (:func:`json_default`).

    Raises:
        RuntimeError: A NaN or infinite float in ``value``: JSON has none (Python's bare
            ``NaN`` token is not JSON), and inputs holding them are refused, so one
            reaching an output is a bug; nothing is written.
    """
    try:
        text = json.dumps(value, indent=indent, default=json_default, allow_nan=False)
    except ValueError as err:
        raise RuntimeError(f"{path}: {err}: a NaN or infinite value reached an output") from err
    return write_text(path, text)


def read_json(path: str | PathLike, *, what: str = "JSON", expect: type = dict) -> Any:
    """A JSON value of type ``expect`` from a file.

    Raises:
        InputError: Naming the file, when it is missing, unreadable, not JSON, or not
            of type ``expect``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, f"missing (expected a {what} file)") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"cannot read it as {what} ({brief(err)})") from None
    if not isinstance(data, expect):
        raise InputError(path, f"expected a {what} {'object' if expect is dict else expect.__name__}, "
                               f"found {type(data).__name__}")
    return data


def remove_tree(folder: Path) -> None:
    """Remove a folder: first renamed aside (atomic), so no reader sees it half-deleted."""
    trash = temp_sibling(folder, ".removing")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def new_folder(folder: str | PathLike, *, replace: bool = False, prefix: str = ".tmp") -> Iterator[Path]:
    """Yield a hidden temporary folder to fill; on success it becomes ``folder``, whole.

    Args:
        folder: Where the folder appears.
        replace: Replace an existing ``folder`` (it is moved aside first, and removed
            once the new one is in place); without it, an existing non-empty folder
            raises FileExistsError before anything is written.
        prefix: Prefix of the temporary folder's name (shows what a leftover was).
    """
    folder = Path(folder).resolve()
    if folder.exists() and not replace and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder}: exists and is not an empty folder")
    with _filling(folder, prefix) as temp:
        yield temp
        if folder.is_dir():
            remove_tree(folder)  # empty, or replace=True
        elif folder.exists():
            folder.unlink()  # a file, and replace=True
        os.replace(temp, folder)


@contextlib.contextmanager
def _filling(folder: Path, prefix: str = ".tmp") -> Iterator[Path]:
    """A new temporary sibling folder of ``folder``, removed on exit; output errors as OutputError.

    An OSError inside the block becomes an :class:`OutputError` when it comes from
    writing (:func:`_is_output`: a full disk, or a path in the temporary or final
    folder); any other (reading an input, say) propagates as it is.
    """
    created = missing_folders(folder)
    temp = temp_sibling(folder, prefix)
    try:
        _make_parent(folder)
        try:
            temp.mkdir()
        except OSError as err:
            raise OutputError(folder, err.strerror or brief(err)) from None
        try:
            yield temp
        except OSError as err:
            if not is_output_error(err, temp, folder):
                raise
            raise output_error(err, folder, temp) from err
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        remove_empty(created)
        raise
    shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(folder: str | PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder to fill; on success its files are moved into ``folder``.

    A new ``folder`` appears at once (the temporary folder is renamed onto it).  In an
    existing folder, each file replaces the one of the same name (``os.replace``: atomic
    per file), and each sub-folder the folder of the same name (which is first moved
    aside and removed: :func:`remove_tree`).  On any error the temporary folder is
    removed and ``folder`` is left as it was (missing parent folders may have been
    created).
    """
    folder = Path(folder).resolve()  # "." has no name to build a sibling's from
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder")
    with _filling(folder) as temp:
        yield temp
        if folder.exists():
            for item in sorted(temp.iterdir()):
                dest = folder / item.name
                if item.is_dir() and dest.is_dir() and not dest.is_symlink():
                    remove_tree(dest)  # os.replace cannot replace a non-empty folder
                os.replace(item, dest)
        else:
            os.replace(temp, folder)
