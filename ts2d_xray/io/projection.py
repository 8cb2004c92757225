"""Read TS2D coronal projections: 2 channels ``("mean", "max")`` in HU, as :class:`~ts2d_xray.image.Image2D`.

TS2D publishes its projections as 4D NRRDs (``2 x W x 1 x H``, the singleton axis being
the projected antero-posterior one) in LPS, stored in the ``"ts2d"`` display
convention; :func:`read_projection` flips them into the ``"radiograph"`` convention by
default.  Arrays are ``(C, H, W)`` float32.

Example:
    >>> from ts2d_xray.io.projection import read_projection
    >>> image = read_projection("sample_s0332.nrrd")  # doctest: +SKIP
    >>> image.channels, image.plane.display  # doctest: +SKIP
    (('mean', 'max'), 'radiograph')
"""

from __future__ import annotations

from os import PathLike

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import Display, Image2D
from ts2d_xray.io.image_file import image_file_format, in_display
from ts2d_xray.io.itk import read_itk_plane, sitk_header
from ts2d_xray.kinds import CHANNELS, ITK_FORMATS

__all__ = ["read_projection"]


def read_projection(path: str | PathLike, *, display: Display | None = "radiograph") -> Image2D:
    """Read a TS2D coronal projection: 2 channels ``("mean", "max")`` in HU.

    Geometry comes from the file: ``col_dir``/``row_dir`` are the LPS unit vectors of
    the index axes, ``spacing`` their lengths in mm, ``origin`` the LPS position of
    pixel (0, 0).  A 4D NRRD (2 x W x 1 x H, the singleton axis being the projected
    antero-posterior one) is LPS; a 2D file's axes are taken as LPS x and -z (toward the
    patient's left and feet, y = 0), with a warning.  TS2D stores projections in the
    ``"ts2d"`` convention; the default display flips them.

    Raises:
        InputError: Missing or unreadable file, not NRRD/NIfTI/MHA, a channel count
            other than 2, a 3D volume.
    """
    path, fmt = image_file_format(path)
    if fmt not in ITK_FORMATS.values():
        raise InputError(path, f"a TS2D projection is a NRRD, NIfTI or MHA file, this is {fmt}")
    reader = sitk_header(path, plane=True)
    if reader.GetNumberOfComponents() != 2:
        raise InputError(path, f"a TS2D projection has 2 channels [mean, max]; found "
                               f"{reader.GetNumberOfComponents()} in an image of size {reader.GetSize()}")
    array, plane, meta = read_itk_plane(path, reader)
    meta = {"source": str(path), "format": fmt, **meta}
    image2d = Image2D(array.astype(np.float32), plane, CHANNELS["coronal"], meta)
    return in_display(path, image2d, display)
