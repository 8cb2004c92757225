"""SimpleITK files: the one header reader, the one pixel reader, and 2D files as a :class:`~ts2d_xray.image.Plane`.

:func:`sitk_header` reads only a file's header (size, components, dimension), so that
callers can decide what a file is, and refuse it, before any pixel is read: an empty
file, an image too large to decode, or one larger than its file can hold
(:mod:`ts2d_xray.io.itk_data`).  :func:`read_pixels` then reads the pixels and refuses
a damaged compressed stream or NaN/infinite values.  :func:`read_itk_plane` reads a 2D
image, or a 3D one with a singleton axis, as a ``(C, H, W)`` array on its plane (LPS, mm).

A 2D NRRD/MHA file has no patient frame.  Its two physical axes are taken as LPS x and
LPS -z (toward the patient's left and the feet): an identity direction then gives the
same radiograph convention as a PNG, and TS2D's 2D projections (sample_s0616: stored
head up, direction[1][1] > 0) come out head up, which reading the axis as +z would not.
The antero-posterior (y) position of such a plane is unknown and set to 0.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import Grid, Plane, require_finite
from ts2d_xray.io.files import brief
from ts2d_xray.io.itk_data import MAX_IMAGE_BYTES, check_decoded, check_declared, stored_data
from ts2d_xray.sitk_arrays import pixels

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["MAX_IMAGE_BYTES", "file_grid", "read_itk_plane", "read_pixels", "sitk_header"]

# Columns of the matrix mapping a 2D file's physical axes (x, y) to LPS (see the module docstring).
_2D_TO_LPS = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, -1.0]])
_2D_SOURCE = "assumed: 2D file without a patient frame, axes taken as LPS x (left) and -z (feet)"


def sitk_header(path: Path, *, plane: bool = False, max_bytes: int | None = MAX_IMAGE_BYTES) -> sitk.ImageFileReader:
    """A SimpleITK reader that has read (only) the header of an image.

    Args:
        path: The image file.
        plane: Accept only a 2D image or a 3D one with one singleton axis (what
            :func:`read_itk_plane` reads); by default any dimension.
        max_bytes: Largest image to accept, in bytes once decoded; None: no size
            checks here, the caller runs :func:`~ts2d_xray.io.itk_data.check_declared`
            itself (after its own limits).

    Raises:
        InputError: An empty (0-byte) or unreadable file, an empty image (a size of 0),
            an image above ``max_bytes`` or larger than the file can hold (truncated),
            or with ``plane`` a 3D volume or an image of another dimension.
    """
    import SimpleITK as sitk

    try:
        empty = path.stat().st_size == 0
    except OSError as exc:
        raise InputError(path, f"cannot read the file ({brief(exc)})") from None
    if empty:
        raise InputError(path, "file is empty (0 bytes): truncated, or not written completely")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(path, f"not a readable image ({brief(exc)})") from None
    size = reader.GetSize()
    if 0 in size:
        raise InputError(path, f"empty image (size {size})")
    if plane:
        if len(size) == 3 and 1 not in size:
            raise InputError(path, f"this is a 3D volume, not a 2D image (size {size} along i, j, k)")
        if len(size) not in (2, 3) or len(size) - size.count(1) != 2:
            raise InputError(path, f"{len(size)}D image of size {size}; expected a 2D image")
    if max_bytes is not None:
        check_declared(path, reader, max_bytes)
    return reader


def read_pixels(path: Path, reader: sitk.ImageFileReader) -> sitk.Image:
    """Read the pixels of an image whose header ``reader`` has read (:func:`sitk_header`).

    Raises:
        InputError: An unreadable file, a truncated or corrupted compressed stream
            (SimpleITK would fill the missing voxels with zeros), NaN or infinite values.
    """
    import SimpleITK as sitk

    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(path, f"not a readable image ({brief(exc)})") from None
    check_decoded(path, stored_data(path), image)
    require_finite(sitk.GetArrayViewFromImage(image), path)
    return image


def read_itk_plane(path: Path, reader: sitk.ImageFileReader) -> tuple[np.ndarray, Plane, dict[str, str]]:
    """Read the pixels of a 2D or one-slice 3D image whose header ``reader`` has read.

    Args:
        path: The file, for messages.
        reader: From :func:`sitk_header` with ``plane=True``.

    Returns:
        The ``(C, H, W)`` array as stored (columns = the lower index axis), its plane
        (LPS, mm; a 2D file's axes as in the module docstring, with a warning), and the
        meta ``spacing_source`` and ``orientation_source``.
    """

    image = read_pixels(path, reader)
    dim, size = image.GetDimension(), image.GetSize()
    array = pixels(image)  # (k, j, i[, c]) or (j, i[, c])
    array = array[None] if image.GetNumberOfComponentsPerPixel() == 1 else np.moveaxis(array, -1, 0)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    if dim == 2:
        axes, dirs, origin = (0, 1), _2D_TO_LPS @ direction, _2D_TO_LPS @ origin
        orientation_source = _2D_SOURCE
        warnings.warn(f"{path}: {_2D_SOURCE}", stacklevel=4)
    else:  # 3D with one singleton axis (checked by sitk_header)
        singleton = size.index(1)
        axes = tuple(n for n in range(3) if n != singleton)
        array = array.squeeze(axis=3 - singleton)  # array axes are (C, k, j, i)
        dirs, orientation_source = direction, "file header (LPS)"
    col, row = axes  # the lower index axis varies fastest: the columns
    spacing, dirs = image.GetSpacing(), dirs / np.linalg.norm(dirs, axis=0)
    plane = Plane((size[row], size[col]), (float(spacing[row]), float(spacing[col])),
                  tuple(map(float, dirs[:, col])), tuple(map(float, dirs[:, row])), tuple(map(float, origin)))
    return array, plane, {"spacing_source": "file header", "orientation_source": orientation_source}


def file_grid(path: str | Path, shape: tuple[int, int]) -> Grid | None:
    """The 3D grid on which ITK, and so 3D Slicer, places a 2D image file of ``shape`` ``(H, W)``.

    The file's size, spacing, origin and direction exactly as SimpleITK reads its header
    (for a DICOM radiograph: identity direction and origin 0 unless the file has an
    image plane, PixelSpacing else 1 mm; for a PNG: 1 mm and identity), a 2D file's
    embedded in 3D as Slicer loads it: a third index axis of size 1, spacing 1 mm, along
    LPS z.  The stored rows and columns of the file are the two axes of size above 1
    (rows the higher index axis), so ``(H, W)`` masks reshaped to ``Grid.shape`` lie on
    the file's pixel grid.  This is the file's geometry, not the anatomy: a radiograph's
    spacing at the patient and its orientation are the reader's :class:`Plane`.

    Returns:
        The grid, or None when ITK cannot read the header or its pixel grid is not
        ``shape`` (a JPEG that EXIF rotates, a multi-frame file).
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    size, dim = reader.GetSize(), reader.GetDimension()
    if dim not in (2, 3) or [s for s in size if s != 1] != [shape[1], shape[0]]:
        return None
    direction = np.eye(3)
    direction[:dim, :dim] = np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)
    pad = 3 - dim
    return Grid(shape=tuple(int(s) for s in (tuple(size) + (1,) * pad)[::-1]),
                spacing=tuple(float(s) for s in reader.GetSpacing()) + (1.0,) * pad,
                origin=tuple(float(o) for o in reader.GetOrigin()) + (0.0,) * pad,
                direction=tuple(float(d) for d in direction.ravel()))
