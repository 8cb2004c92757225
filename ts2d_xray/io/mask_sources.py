"""Read 2D multi-label masks from whatever holds them: our outputs or a user's mask files.

:func:`read_mask_source` accepts, as one set of masks on one plane:

* a ``.seg.nrrd`` file (:func:`~ts2d_xray.io.read_masks`);
* a ``.nii`` / ``.nii.gz`` file with the JSON sidecar :func:`~ts2d_xray.io.write_masks`
  writes (``structures``, ``shape_hw``, ``spacing_mm``, ``col_dir_lps``, ...);
* a folder of one PNG or NIfTI file per structure with ``structures.json``, as
  :func:`~ts2d_xray.io.masks.write_mask_folder` writes it;
* a result folder written by :meth:`ts2d_xray.Result.save` (:data:`RESULT_MASK_NAMES`:
  ``masks.seg.nrrd``, else ``segmentations/``, else ``masks.nii.gz`` of older results,
  else ``masks/``);
* a user's masks: a folder of one mask file per structure, or a single such file
  (``.png``, ``.jpg``, ``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``), each named after the
  file (``lung_field_left.png`` -> ``lung_field_left``).  A pixel is inside where the
  file's value is non-zero (PNG/JPEG: where the grey level is above 0).

Geometry (:attr:`MaskSource.geometry`): our outputs and single-slice 3D NRRD/NIfTI/MHA
files carry a full plane (spacing and LPS orientation, ``"plane"``).  A 2D NRRD/MHA/NIfTI
file carries a pixel spacing but no patient frame (``"spacing"``), and PNG/JPEG files
carry neither (``"none"``); their planes are placeholders (radiograph orientation; 1 mm
pixels for ``"none"``) that callers must replace with the plane of the image the masks
were drawn on.  Arrays are ``(K, H, W)`` in the files' stored order (no flips).
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Mapping

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import Grid, Masks, Plane, letter_vector
from ts2d_xray.io.files import brief, read_json, sidecar_path
from ts2d_xray.io.image_file import check_png
from ts2d_xray.io.itk import read_itk_plane, sitk_header
from ts2d_xray.io.itk_data import check_stored
from ts2d_xray.io.masks import read_masks
from ts2d_xray.io.slice3d import grid_plane
from ts2d_xray.kinds import PIL_FORMATS, format_stem, format_suffix

__all__ = ["MASK_FILE_SUFFIXES", "RESULT_MASK_NAMES", "MaskSource", "is_multilabel_file", "read_mask_source"]

#: Files in a result folder that hold its masks, in the order they are looked for.
RESULT_MASK_NAMES: tuple[str, ...] = ("masks.seg.nrrd", "segmentations", "masks.nii.gz", "masks")
#: Suffixes of one-structure mask files in a user's folder.
MASK_FILE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".nrrd", ".nii", ".nii.gz", ".mha")
#: Placeholder pixel size (mm) of masks read from files without geometry.
_PLACEHOLDER_SPACING = (1.0, 1.0)


@dataclass(frozen=True, eq=False)
class MaskSource:
    """Masks read from a file or folder.

    Attributes:
        masks: ``(K, H, W)`` bool masks, in the stored order of the files.
        path: What was read.
        geometry: ``"plane"``: spacing and orientation from the files; ``"spacing"``:
            spacing only (2D NRRD/NIfTI/MHA: no patient frame); ``"none"``: PNG/JPEG
            only, no spacing either.  Only ``"plane"`` planes are real.
        files: Structure name -> the file it came from, for one-file-per-structure
            sources (so that a mapping may name ``lung_field_left.png``).
    """

    masks: Masks
    path: Path
    geometry: str = "plane"
    files: Mapping[str, str] = field(default_factory=dict)


def is_multilabel_file(path: Path) -> bool:
    """True for a file holding several structures: a ``.seg.nrrd``, or a NIfTI with our JSON sidecar."""
    kind = format_suffix(path)
    return path.is_file() and (kind == ".seg.nrrd" or kind in (".nii", ".nii.gz") and sidecar_path(path).is_file())


def result_masks(folder: Path) -> Path | None:
    """The masks of a result folder (:data:`RESULT_MASK_NAMES`), or None when it holds none."""
    for name in RESULT_MASK_NAMES:
        if (folder / name).exists():
            return folder / name
    return None


def read_mask_source(path: str | PathLike) -> MaskSource:
    """Read 2D masks from any of the sources listed in the module docstring.

    Raises:
        InputError: A missing path, an unreadable or 3D file, files of different sizes
            in one folder, a folder holding no masks.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        inner = result_masks(path)
        if inner is not None:
            return read_mask_source(inner)
        if (path / "structures.json").is_file():
            return _read_listed_folder(path)
        return _read_per_structure(path, sorted(p for p in path.iterdir() if _is_mask_file(p)))
    kind = format_suffix(path)
    if kind == ".seg.nrrd":
        check_stored(path)  # slicerio would read a damaged stream without noticing, or fail with a zlib.error
        return MaskSource(read_masks(path), path)
    if is_multilabel_file(path):
        return _read_nifti_masks(path)
    if kind not in MASK_FILE_SUFFIXES:
        raise InputError(path, f"not a mask file: expected .seg.nrrd or one of {', '.join(MASK_FILE_SUFFIXES)}")
    return _read_per_structure(path, [path])


