"""2D images of either kind: read a projection or a radiograph, and write one in a 3D tool's layout.

:func:`read_image2d` tells a TS2D projection (a 2-channel NRRD/NIfTI/MHA) from a
radiograph by the header alone.  :func:`write_image2d` writes any
:class:`~ts2d_xray.image.Image2D` (``(C, H, W)``); its NIfTI follows the single-slice
layout of :mod:`ts2d_xray.io.slice3d`, its NRRD TS2D's own axis order.  Writers never
modify their inputs, create missing parent folders and write atomically
(:func:`~ts2d_xray.io.files.atomic_paths`).
"""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ts2d_xray.image import Image2D
from ts2d_xray.io.files import atomic_paths
from ts2d_xray.io.image_file import image_file_format
from ts2d_xray.io.itk import sitk_header
from ts2d_xray.io.preview import write_preview
from ts2d_xray.io.projection import read_projection
from ts2d_xray.io.radiograph import read_radiograph
from ts2d_xray.io.slice3d import ORIGIN_UNKNOWN_FIELD, ijk_to_lps, write_nifti
from ts2d_xray.kinds import IMAGE_WRITE_SUFFIXES, ITK_FORMATS, format_suffix

__all__ = ["image_format", "read_image2d", "write_image2d"]

logger = logging.getLogger(__name__)


def read_image2d(path: str | PathLike, **kw: Any) -> Image2D:
    """Read a projection (a 2-channel NRRD/NIfTI/MHA) or else a radiograph.

    Only the header is read to decide.  Keyword arguments go to
    :func:`~ts2d_xray.io.read_projection` or :func:`~ts2d_xray.io.read_radiograph` (which
    one accepts ``invert`` and ``spacing``).
    """
    path, fmt = image_file_format(path)
    if fmt in ITK_FORMATS.values():
        if sitk_header(path, plane=True).GetNumberOfComponents() == 2:
            return read_projection(path, **kw)
    return read_radiograph(path, **kw)


def image_format(path: str | PathLike) -> str:
    """The image format :func:`write_image2d` picks for ``path``; ValueError for an unsupported suffix."""
    path = Path(path)
    kind = format_suffix(path)
    if kind not in IMAGE_WRITE_SUFFIXES:
        raise ValueError(f"{path}: cannot write an image as {kind!r}; supported: {', '.join(IMAGE_WRITE_SUFFIXES)}")
    return kind


def write_image2d(image: Image2D, path: str | PathLike) -> Path:
    """Write a 2D image; the format follows the suffix of ``path``.

    * ``.nrrd``: TS2D's layout, float32, gzip: a 4D NRRD of sizes ``(C, W, 1, H)`` with
      kinds ``vector domain domain domain`` in LPS space: axis 1 = columns
      (``col_dir``), axis 2 = the singleton plane normal (1 mm), axis 3 = rows
      (``row_dir``), as TS2D stores a projection of an (x, y, z) volume along y.
      The channel names are in a custom field, e.g. ``channels:=mean max``.
    * ``.nii`` / ``.nii.gz``: float32 ``(x=W, y=H, z=1, t=C)`` with the geometry in the
      affine, plus a sidecar ``<name>.json`` with the channel names.
    * ``.png``: an 8-bit preview, as :func:`~ts2d_xray.io.write_preview` without masks.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    kind = image_format(path)
    if kind == ".png":
        return write_preview(image, path)
    if kind == ".nrrd":
        _write_image_nrrd(image, path)
    else:
        data = image.array.astype(np.float32).transpose(2, 1, 0)[:, :, None, :]  # (W, H, 1, C)
        layout = "x = columns, y = rows, z = 1 (plane normal), t = channel"
        write_nifti(data, image.plane, path, {"layout": layout, "channels": list(image.channels)})
    logger.info("wrote %s image to %s", "x".join(map(str, image.array.shape)), path)
    return path


def _write_image_nrrd(image: Image2D, path: Path) -> None:
    import nrrd

    if any(not c or any(ch.isspace() for ch in c) for c in image.channels):
        raise ValueError(f"channel names must be non-empty and without spaces for NRRD, got {image.channels!r}")
    m = ijk_to_lps(image.plane)
    header = {
        "type": "float",
        "dimension": 4,
        "space": "left-posterior-superior",
        "kinds": ["vector", "domain", "domain", "domain"],
        # One row per axis: none for the channels, then columns, normal, rows (TS2D's order).
        "space directions": np.vstack([np.full(3, np.nan), m[:3, 0], m[:3, 2], m[:3, 1]]),
        "space origin": m[:3, 3],
        "encoding": "gzip",
        "channels": list(image.channels),
    }
    if image.plane.origin is None:
        header[ORIGIN_UNKNOWN_FIELD] = "1"
    data = image.array.astype(np.float32).transpose(0, 2, 1)[:, :, None, :]  # (C, W, 1, H)
    with atomic_paths(path) as (temp,):
        nrrd.write(str(temp), data, header, custom_field_map={"channels": "string list"}, index_order="F")
