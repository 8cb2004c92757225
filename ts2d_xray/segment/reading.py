"""What a :class:`~ts2d_xray.segment.segmenter.Segmenter` is given, read into the 2D image it segments.

:func:`input_kind` tells the kind of any input (a path from its header alone, with the
size limits; a :class:`~ts2d_xray.image.Volume`, an :class:`~ts2d_xray.image.Image2D`
or a numpy array from its shape), so that a model can be chosen or the input refused
before any pixel is read; :func:`read_input` then reads it into a :class:`Prepared`:
the image, and for a 2D file the grid ITK and 3D Slicer give that file
(:func:`ts2d_xray.io.itk.file_grid`), on which the mask files are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Sequence

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import DISPLAYS, Grid, Image2D, Plane, Volume, require_finite, spacing_pair
from ts2d_xray.kinds import CHANNELS, InputKind
from ts2d_xray.segment.inputs import InputInfo, inspect_input
from ts2d_xray.segment.manifest import ModelManifest

__all__ = ["Input", "Prepared", "input_kind", "read_input"]

#: What a Segmenter segments: a path (CT file or DICOM folder, projection, radiograph), a
#: CT, a 2D image, or a ``(H, W)`` / ``(C, H, W)`` numpy array.
Input = str | PathLike | Volume | Image2D | np.ndarray


@dataclass(frozen=True, eq=False)
class Prepared:
    """An input read for segmentation.

    Attributes:
        image: The 2D image (a CT's projection), on the input's own grid and orientation.
        kind: ``"ct"``, ``"projection"`` or ``"radiograph"``.
        source: The path, or None (array, or an object without one).
        file_grid: For a 2D file, the grid ITK gives it (None: the image's plane).
    """

    image: Image2D
    kind: InputKind
    source: str | None
    file_grid: Grid | None = None


def input_kind(x: Input, *, max_pixels: int, max_voxels: int) -> tuple[InputKind, InputInfo | None]:
    """The kind of an input, and for a path what its header says (size limits checked).

    Raises:
        InputError: A path :func:`~ts2d_xray.segment.inputs.inspect_input` refuses, or an
            Image2D with other than 1 or 2 channels.
        TypeError: Another type of input.
    """
    if isinstance(x, (str, PathLike)):
        info = inspect_input(x, max_pixels=max_pixels, max_voxels=max_voxels)
        return info.kind, info
    if isinstance(x, Volume):
        return "ct", None
    if isinstance(x, Image2D):
        kind = {2: "projection", 1: "radiograph"}.get(x.array.shape[0])
        if kind is None:
            raise InputError(x.meta.get("source"), f"an image with {x.array.shape[0]} channels; expected 1 or 2")
        return kind, None
    if isinstance(x, np.ndarray):
        return ("projection" if x.ndim == 3 and x.shape[0] == 2 else "radiograph"), None
    raise TypeError(f"input must be a path, Volume, Image2D or numpy array, got {type(x).__name__}")


def read_input(x: Input, kind: InputKind, info: InputInfo | None, manifest: ModelManifest, *,
               invert: bool | None, max_voxels: int, spacing: float | Sequence[float] | None = None,
               project: bool = True) -> Prepared:
    """Read an input whose kind :func:`input_kind` told (and the model accepts).

    ``spacing`` (mm, one number or ``(row, col)``) replaces a radiograph file's or an
    array's pixel spacing (default: the file's, or for an array the model's); ``project`` False
    keeps a CT's projection on the CT's own grid (a published TS2D model's way).

    Raises:
        InputError: An unreadable file, a CT above ``max_voxels``, NaN/infinite values,
            ``spacing`` for an input that has its own (a CT, a projection file, an Image2D).
    """
    from ts2d_xray.io import read_ct, read_projection, read_radiograph
    from ts2d_xray.io.itk import file_grid

    source = str(info.path) if info is not None else getattr(x, "source", None)
    if spacing is not None and (isinstance(x, (Image2D, Volume)) or (info is not None and kind != "radiograph")):
        what = f"an {type(x).__name__}" if isinstance(x, (Image2D, Volume)) else f"a {kind} file"
        raise InputError(source, f"spacing (--spacing) is for radiograph files and arrays; {what} carries its own")
    if info is not None:
        if kind == "ct":
            return Prepared(_project(read_ct(info.path), manifest, project), kind, source)
        if kind == "projection":
            image = read_projection(info.path, display=None)
        else:
            given = None if spacing is None else spacing_pair(spacing)
            image = read_radiograph(info.path, display=None, invert=invert, spacing=given)
        return Prepared(image, kind, source, file_grid(info.path, image.plane.shape))
    if isinstance(x, Volume):
        if x.array.size > max_voxels:
            raise InputError(x.source, f"{x.array.size:,} voxels exceed max_voxels={max_voxels:,}")
        return Prepared(_project(x, manifest, project), kind, x.source)
    if isinstance(x, Image2D):
        require_finite(x.array, x.meta.get("source"))
        return Prepared(x, kind, x.meta.get("source"))
    return Prepared(_from_array(x, manifest, spacing), kind, None)


def _project(ct: Volume, manifest: ModelManifest, resample_to_model: bool) -> Image2D:
    """A CT's coronal projection (radiograph display), at the model's pixel size unless told not to."""
    from ts2d_xray.projection import project_ct, resample

    image = project_ct(ct, mode=manifest.projection_mode, spacing=None, display="radiograph")
    return resample(image, manifest.spacing_mm) if resample_to_model else image


def _from_array(array: np.ndarray, manifest: ModelManifest, spacing: float | Sequence[float] | None) -> Image2D:
    """An array ``(H, W)`` or ``(C, H, W)`` in the model's display convention, at ``spacing`` (default the model's)."""
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 2):
        raise ValueError(f"array input must be (H, W) or (C, H, W) with C = 1 or 2, got shape {array.shape}")
    if array.size == 0 or array.dtype.kind not in "biuf":
        raise ValueError(f"array input must hold numbers and pixels, got {array.dtype} of shape {array.shape}")
    require_finite(array, None)
    pair = tuple(manifest.spacing_mm) if spacing is None else spacing_pair(spacing)
    col = (1.0, 0.0, 0.0) if DISPLAYS[manifest.display] == "L" else (-1.0, 0.0, 0.0)
    plane = Plane(tuple(array.shape[1:]), pair, col, (0.0, 0.0, -1.0))
    return Image2D(np.asarray(array, np.float32), plane, CHANNELS[manifest.kind])

