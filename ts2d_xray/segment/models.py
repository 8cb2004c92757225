"""Model bundles: what a segmentation model is on disk, where installed ones live, and safe installs.

A *bundle* is a folder (or a ``.zip`` of one) holding one nnU-Net v2 model per *group*
(TS2D's five: organs, vertebrae, cardiac, muscles, ribs; or any other split) and a small
manifest, :data:`MANIFEST`::

    BUNDLE/
      ts2d_xray_model.json                       the manifest (ModelManifest)
      <group>/<trainer>__<plans>__2d/            one nnU-Net results folder per group
          plans.json  dataset.json  fold_<N>/checkpoint_final.pth

The manifest (:mod:`ts2d_xray.segment.manifest`) says what the model expects and produces.  A
folder or zip *without* a manifest is read as it is: every nnU-Net folder in it is one
group and the manifest is inferred, which covers the published TS2D/TSXR zips (K + 1
sigmoid outputs with background as channel 0, trainer names nnU-Net does not know).

Installed bundles live in ``$TS2D_XRAY_HOME/models/<name>/`` (default
``$XDG_CACHE_HOME/ts2d-xray``, else ``~/.cache/ts2d-xray``: :func:`ts2d_xray.io.cache.cache_home`); names are resolved exactly, never by prefix.  The *bundled*
default models ship inside the package (``ts2d_xray/weights/<name>/``, made by
``scripts/make_default_models.py``); an installed model of the same name wins.

Example:
    >>> from ts2d_xray.segment.models import install_model, list_models
    >>> install_model("ts2d_coronal.zip", name="ts2d")   # doctest: +SKIP
    >>> [m.name for m in list_models()]                  # doctest: +SKIP
    ['ts2d']
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import Any

from ts2d_xray.errors import InputError
from ts2d_xray.io.cache import HOME_ENV, cache_home
from ts2d_xray.io.files import is_output_error, output_error, remove_tree, temp_sibling
from ts2d_xray.segment.integrity import check_checkpoint
from ts2d_xray.segment.manifest import (
    MANIFEST,
    ModelManifest,
    hash_weights,
    infer_manifest,
    read_manifest,
    verify_bundle,
    write_manifest,
)

__all__ = [
    "BUNDLED_DIR",
    "HOME_ENV",
    "ModelBundle",
    "bundled_models",
    "install_model",
    "installed_summary",
    "list_models",
    "model_home",
    "open_model",
    "remove_model",
    "safe_extract",
]

log = logging.getLogger(__name__)

#: Where the bundled default models live (package data).
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "weights"
#: Largest total size of the files an archive may unpack to (a guard against zip bombs).
MAX_UNPACKED_BYTES = 32 * 2**30
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_CHUNK = 2**20


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """An opened bundle: its root folder and manifest.

    A bundle opened from a zip is unpacked into a temporary folder that
    :meth:`close` removes (``with open_model(...) as bundle:`` does it).

    Attributes:
        root: The folder holding the manifest (or the nnU-Net folders).
        manifest: The manifest (read or inferred).
        installed: True for a bundle in the user cache (checked when installed).
    """

    root: Path
    manifest: ModelManifest
    installed: bool = False
    _tempdir: Any = None

    @property
    def name(self) -> str:
        return self.manifest.name

    def close(self) -> None:
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def __enter__(self) -> "ModelBundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the user cache ---------------------------------------------------------------
def model_home() -> Path:
    """The user cache folder (:func:`ts2d_xray.io.cache.cache_home`); installed models live in ``<it>/models``."""
    return cache_home()


def _models_dir() -> Path:
    return model_home() / "models"


def list_models() -> list[ModelManifest]:
    """Manifests of the installed models, by name.  Broken installs are skipped with a warning."""
    folder = _models_dir()
    out = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if path.name.startswith(".") or not path.is_dir():
            continue
        try:
            out.append(read_manifest(path / MANIFEST))
        except InputError as err:
            log.warning("skipping installed model %s: %s", path.name, err)
    return out


def bundled_models() -> list[ModelManifest]:
    """Manifests of the models that ship with the package, by name."""
    out = []
    for path in sorted(BUNDLED_DIR.iterdir()) if BUNDLED_DIR.is_dir() else ():
        if (path / MANIFEST).is_file():
            out.append(read_manifest(path / MANIFEST))
    return out


def installed_summary() -> str:
    """One line naming the installed models and how to install one (for error messages)."""
    names = [m.name for m in list_models()]
    listing = f"installed models: {', '.join(names)}" if names else f"no model is installed in {_models_dir()}"
    return f"{listing}; install one with `ts2d-xray models install ZIP_OR_DIR` (${HOME_ENV} moves the cache)"


def open_model(spec: str | PathLike, *, display: str | None = None) -> ModelBundle:
    """Open a bundle by installed name, folder path or zip path.

    Names are matched exactly (``ts2d_cardiac`` never resolves to ``ts2d``).  A path
    that exists wins over an installed name.

    Args:
        spec: Installed model name, bundle folder, nnU-Net results folder or ``.zip``.
        display: Override the display convention of a bundle without a manifest.

    Raises:
        InputError: Unknown name (the message lists the installed models), a path that
            is neither a bundle nor an nnU-Net model, an unsafe or broken archive, a
            malformed manifest.
    """
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise InputError(path, "a model is a folder or a .zip archive; this file is neither")
            temp = tempfile.TemporaryDirectory(prefix="ts2d-xray-model-")
            try:
                safe_extract(path, Path(temp.name))
                root = _bundle_root(Path(temp.name))
                manifest = _load_or_infer(root, default_name=_stem(path), display=display)
            except BaseException:
                temp.cleanup()
                raise
            return ModelBundle(root, manifest, False, temp)
        root = _bundle_root(path)
        return ModelBundle(root, _load_or_infer(root, default_name=path.name, display=display))
    name = str(spec)
    if _NAME.fullmatch(name):
        folder = _models_dir() / name
        if (folder / MANIFEST).is_file():
            return ModelBundle(folder, read_manifest(folder / MANIFEST), installed=True)
        if (BUNDLED_DIR / name / MANIFEST).is_file():
            return ModelBundle(BUNDLED_DIR / name, read_manifest(BUNDLED_DIR / name / MANIFEST))
        installed = [m.name for m in list_models() + bundled_models()]
        close = difflib.get_close_matches(name, installed, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(None, f"unknown model {name!r}{hint}; {installed_summary()}")
    raise InputError(path, "no such model file or folder")


def _stem(path: Path) -> str:
    stem = path.name[:-4] if path.name.lower().endswith(".zip") else path.name
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip("._-") or "model"


# --- install ----------------------------------------------------------------------
def install_model(source: str | PathLike, name: str | None = None, *, force: bool = False,
                  display: str | None = None, trust: bool = False) -> ModelManifest:
    """Install a bundle (folder or zip) into the user cache.

    The source is unpacked or copied into a hidden folder beside the destination,
    checked (manifest, SHA-256 of every listed file, the zip CRC of every checkpoint,
    and every checkpoint read as :func:`~ts2d_xray.nnunet.checkpoint.read_checkpoint`
    reads it at load), given a manifest if it had none (with the SHA-256 of its
    weights), and only then renamed into place: a failed install leaves nothing behind.
    A folder holding a symbolic link is refused (its target may lie anywhere).

    Args:
        source: Bundle folder, nnU-Net results folder or ``.zip``.
        name: Installed name (default: the manifest's, else the file or folder name).
        force: Replace an installed model of the same name.
        display: Display convention of a bundle without a manifest (default: what
            :func:`infer_manifest` infers).
        trust: Accept checkpoints holding Python objects that weights-only loading
            refuses (loading them can run code from the file); they are not loaded here.

    Returns:
        The installed model's manifest.

    Raises:
        InputError: A missing, unsafe or broken source (naming the file at fault).
        OutputError: The cache cannot be written.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise InputError(source, "no such file or folder")
    if name is not None and not _NAME.fullmatch(name):
        raise ValueError(f"name must be letters, digits, '.', '_' or '-' (starting with a letter or digit), "
                         f"got {name!r}")
    models = _models_dir()
    staging = temp_sibling(models / "bundle", ".installing")
    try:
        models.mkdir(parents=True, exist_ok=True)
        root, manifest = _checked_copy(source, staging, name, display, trust)
        target = models / manifest.name
        if target.exists():
            if not force:
                raise InputError(target, f"model {manifest.name!r} is already installed; "
                                         "pass force=True (--force) to replace it")
            remove_tree(target)
        os.replace(root, target)
    except OSError as err:
        if not is_output_error(err, staging, models):
            raise  # reading the source failed
        raise output_error(err, models, staging) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("installed model %s into %s", manifest.name, target)
    return manifest


def _checked_copy(source: Path, staging: Path, name: str | None, display: str | None, trust: bool
                  ) -> tuple[Path, ModelManifest]:
    """Copy or unpack ``source`` into ``staging``, check it, write its manifest; ``(bundle root, manifest)``."""
    _copy_source(source, staging)
    root = _bundle_root(staging)
    manifest = _load_or_infer(root, default_name=_stem(source), display=display)
    if name is not None:
        manifest = replace(manifest, name=name)
    if not _NAME.fullmatch(manifest.name):
        raise InputError(source, f"model name {manifest.name!r} is not a valid folder name; pass name=")
    verify_bundle(root, manifest)
    for rel in (rel for g in manifest.groups for rel in g.checkpoints()):
        check_checkpoint(root / rel, _shown(source, staging, root / rel), read=not trust)
    if manifest.inferred or not manifest.sha256:
        manifest = replace(manifest, sha256=hash_weights(root, manifest), inferred=False)
    write_manifest(root, manifest)
    return root, manifest


def _copy_source(source: Path, staging: Path) -> None:
    """Unpack (zip) or copy (folder) ``source`` into ``staging``; symbolic links are refused."""
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise InputError(source, "a model is a folder or a .zip archive; this file is neither")
        safe_extract(source, staging)
        return
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        for link in (here / e for e in (*dirs, *files) if (here / e).is_symlink()):
            raise InputError(link, f"a symbolic link (to {os.readlink(link)}) in the model folder; links are "
                                   "refused, as their target may lie anywhere: copy the file in")
        (staging / here.relative_to(source)).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(here / f, staging / here.relative_to(source) / f)


def _shown(source: Path, staging: Path, path: Path) -> Path:
    """Where a file unpacked or copied into ``staging`` is in ``source``, for messages."""
    rel = path.relative_to(staging)
    return source / rel if source.is_dir() else Path(f"{source}:{rel.as_posix()}")


def remove_model(name: str) -> None:
    """Remove an installed model (InputError for an unknown name)."""
    folder = _models_dir() / name
    if not _NAME.fullmatch(name) or not (folder / MANIFEST).is_file():
        raise InputError(None, f"unknown model {name!r}; {installed_summary()}")
    remove_tree(folder)


def safe_extract(archive: str | PathLike, dest: str | PathLike, *, max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Unpack a zip archive into ``dest``, refusing the whole archive if any entry is unsafe.

    Every entry is checked before anything is written: absolute paths, ``..``
    components, drive letters and symbolic links are refused (they could write
    outside ``dest``), as are archives that unpack to more than ``max_bytes``
    (counted while unpacking, so a lying header does not help).

    Raises:
        InputError: An unsafe entry, a broken archive, or too much data.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            root = dest.resolve()
            for m in members:
                parts = PurePosixPath(m.filename.replace("\\", "/")).parts
                unsafe = (not parts or m.filename.startswith(("/", "\\")) or ".." in parts
                          or re.match(r"^[A-Za-z]:", parts[0]) is not None)
                if unsafe or not (root / Path(*parts)).resolve().is_relative_to(root):
                    raise InputError(archive, f"archive entry {m.filename!r} would land outside the target "
                                              "folder; refusing the archive")
                if stat.S_ISLNK(m.external_attr >> 16):
                    raise InputError(archive, f"archive entry {m.filename!r} is a symbolic link; refusing the archive")
            total = 0
            dest.mkdir(parents=True, exist_ok=True)
            for m in members:
                target = dest / Path(*PurePosixPath(m.filename.replace("\\", "/")).parts)
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        total += len(chunk)
                        if total > max_bytes:
                            raise InputError(archive, f"archive unpacks to more than {max_bytes / 2**30:.0f} GiB; "
                                                      "refusing it")
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise InputError(archive, f"not a readable zip archive ({err})") from None


def _bundle_root(folder: Path) -> Path:
    """The folder holding the manifest: ``folder`` or its only subfolder (a zipped folder)."""
    if (folder / MANIFEST).is_file():
        return folder
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST).is_file():
        return entries[0]
    return folder


def _load_or_infer(root: Path, default_name: str, display: str | None) -> ModelManifest:
    if (root / MANIFEST).is_file():
        manifest = read_manifest(root / MANIFEST)
        return manifest if display is None else replace(manifest, display=display)
    return infer_manifest(root, name=default_name, display=display)