def _is_mask_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and format_suffix(p) in (*MASK_FILE_SUFFIXES, ".seg.nrrd")


def _read_nifti_masks(path: Path) -> MaskSource:
    """Our NIfTI masks: uint8 ``(x = W, y = H, z = 1, t = K)`` plus the JSON sidecar with the geometry."""
    import nibabel as nib

    side = sidecar_path(path)
    meta = read_json(side, what="mask sidecar")
    try:
        names = tuple(s["name"] for s in meta["structures"])
        plane = Plane(tuple(meta["shape_hw"]), tuple(meta["spacing_mm"]), tuple(meta["col_dir_lps"]),
                      tuple(meta["row_dir_lps"]),
                      None if meta.get("origin_lps_mm") is None else tuple(meta["origin_lps_mm"]))
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(side, f"not a mask sidecar written by ts2d-xray ({brief(err)})") from None
    check_stored(path)  # nibabel stops where the data ends, before the checksum
    try:
        data = np.asarray(nib.load(path).dataobj)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError,
            nib.spatialimages.HeaderDataError) as err:
        raise InputError(path, f"not a readable NIfTI file ({brief(err)})") from None
    if data.ndim == 3:
        data = data[..., None]
    h, w = plane.shape
    if data.shape != (w, h, 1, len(names)):
        raise InputError(path, f"data of shape {data.shape} do not match the sidecar: expected (x = W, y = H, z = 1, "
                               f"t = K) = {(w, h, 1, len(names))}")
    return MaskSource(Masks(data[:, :, 0, :].transpose(2, 1, 0) != 0, names, plane), path)


