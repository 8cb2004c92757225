"""How 2D masks and images are stored where 3D tools place them: as single-slice 3D volumes in LPS.

Every 2D item is stored as a single-slice 3D volume in LPS space (mm), so that 3D Slicer,
ITK and nibabel put it where it lies in the patient: index axis ``i`` = columns
(``plane.col_dir``, ``plane.spacing[1]`` mm), ``j`` = rows (``plane.row_dir``,
``plane.spacing[0]`` mm), ``k`` = a singleton axis along the plane normal
``col_dir x row_dir`` (:data:`NORMAL_SPACING_MM`).  The origin is ``plane.origin`` (LPS
of the centre of pixel (0, 0)), or (0, 0, 0) when unknown (radiographs); NRRD files then
carry :data:`ORIGIN_UNKNOWN_FIELD` so that readers give back ``None``.

The mask writers (:mod:`ts2d_xray.io.masks`) and the image writer
(:mod:`ts2d_xray.io.image2d`) share this layout: :func:`ijk_to_lps`, the NIfTI
writer :func:`write_nifti` with its JSON sidecar, and :func:`write_nifti_data` for the
files of a folder that has one sidecar for all.

Files meant for nnU-Net (data sets, ``export-regions``) give the singleton axis
:data:`NNUNET_NORMAL_SPACING_MM` (999 mm) instead, nnU-Net's convention for 2D data: its
planner then keeps that axis out of the plane (``original_median_spacing_after_transp``
``[999, row, column]``) and plans a 2D patch over rows and columns.

Masks of a 2D input file are written on that file's own 3D grid instead, the one ITK
and 3D Slicer give it (:func:`ts2d_xray.io.itk.file_grid`), so that they overlay it:
:func:`grid_to_lps`, :func:`grid_voxels` and :func:`grid_plane` serve that layout, and
:data:`PLANE_FIELD` keeps the anatomical plane (mm at the patient) for our readers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ts2d_xray.image import Grid, Plane
from ts2d_xray.io.files import atomic_paths, sidecar_path

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["NNUNET_NORMAL_SPACING_MM", "NORMAL_SPACING_MM", "ORIGIN_UNKNOWN_FIELD", "PLANE_FIELD", "grid_plane",
           "grid_to_lps", "grid_voxels", "ijk_to_lps", "nifti_image", "plane_json", "plane_from_json", "write_nifti",
           "write_nifti_data"]

#: Thickness in mm given to the singleton slice axis (a 2D image has none; Slicer needs > 0).
NORMAL_SPACING_MM = 1.0
#: Spacing in mm of the singleton axis in nnU-Net's files: nnU-Net's documented 2D convention
#: (a spacing far above the in-plane ones), as TS2D's published plans show.
NNUNET_NORMAL_SPACING_MM = 999.0
#: Custom NRRD field set to "1" when the plane's origin is unknown and (0, 0, 0) was written.
ORIGIN_UNKNOWN_FIELD = "TS2D_OriginUnknown"
#: Custom NRRD field holding the anatomical plane (JSON, :func:`plane_json`) of masks written
#: on an input file's grid, whose header geometry is then the file's, not the patient's.
PLANE_FIELD = "TS2D_Plane"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def grid_to_lps(grid: Grid) -> np.ndarray:
    """4x4 matrix from a grid's index ``(i, j, k)`` to LPS mm (direction x spacing, origin)."""
    m = np.eye(4)
    m[:3, :3] = grid.matrix * np.asarray(grid.spacing, float) + 0.0  # + 0.0: no "-0" in headers
    m[:3, 3] = grid.origin
    return m


def grid_voxels(array: np.ndarray, grid: Grid) -> np.ndarray:
    """``(..., H, W)`` masks on a single-slice grid's pixels as ``(..., i, j, k)`` voxels (a view).

    The grid's two axes above size 1 are the columns (the lower) and the rows.
    """
    return np.moveaxis(array.reshape(*array.shape[:-2], *grid.shape), (-3, -2, -1), (-1, -2, -3))


def grid_plane(grid: Grid) -> Plane:
    """The plane of a single-slice grid: columns along its lower axis above size 1, rows the higher."""
    size = grid.shape[::-1]  # (i, j, k)
    col, row = [n for n in range(3) if size[n] != 1] or [0, 1]
    m = grid.matrix
    return Plane((size[row], size[col]), (grid.spacing[row], grid.spacing[col]),
                 tuple(float(v) for v in m[:, col]), tuple(float(v) for v in m[:, row]), tuple(grid.origin))


def plane_json(plane: Plane) -> dict[str, Any]:
    """A plane as JSON: ``shape_hw``, ``spacing_mm`` (row, column), orientation, LPS directions, origin or None."""
    return {"shape_hw": list(plane.shape), "spacing_mm": list(plane.spacing),
            "spacing_order": "(row, column), as DICOM PixelSpacing", "orientation": list(plane.orientation),
            "col_dir_lps": list(plane.col_dir), "row_dir_lps": list(plane.row_dir),
            "origin_lps_mm": None if plane.origin is None else list(plane.origin)}


