"""The user cache folder, and arrays computed once and kept there under a key.

One folder per user holds everything the project keeps between runs:
``$TS2D_XRAY_HOME`` when set, else ``$XDG_CACHE_HOME/ts2d-xray``, else
``~/.cache/ts2d-xray``.  Installed models live in ``<home>/models``
(:mod:`ts2d_xray.segment.models`); tables that are slow to compute (tube spectra,
attenuation coefficients: :mod:`synth.materials`) in ``<home>/tables/<namespace>/``.

A table is a set of named numpy arrays computed from settings (a JSON-able mapping).
:func:`cached_arrays` names its file by the SHA-256 of the settings, stores the
settings inside, writes it atomically (:func:`ts2d_xray.io.files.atomic_paths`) and,
when reading, checks the settings, the array names and the zip's CRC-32 of every
array; a file that fails any check is computed again and rewritten, so a damaged
cache costs time, never a wrong value.  A cache that cannot be written (read-only
home, full disk) costs the same: the values are computed and used, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ts2d_xray.io.files import atomic_paths, brief

__all__ = ["DEFAULT_HOME", "HOME_ENV", "cache_home", "cache_key", "cached_arrays", "table_path"]

log = logging.getLogger(__name__)

#: Environment variable that moves the user cache folder.
HOME_ENV = "TS2D_XRAY_HOME"
#: The cache folder when neither ``$TS2D_XRAY_HOME`` nor ``$XDG_CACHE_HOME`` is set.
DEFAULT_HOME = Path("~/.cache/ts2d-xray")
# Array name under which a table file keeps its settings (as JSON text).
_SETTINGS = "__settings__"


def cache_home() -> Path:
    """The user cache folder (``$TS2D_XRAY_HOME``, ``$XDG_CACHE_HOME/ts2d-xray`` or ``~/.cache/ts2d-xray``), read when called."""
    value = os.environ.get(HOME_ENV)
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: a relative value is to be ignored
        return Path(xdg) / "ts2d-xray"
    return DEFAULT_HOME.expanduser()


def cache_key(settings: Mapping[str, Any]) -> str:
    """32 hex digits of the SHA-256 of ``settings`` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(_canonical(settings).encode()).hexdigest()[:32]


def table_path(namespace: str, settings: Mapping[str, Any]) -> Path:
    """The file of the table computed from ``settings``: ``<home>/tables/<namespace>/<key>.npz``."""
    return cache_home() / "tables" / namespace / f"{cache_key(settings)}.npz"


def cached_arrays(
    namespace: str, settings: Mapping[str, Any], compute: Callable[[], Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Arrays computed from ``settings``, read from the user cache when there, else computed and stored.

    Args:
        namespace: The kind of table (a folder name, e.g. ``"spectra"``).
        settings: Everything the values depend on, JSON-able (include the versions of
            the libraries that compute them: an upgrade then makes new entries).
        compute: Computes the arrays (names without a leading ``__``).

    Returns:
        The arrays by name, equal to ``compute()``'s (numpy's own ``.npz`` round trip).
    """
    path = table_path(namespace, settings)
    cached = _read_table(path, settings)
    if cached is not None:
        return cached
    arrays = {name: np.asarray(a) for name, a in compute().items()}
    try:
        with atomic_paths(path) as (temp,):
            with open(temp, "wb") as f:  # a file object: numpy would add ".npz" to the temporary name
                np.savez(f, **arrays, **{_SETTINGS: np.array(_canonical(settings))})
    except OSError as err:
        log.warning("cache %s not written (%s); computing it again next time", path, brief(err))
    return arrays


def _read_table(path: Path, settings: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The arrays of a table file, or None when it is missing or fails a check (logged)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}  # reads every member: checks its CRC-32
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        log.info("cache %s unreadable (%s): computing it again", path, brief(err))
        return None
    stored = arrays.pop(_SETTINGS, None)
    if stored is None or stored.ndim != 0 or str(stored) != _canonical(settings):
        log.info("cache %s holds other settings: computing it again", path)
        return None
    return arrays


def _canonical(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), allow_nan=False)
