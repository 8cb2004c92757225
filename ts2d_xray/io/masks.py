"""Write 2D multi-label masks where 3D tools place them, and read 2D Slicer segmentations.

Masks are stored as single-slice 3D volumes in LPS space (mm), as described in
:mod:`ts2d_xray.io.slice3d`: 3D Slicer, ITK and nibabel put them where they lie in the
patient.  A plane without a position (radiographs) is written at (0, 0, 0) and marked,
so that :func:`read_masks` gives back ``origin=None``.  Masks of a 2D input file may be
written on that file's own grid instead (``grid=``, :func:`ts2d_xray.io.itk.file_grid`), so
that ITK and 3D Slicer overlay them on the file; the anatomical plane then travels in
:data:`~ts2d_xray.io.slice3d.PLANE_FIELD` (seg.nrrd) or ``structures.json``, and our
readers give it back.

Writers never modify their inputs, create missing parent folders and write atomically
(:func:`~ts2d_xray.io.files.atomic_paths`, :func:`~ts2d_xray.io.files.new_folder`), so
no half-written output ever exists.

Example:
    >>> import tempfile, numpy as np
    >>> from ts2d_xray.image import Masks, Plane
    >>> plane = Plane((4, 3), (1.0, 1.0), col_dir=(1, 0, 0), row_dir=(0, 0, -1))
    >>> masks = Masks(np.ones((1, 4, 3), bool), ("heart",), plane)
    >>> out = write_masks(masks, Path(tempfile.mkdtemp()) / "masks.seg.nrrd")
    >>> read_masks(out).names
    ('heart',)
"""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from os import PathLike
from pathlib import Path

import numpy as np

from ts2d_xray import labels
from ts2d_xray.errors import InputError
from ts2d_xray.image import Grid, Masks, Plane
from ts2d_xray.io.files import atomic_paths, new_folder
from ts2d_xray.io.slice3d import (ORIGIN_UNKNOWN_FIELD, PLANE_FIELD, grid_to_lps, grid_voxels, ijk_to_lps,
                                  plane_from_json, plane_json, write_nifti, write_nifti_data)
from ts2d_xray.io.terminology import slicer_terminology
from ts2d_xray.kinds import MASK_WRITE_SUFFIXES, format_suffix

__all__ = ["mask_format", "pack_layers", "read_masks", "read_segment_colors", "write_mask_folder", "write_masks"]

logger = logging.getLogger(__name__)

_MASK_FORMATS = (*MASK_WRITE_SUFFIXES, "a folder path without suffix")


def mask_format(path: str | PathLike) -> str:
    """The format :func:`write_masks` picks for ``path``: ``.seg.nrrd``, ``.nii``, ``.nii.gz`` or ``""`` (a folder).

    Raises ValueError for any other suffix, and FileExistsError for a folder that
    exists and is not empty, so callers can check outputs before any work.
    """
    path = Path(path)
    kind = format_suffix(path)
    if kind not in (*MASK_WRITE_SUFFIXES, ""):
        raise ValueError(f"{path}: cannot write masks as {kind!r}; supported: {', '.join(_MASK_FORMATS)}")
    if kind == "":
        _check_new_folder(path)
    return kind


def _check_new_folder(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path}: exists and is not an empty folder; choose a new folder for the mask files")


