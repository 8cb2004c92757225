"""Integrity of a model bundle's weights: checksums at load, zip CRCs, safe reads at install.

A bundle's manifest lists the SHA-256 of its checkpoints (:mod:`ts2d_xray.segment.manifest`);
they are checked whenever a model is loaded, installed ones included, so a file corrupted
after install is never used.  A checkpoint without a listed checksum is checked by the
CRC-32 its zip format stores for every member.  At install every checkpoint is also
read as loading reads it, so a model that loading would refuse (a pickle that runs
code) is never installed.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from ts2d_xray.errors import InputError, OutputError
from ts2d_xray.io.files import brief, read_json, write_json
from ts2d_xray.segment.manifest import ModelManifest, verify_bundle

__all__ = ["VERIFIED_FILE", "check_checkpoint", "check_crc", "verify_weights"]

log = logging.getLogger(__name__)

#: Per installed model: relative path -> [size, mtime_ns, SHA-256] of checkpoints whose
#: checksum matched; a file of the same size and time is not hashed again.
VERIFIED_FILE = ".verified.json"
#: How a zip file (torch's checkpoint format since 1.6) begins; a legacy checkpoint is a bare pickle.
_ZIP_MAGIC = b"PK\x03\x04"


def verify_weights(root: Path, manifest: ModelManifest, *, remember: bool = False) -> None:
    """Check a bundle's files before its weights are loaded.

    Every group's files must exist; a checkpoint with a SHA-256 in the manifest must
    match it; one without (a hand-written manifest) must pass its zip CRC-32
    (:func:`check_crc`).  With ``remember`` (installed models) the checksums that
    matched are kept with the file's size and modification time (:data:`VERIFIED_FILE`),
    so an unchanged file is not hashed again (about 0.6 s per GB); any change is.

    Raises:
        InputError: A missing file, a checksum mismatch or a corrupted checkpoint.
    """
    known = _verified(root) if remember else {}
    stamps = {rel: _stamp(root / rel, sha) for rel, sha in manifest.sha256.items() if (root / rel).is_file()}
    todo = {rel: sha for rel, sha in manifest.sha256.items() if known.get(rel) != stamps.get(rel)}
    verify_bundle(root, replace(manifest, sha256=todo))
    for g in manifest.groups:
        for rel in g.checkpoints():
            if rel not in manifest.sha256:
                check_crc(root / rel)
    if remember and todo:
        try:
            write_json(root / VERIFIED_FILE, stamps)
        except OutputError as err:  # a read-only cache: checked again next time
            log.debug("not remembering the checksums: %s", err)


def _stamp(path: Path, sha256: str) -> list:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, sha256]


def _verified(root: Path) -> dict[str, Any]:
    try:
        return read_json(root / VERIFIED_FILE, what="checksum cache")
    except InputError:
        return {}


def check_crc(path: Path) -> None:
    """Check the CRC-32 of every member of a zip checkpoint (torch's format), reading it whole.

    Catches corrupted weights that loading would take as they are.  A legacy
    (non-zip) checkpoint has no checksum of its own: a warning says it is unchecked.

    Raises:
        InputError: A corrupted or truncated checkpoint.
    """
    try:
        with open(path, "rb") as f:
            legacy = f.read(4) != _ZIP_MAGIC
        if legacy:
            log.warning("%s: not a zip checkpoint and no SHA-256 in the manifest: it cannot be checked", path)
            return
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:  # a truncated zip, say
        raise InputError(path, f"corrupted or unreadable checkpoint ({brief(err)})") from None
    if bad is not None:
        raise InputError(path, f"corrupted checkpoint: the CRC-32 of {bad!r} does not match its data")


def check_checkpoint(path: Path, shown: Path, *, read: bool = True) -> None:
    """Refuse a corrupted checkpoint (zip CRC) and, with ``read``, one that weights-only loading refuses.

    Used at install, so that a model that would be refused at load is not installed.
    Errors name ``shown`` (where the file came from) instead of ``path``.
    """
    from ts2d_xray.nnunet.checkpoint import read_checkpoint

    try:
        check_crc(path)
        if read:
            read_checkpoint(path)
    except InputError as err:
        raise InputError(shown, err.problem) from None