def plane_from_json(meta: Mapping[str, Any]) -> Plane:
    """The plane :func:`plane_json` wrote (KeyError, TypeError or ValueError when it is not one)."""
    origin = meta.get("origin_lps_mm")
    return Plane(tuple(int(v) for v in meta["shape_hw"]), tuple(float(v) for v in meta["spacing_mm"]),
                 tuple(float(v) for v in meta["col_dir_lps"]), tuple(float(v) for v in meta["row_dir_lps"]),
                 None if origin is None else tuple(float(v) for v in origin))


def ijk_to_lps(plane: Plane, normal_mm: float = NORMAL_SPACING_MM) -> np.ndarray:
    """4x4 matrix from index (i = column, j = row, k = normal) to LPS mm; ``normal_mm``: the k spacing."""
    col, row = np.asarray(plane.col_dir, float), np.asarray(plane.row_dir, float)
    normal = np.cross(col, row)
    m = np.eye(4)
    m[:3, 0] = col * plane.spacing[1]
    m[:3, 1] = row * plane.spacing[0]
    m[:3, 2] = normal / np.linalg.norm(normal) * normal_mm + 0.0  # + 0.0: no "-0" in headers
    m[:3, 3] = (0.0, 0.0, 0.0) if plane.origin is None else plane.origin
    return m


def nifti_image(data: np.ndarray, plane: Plane | Grid, normal_mm: float = NORMAL_SPACING_MM) -> nib.Nifti1Image:
    """A nibabel NIfTI image of ``(x=columns, y=rows, z=1, ...)`` data on ``plane`` (qform = sform, mm).

    ``plane`` may be a single-slice :class:`Grid`, the data then ``(i, j, k)`` voxels of it.
    """
    import nibabel as nib

    lps = grid_to_lps(plane) if isinstance(plane, Grid) else ijk_to_lps(plane, normal_mm)
    affine = _LPS_TO_RAS @ lps  # NIfTI stores RAS
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    return image


def write_nifti(data: np.ndarray, plane: Plane, path: Path, meta: Mapping[str, Any], *,
                normal_mm: float = NORMAL_SPACING_MM) -> None:
    """Save ``(x=columns, y=rows, z=1[, t])`` data as NIfTI, plus ``meta`` and the geometry as a JSON sidecar.

    ``normal_mm`` is the spacing of the singleton z axis: :data:`NORMAL_SPACING_MM` for
    files users open, :data:`NNUNET_NORMAL_SPACING_MM` for nnU-Net's.  Both files move
    into place together (:func:`~ts2d_xray.io.files.atomic_paths`), the sidecar last.
    """
    meta = {**meta, **plane_json(plane)}
    with atomic_paths(path, sidecar_path(path)) as (temp, temp_json):
        write_nifti_data(data, plane, temp, normal_mm=normal_mm)
        temp_json.write_text(json.dumps(meta, indent=2))


def write_nifti_data(data: np.ndarray, plane: Plane | Grid, path: Path, *,
                     normal_mm: float = NORMAL_SPACING_MM) -> None:
    """Save ``(x=columns, y=rows, z=1[, t])`` data on ``plane`` as a NIfTI file at ``path``, no sidecar.

    ``plane`` may be a single-slice :class:`Grid`, the data then ``(i, j, k)`` voxels of it.

    Not atomic by itself: callers write into a temporary path or folder
    (:func:`write_nifti`, :func:`~ts2d_xray.io.files.new_folder`).  nibabel writes the
    file; without it, SimpleITK.
    """
    try:
        import nibabel as nib
    except ImportError:
        _write_nifti_sitk(data, plane, path, normal_mm)
        return
    nib.save(nifti_image(data, plane, normal_mm), str(path))


def _write_nifti_sitk(data: np.ndarray, plane: Plane | Grid, path: Path, normal_mm: float) -> None:
    """:func:`write_nifti`'s data file without nibabel: 3D ``(x, y, z)`` or 4D ``(x, y, z, t)`` data."""
    import SimpleITK as sitk

    m = grid_to_lps(plane) if isinstance(plane, Grid) else ijk_to_lps(plane, normal_mm)
    image = sitk.GetImageFromArray(data.transpose(*range(data.ndim)[::-1]), isVector=False)  # (t,) z, y, x
    extra = data.ndim - 3
    image.SetSpacing(tuple(float(v) for v in np.linalg.norm(m[:3, :3], axis=0)) + (1.0,) * extra)
    image.SetOrigin((*m[:3, 3],) + (0.0,) * extra)
    direction = np.eye(data.ndim)
    direction[:3, :3] = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)
    image.SetDirection(direction.ravel())
    sitk.WriteImage(image, str(path), useCompression=True)