def write_masks(masks: Masks, path: str | PathLike, *, grid: Grid | None = None) -> Path:
    """Write multi-label 2D masks; the format follows the suffix of ``path``.

    ``grid``: the single-slice grid of the input file the masks lie on (``.seg.nrrd`` and
    folders; see the module docstring); default: the plane's own layout.

    * ``.seg.nrrd``: a 3D Slicer segmentation, one segment per structure in
      ``masks.names`` order: ID and name = the structure name, colour
      (:func:`~ts2d_xray.labels.display_color`, as the overlays), SNOMED CT terminology
      (:func:`~ts2d_xray.io.terminology.slicer_terminology`), label value, layer and
      extent.  Overlapping structures go to different layers, packed greedily
      (:func:`pack_layers`); empty masks are kept.  Written in one pass.
    * ``.nii`` / ``.nii.gz``: one file for all structures, uint8 0/1 data of shape
      ``(x=W columns, y=H rows, z=1, t=K structures)``, geometry in the affine, plus a
      sidecar ``<name>.json`` listing the structures in order.  3D Slicer and ITK-SNAP
      open it as a time series; :func:`write_mask_folder` writes one 3D file per
      structure instead.
    * no suffix: a new folder with ``<name>.png`` (8-bit, 0/255) per structure and
      ``structures.json`` (:func:`write_mask_folder`).  An existing non-empty folder
      raises FileExistsError.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    kind = mask_format(path)
    if kind == ".seg.nrrd":
        _write_seg_nrrd(masks, path, grid)
    elif kind in (".nii", ".nii.gz"):
        structures = [{"index": n, "name": name, "color": labels.display_color(name)}
                      for n, name in enumerate(masks.names)]
        layout = "x = columns, y = rows, z = 1 (plane normal), t = structure index; 1 = inside"
        data = masks.array.transpose(2, 1, 0)[:, :, None, :].astype(np.uint8)  # (W, H, 1, K)
        write_nifti(data, masks.plane, path, {"layout": layout, "structures": structures})
    else:
        return write_mask_folder(masks, path, grid=grid)
    logger.info("wrote %d masks to %s", len(masks.names), path)
    return path


def write_mask_folder(masks: Masks, folder: str | PathLike, suffix: str = ".png", *, grid: Grid | None = None) -> Path:
    """Write one file per structure, ``<name><suffix>``, and ``structures.json`` into a new folder.

    * ``.png``: 8-bit grey, 0 outside, 255 inside, the plane's pixel array row for row.
    * ``.nii.gz`` / ``.nii``: TotalSegmentator's layout, uint8 0/1 of shape ``(x = W
      columns, y = H rows, z = 1)``, a 3D image with the plane's geometry in the affine
      (:mod:`ts2d_xray.io.slice3d`), so that 3D Slicer, ITK-SNAP and ITK open each file as
      one mask where the image lies.

    ``structures.json`` lists the structures in order (``name``, ``file``, ``color``) with
    the plane: ``shape_hw``, ``spacing_mm`` (row, column), ``orientation``,
    ``col_dir_lps``, ``row_dir_lps`` and ``origin_lps_mm`` (None: unknown, the files say
    (0, 0, 0)).  With ``grid`` (the input file's grid, :func:`ts2d_xray.io.itk.file_grid`)
    the NIfTI files take that geometry and ``structures.json`` also gives it as
    ``file_grid`` (``size``, ``spacing``, ``origin``, ``direction``, ITK's order).  Every
    empty structure gets a copy of one encoded empty file.

    Raises:
        FileExistsError: ``folder`` exists and is not empty.
        ValueError: An unsupported suffix, or a structure name that is no file name.
    """
    folder = Path(folder)
    if suffix not in (".png", ".nii", ".nii.gz"):
        raise ValueError(f"{folder}: cannot write one mask file per structure as {suffix!r}; "
                         "supported: .png, .nii, .nii.gz")
    _check_new_folder(folder)
    for name in masks.names:
        if name in ("", ".", "..") or Path(name).name != name:
            raise ValueError(f"structure name {name!r} cannot be used as a file name in {folder}")
    plane = masks.plane
    meta = {"structures": [{"name": n, "file": n + suffix, "color": labels.display_color(n)} for n in masks.names],
            **plane_json(plane)}
    if grid is not None:
        meta["file_grid"] = {"size": list(grid.shape[::-1]), "spacing": list(grid.spacing),
                             "origin": list(grid.origin), "direction": list(grid.direction)}
    with new_folder(folder) as temp:
        empty: Path | None = None
        for name, mask in zip(masks.names, masks.array):
            target = temp / (name + suffix)
            blank = not mask.any()
            if blank and empty is not None:
                shutil.copyfile(empty, target)
                continue
            _write_mask_file(mask, plane if grid is None else grid, target, suffix)
            if blank:
                empty = target
        (temp / "structures.json").write_text(json.dumps(meta, indent=2))
    logger.info("wrote %d masks to %s", len(masks.names), folder)
    return folder


#: zlib level of mask PNGs: 1 writes a 1841 x 1955 mask about 1.6 times faster than
#: Pillow's default 6; masks compress well at either (0.5 vs 2 MB for 117 structures).
MASK_PNG_COMPRESSION = 1


def _write_mask_file(mask: np.ndarray, plane: Plane | Grid, path: Path, suffix: str) -> None:
    """One structure's ``(H, W)`` bool mask as an 8-bit PNG or a single-slice NIfTI (on ``plane``'s layout)."""
    if suffix == ".png":
        from PIL import Image

        Image.fromarray(mask.view(np.uint8) * np.uint8(255)).save(path, compress_level=MASK_PNG_COMPRESSION)
    else:
        voxels = grid_voxels(mask, plane) if isinstance(plane, Grid) else mask.T[:, :, None]
        write_nifti_data(voxels.astype(np.uint8), plane, path)


#: gzip level of seg.nrrd files: zlib's default; 9 (slicerio's default) takes twice as
#: long for files a tenth smaller, 1 writes files 2.5 times larger (117 label layers' worth
#: of masks of a 1841 x 1955 radiograph: 0.23, 0.26, 0.67 MB).
SEG_NRRD_COMPRESSION = 6


def _write_seg_nrrd(masks: Masks, path: Path, grid: Grid | None = None) -> None:
    """One pass: pack the masks into label layers, then one slicerio write of all segments."""
    import slicerio

    layers, placed = pack_layers(masks.array)
    if grid is None:
        voxels, ijk = layers.transpose(0, 2, 1)[..., None], ijk_to_lps(masks.plane)
    else:
        voxels, ijk = grid_voxels(layers, grid), grid_to_lps(grid)
    seg = {"voxels": voxels if len(layers) > 1 else voxels[0], "ijkToLPS": ijk,
           "containedRepresentationNames": ["Binary labelmap"], "segments": []}
    if grid is not None:
        seg[PLANE_FIELD] = json.dumps(plane_json(masks.plane))
    elif masks.plane.origin is None:
        seg[ORIGIN_UNKNOWN_FIELD] = "1"
    extent = [e for n in voxels.shape[-3:] for e in (0, n - 1)]
    for name, (layer, value) in zip(masks.names, placed):
        color = [float(f"{c / 255:.6g}") for c in labels.display_color(name)]  # 6 digits, as Slicer writes
        # Slicer gives every segment of a shared layer the layer's extent; per-segment
        # extents can crop the other segments of the layer in some Slicer versions.
        seg["segments"].append({"id": name, "name": name, "color": color, "nameAutoGenerated": False,
                                "colorAutoGenerated": False, "labelValue": value, "layer": layer,
                                "extent": extent, "terminology": slicer_terminology(name)})
    with atomic_paths(path) as (temp,):
        slicerio.write_segmentation(str(temp), seg, compression_level=SEG_NRRD_COMPRESSION)


def pack_layers(array: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Pack ``(K, H, W)`` bool masks into uint8 label layers as 3D Slicer stores segments.

    Each mask joins the first layer where it overlaps no mask already there and the
    layer has a label value left (1..255), else a new layer (Slicer's and slicerio's
    ``add_segment`` rule); overlaps are tested inside the mask's bounding box only.

    Returns:
        ``(L, H, W)`` uint8 layers and, per mask, ``(layer, label value)``.
    """
    k, h, w = array.shape
    rows, cols = array.any(axis=2), array.any(axis=1)
    layers: list[np.ndarray] = []
    used: list[int] = []  # label values given per layer
    placed: list[tuple[int, int]] = []
    for n in range(k):
        r, c = np.flatnonzero(rows[n]), np.flatnonzero(cols[n])
        box = (slice(r[0], r[-1] + 1), slice(c[0], c[-1] + 1)) if r.size else (slice(0, 0), slice(0, 0))
        crop = array[n][box]
        for index, layer in enumerate(layers):
            if used[index] < 255 and not layer[box][crop].any():
                break
        else:
            layers.append(np.zeros((h, w), np.uint8))
            used.append(0)
            index = len(layers) - 1
        used[index] += 1
        layers[index][box][crop] = used[index]
        placed.append((index, used[index]))
    return np.stack(layers) if layers else np.zeros((1, h, w), np.uint8), placed


def _read_segmentation(path: Path, skip_voxels: bool = False) -> tuple[dict, list[str]]:
    """slicerio's segmentation dict and the segment names (unique) of a ``.seg.nrrd``."""
    import slicerio

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such segmentation file")
    try:
        seg = slicerio.read_segmentation(str(path), skip_voxels=skip_voxels)
    except (OSError, ValueError, KeyError, zlib.error) as e:  # pynrrd: an unknown type is a KeyError
        raise InputError(path, f"not a readable 3D Slicer segmentation ({e})") from e
    names = [s.get("name") or s["id"] for s in seg["segments"]]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(path, f"segment names must be unique, repeated: {', '.join(repeated)}")
    return seg, names


def read_masks(path: str | PathLike) -> Masks:
    """Read a single-slice 3D Slicer segmentation (``.seg.nrrd``, ours or Slicer's).

    The index axis of size 1 is the plane normal; of the other two, the first is the
    columns and the second the rows (``(i, j)`` in our files, ``(i, k)`` in TS2D's
    layout).  Spacing, directions and origin (LPS mm) come from the header, or from
    :data:`~ts2d_xray.io.slice3d.PLANE_FIELD` when the masks were written on an input
    file's grid (the anatomical plane, mm at the patient).

    Returns:
        Masks: ``(K, H, W)`` bool in segment order, overlaps kept.

    Raises:
        InputError (a ValueError): not a segmentation, no axis of size 1 (a 3D
            segmentation), or repeated segment names.
    """
    import slicerio

    path = Path(path)
    seg, names = _read_segmentation(path)
    spatial = seg["voxels"].shape[-3:]
    singletons = [a for a in range(3) if spatial[a] == 1]
    if not singletons:
        size = " x ".join(map(str, spatial))
        raise InputError(path, f"a 3D segmentation of {size} voxels, not a single-slice (2D) one")
    normal = singletons[-1]
    col_axis, row_axis = (a for a in range(3) if a != normal)
    m = np.asarray(seg["ijkToLPS"], float)
    col_vec, row_vec = m[:3, col_axis], m[:3, row_axis]
    col_sp, row_sp = float(np.linalg.norm(col_vec)), float(np.linalg.norm(row_vec))
    if PLANE_FIELD in seg:  # written on an input file's grid: the anatomical plane (mm at the patient)
        plane = _plane_field(path, seg[PLANE_FIELD], (spatial[row_axis], spatial[col_axis]))
    else:
        plane = _header_plane(seg, spatial, col_axis, row_axis)
    array = np.zeros((len(names), *plane.shape), bool)
    for n, segment in enumerate(seg["segments"]):
        array[n] = np.squeeze(slicerio.segment_mask(seg, segment), axis=normal).T  # (cols, rows) -> (H, W)
    return Masks(array, tuple(names), plane)


def _plane_field(path: Path, text: str, shape: tuple[int, int]) -> Plane:
    """The anatomical plane a seg.nrrd's :data:`~ts2d_xray.io.slice3d.PLANE_FIELD` gives (InputError if unusable)."""
    try:
        plane = plane_from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"unreadable {PLANE_FIELD} field ({err})") from None
    if plane.shape != shape:
        raise InputError(path, f"{PLANE_FIELD} says {plane.shape[1]}x{plane.shape[0]} px, the voxels "
                               f"{shape[1]}x{shape[0]}")
    return plane