def _read_listed_folder(folder: Path) -> MaskSource:
    """A folder of :func:`~ts2d_xray.io.masks.write_mask_folder` (PNG or NIfTI): geometry from ``structures.json``.

    The plane is the JSON's (its LPS directions and origin where given; older PNG folders
    give orientation letters and no origin); NIfTI files must lie on it.
    """
    meta_path = folder / "structures.json"
    meta = read_json(meta_path, what="structures.json")
    try:
        files = {s["name"]: s.get("file", f"{s['name']}.png") for s in meta["structures"]}
        plane = _listed_plane(meta)
        stored = None if meta.get("file_grid") is None else _file_grid_plane(meta["file_grid"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(meta_path, f"not a structures.json written by ts2d-xray ({brief(err)})") from None
    arrays = []
    for name, file in files.items():
        path = folder / file
        if format_suffix(path) in PIL_FORMATS:
            mask = _read_pil(path)
        else:
            mask, file_plane, _ = _read_itk(path)
            expected = plane if stored is None else stored  # files on the input file's grid: that grid
            if not _same_grid(file_plane, expected):
                raise InputError(path, f"its grid ({_describe(file_plane)}) differs from structures.json's "
                                       f"({_describe(expected)})")
        if mask.shape != plane.shape:
            raise InputError(path, f"{mask.shape[1]}x{mask.shape[0]} px, but structures.json says "
                                   f"{plane.shape[1]}x{plane.shape[0]}")
        arrays.append(mask)
    array = np.stack(arrays) if arrays else np.zeros((0, *plane.shape), bool)
    return MaskSource(Masks(array, tuple(files), plane), folder, files=files)


def _file_grid_plane(grid: Mapping) -> Plane:
    """The plane of a ``structures.json``'s ``file_grid`` (the input file's grid the NIfTI files take)."""
    size = tuple(int(v) for v in grid["size"])
    return grid_plane(Grid(size[::-1], tuple(grid["spacing"]), tuple(grid["origin"]), tuple(grid["direction"])))


def _listed_plane(meta: Mapping) -> Plane:
    """The plane of a ``structures.json``: LPS directions and origin, else orientation letters."""
    shape = tuple(int(v) for v in meta["shape_hw"])
    spacing = tuple(float(v) for v in meta["spacing_mm"])
    if "col_dir_lps" in meta:
        origin = meta.get("origin_lps_mm")
        return Plane(shape, spacing, tuple(meta["col_dir_lps"]), tuple(meta["row_dir_lps"]),
                     None if origin is None else tuple(origin))
    col, row = (letter_vector(c) for c in meta["orientation"])
    return Plane(shape, spacing, col, row)


def _read_per_structure(source: Path, files: list[Path]) -> MaskSource:
    """One structure per file; the geometry comes from the first file that has one."""
    if not files:
        raise InputError(source, "holds no masks: expected a result folder (masks.seg.nrrd, segmentations/, "
                                 "masks.nii.gz or masks/), a folder with structures.json, or mask files "
                                 f"({', '.join(MASK_FILE_SUFFIXES)})")
    names: dict[str, str] = {}
    arrays: list[np.ndarray] = []
    plane: Plane | None = None
    plane_file: Path | None = None
    geometry = "none"
    for p in files:
        if format_suffix(p) == ".seg.nrrd" or is_multilabel_file(p):
            raise InputError(p, "holds several structures; a folder of masks has one structure per file "
                                "(give this file on its own)")
        name = format_stem(p)
        if name in names:
            raise InputError(p, f"two files name the structure {name!r}: {names[name]} and {p.name}")
        if format_suffix(p) in PIL_FORMATS:
            mask = _read_pil(p)
        else:
            mask, file_plane, oriented = _read_itk(p)
            if plane is None:
                plane, plane_file, geometry = file_plane, p, "plane" if oriented else "spacing"
            elif not _same_grid(file_plane, plane):
                raise InputError(p, f"its grid ({_describe(file_plane)}) differs from {plane_file.name}'s "
                                    f"({_describe(plane)})")
        if arrays and mask.shape != arrays[0].shape:
            raise InputError(p, f"{mask.shape[1]}x{mask.shape[0]} px, but {files[0].name} is "
                                f"{arrays[0].shape[1]}x{arrays[0].shape[0]} px")
        names[name] = p.name
        arrays.append(mask)
    if plane is None:
        plane = Plane(arrays[0].shape, _PLACEHOLDER_SPACING)
    return MaskSource(Masks(np.stack(arrays), tuple(names), plane), source, geometry, names)


def _read_pil(path: Path) -> np.ndarray:
    """``(H, W)`` bool: grey level above 0 (luma of colour images; alpha ignored)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError(path, "no such mask file")
    check_png(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im if im.mode in ("1", "L", "I", "I;16", "F") else im.convert("L")) > 0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(path, f"not a readable PNG/JPEG mask ({brief(err)})") from None


def _read_itk(path: Path) -> tuple[np.ndarray, Plane, bool]:
    """A 2D or single-slice 3D mask file: ``(H, W)`` bool (non-zero), its plane, and whether it is oriented.

    A 2D file has no patient frame: its plane's directions are placeholders (False).
    """
    try:
        reader = sitk_header(path, plane=True)
    except InputError as err:
        if "3D volume" in err.problem:
            raise InputError(path, f"{err.problem}; a 3D segmentation is compared after projection "
                                   "(evaluate's --vs-3d)") from None
        raise
    if reader.GetNumberOfComponents() != 1:
        raise InputError(path, f"a mask has one value per pixel, found {reader.GetNumberOfComponents()} components")
    oriented = reader.GetDimension() == 3
    with warnings.catch_warnings():
        # A 2D file's axes are not taken as LPS here (geometry "spacing"): callers take
        # the orientation of the image the mask was drawn on, so the reader's warning
        # about assumed axes does not apply.
        warnings.simplefilter("ignore", UserWarning)
        array, plane, _ = read_itk_plane(path, reader)
    return array[0] != 0, plane, oriented


def _same_grid(a: Plane, b: Plane) -> bool:
    return (a.shape == b.shape and np.allclose(a.spacing, b.spacing, rtol=1e-4)
            and np.allclose(a.col_dir, b.col_dir, atol=1e-4) and np.allclose(a.row_dir, b.row_dir, atol=1e-4))


def _describe(plane: Plane) -> str:
    return (f"{plane.shape[1]}x{plane.shape[0]} px at {plane.spacing[1]:g}x{plane.spacing[0]:g} mm, "
            f"orientation {''.join(plane.orientation)}")
