"""How 2D masks and images are stored where 3D tools place them: as single-slice 3D volumes in LPS.

Every 2D item is stored as a single-slice 3D volume in LPS space (mm), so that 3D Slicer,
ITK and nibabel put it where it lies in the patient: index axis ``i`` = columns
(``plane.col_dir``, ``plane.spacing[1]`` mm), ``j`` = rows (``plane.row_dir``,
``plane.spacing[0]`` mm), ``k`` = a singleton axis along the plane normal
``col_dir x row_dir`` (:data:`NORMAL_SPACING_MM`).  The origin is ``plane.origin`` (LPS
of the centre of pixel (0, 0)), or (0, 0, 0) when unknown (radiographs); NRRD files then
carry :data:`ORIGIN_UNKNOWN_FIELD` so that readers give back ``None``.

The mask writers (:mod:`ts2d_xray.io.masks`) and the image writer
(:mod:`ts2d_xray.io.image2d`) share this layout: :func:`ijk_to_lps` and the NIfTI
writer :func:`write_nifti` with its JSON sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ts2d_xray.image import Plane
from ts2d_xray.io.files import atomic_paths, sidecar_path

__all__ = ["NORMAL_SPACING_MM", "ORIGIN_UNKNOWN_FIELD", "ijk_to_lps", "write_nifti"]

#: Thickness in mm given to the singleton slice axis (a 2D image has none; Slicer needs > 0).
NORMAL_SPACING_MM = 1.0
#: Custom NRRD field set to "1" when the plane's origin is unknown and (0, 0, 0) was written.
ORIGIN_UNKNOWN_FIELD = "TS2D_OriginUnknown"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ijk_to_lps(plane: Plane) -> np.ndarray:
    """4x4 matrix from index (i = column, j = row, k = normal) to LPS mm."""
    col, row = np.asarray(plane.col_dir, float), np.asarray(plane.row_dir, float)
    normal = np.cross(col, row)
    m = np.eye(4)
    m[:3, 0] = col * plane.spacing[1]
    m[:3, 1] = row * plane.spacing[0]
    m[:3, 2] = normal / np.linalg.norm(normal) * NORMAL_SPACING_MM + 0.0  # + 0.0: no "-0" in headers
    m[:3, 3] = (0.0, 0.0, 0.0) if plane.origin is None else plane.origin
    return m


def write_nifti(data: np.ndarray, plane: Plane, path: Path, meta: Mapping[str, Any]) -> None:
    """Save ``(x=columns, y=rows, z=1, t)`` data as NIfTI, plus ``meta`` and the geometry as a JSON sidecar.

    Both files move into place together (:func:`~ts2d_xray.io.files.atomic_paths`), the
    sidecar last.  nibabel writes the NIfTI; without it, SimpleITK.
    """
    meta = {**meta, "shape_hw": list(plane.shape), "spacing_mm": list(plane.spacing),
            "spacing_order": "(row, column), as DICOM PixelSpacing", "orientation": list(plane.orientation),
            "col_dir_lps": list(plane.col_dir), "row_dir_lps": list(plane.row_dir),
            "origin_lps_mm": None if plane.origin is None else list(plane.origin)}
    m = ijk_to_lps(plane)
    try:
        import nibabel as nib
    except ImportError:
        nib = None
    with atomic_paths(path, sidecar_path(path)) as (temp, temp_json):
        if nib is not None:
            affine = _LPS_TO_RAS @ m  # NIfTI stores RAS
            image = nib.Nifti1Image(data, affine)
            image.set_qform(affine, code=1)
            image.set_sform(affine, code=1)
            image.header.set_xyzt_units("mm")
            nib.save(image, str(temp))
        else:
            import SimpleITK as sitk

            image = sitk.GetImageFromArray(data.transpose(3, 2, 1, 0), isVector=False)  # 4D (t, z, y, x)
            image.SetSpacing((plane.spacing[1], plane.spacing[0], NORMAL_SPACING_MM, 1.0))
            image.SetOrigin((*m[:3, 3], 0.0))
            direction = np.eye(4)
            direction[:3, :3] = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)
            image.SetDirection(direction.ravel())
            sitk.WriteImage(image, str(temp), useCompression=True)
        temp_json.write_text(json.dumps(meta, indent=2))