def _header_plane(seg: dict, spatial: tuple[int, ...], col_axis: int, row_axis: int) -> Plane:
    """The plane of a single-slice segmentation's header (origin None where :data:`ORIGIN_UNKNOWN_FIELD` says so)."""
    m = np.asarray(seg["ijkToLPS"], float)
    col_vec, row_vec = m[:3, col_axis], m[:3, row_axis]
    col_sp, row_sp = float(np.linalg.norm(col_vec)), float(np.linalg.norm(row_vec))
    return Plane(
        shape=(spatial[row_axis], spatial[col_axis]),
        spacing=(row_sp, col_sp),
        col_dir=tuple(float(v) for v in col_vec / col_sp),
        row_dir=tuple(float(v) for v in row_vec / row_sp),
        origin=None if str(seg.get(ORIGIN_UNKNOWN_FIELD)).strip() == "1" else tuple(float(v) for v in m[:3, 3]),
    )


def read_segment_colors(path: str | PathLike) -> dict[str, tuple[int, int, int]]:
    """Segment name -> display colour (R, G, B, 0-255) of a ``.seg.nrrd`` file, in segment order.

    Works for 3D segmentations too (voxels are not read).  A segment without a colour
    gets the colour :func:`write_masks` would give it.
    """
    seg, names = _read_segmentation(Path(path), skip_voxels=True)
    return {
        name: tuple(int(round(c * 255)) for c in s["color"]) if "color" in s else labels.display_color(name)
        for name, s in zip(names, seg["segments"])
    }
