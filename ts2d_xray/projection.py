"""Coronal projection of a CT and its labels, as TotalSegmentator 2D (TS2D) does it.

A CT becomes a 2-channel image along the anterior-posterior (AP) axis:

* channel 0 ``"mean"``: mean intensity projection (HU),
* channel 1 ``"max"``:  maximum intensity projection (HU),

in TS2D's channel order.  Labels become multi-label masks: a pixel belongs to every
structure its ray crosses for at least ``min_voxels`` voxels (or ``min_mm`` mm).

Two intensity modes:

``"ts2d"``
    Reproduces TS2D's published projections: raw HU, no clipping, every voxel of the
    volume counts (air and table included).  At native spacing this equals SimpleITK's
    ``MeanProjection``/``MaximumProjection`` along AP of the RAI-oriented volume.
``"clean"``
    HU clipped to :data:`HU_RANGE`; voxels outside the body (air, table, blankets) are
    left out, so the mean does not depend on the field of view.  The body is the
    largest connected region above :data:`BODY_THRESHOLD_HU`, with holes (lungs,
    bowel gas) filled slice by slice.

Output geometry: rows run head to feet; columns follow ``display`` (see
:mod:`ts2d_xray.image`): ``"radiograph"`` puts the patient's right on the image left,
``"ts2d"`` the patient's left.  Any axis-aligned input orientation is handled by axis
permutation and flips (exact, no interpolation); an oblique volume is first resampled
onto the nearest axis-aligned grid.  With ``spacing`` set, image and masks are resampled
to that pixel size in mm (antialiased bilinear; masks as fractions thresholded at 0.5),
keeping the physical extent exactly, so the spacing achieved may differ from the one
asked for by less than one pixel over the image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal, Sequence

import numpy as np

from ts2d_xray import kinds
from ts2d_xray.errors import InputError
from ts2d_xray.image import (DISPLAYS, Display, Grid, Image2D, LabelMap, Masks, Plane, Volume, nearest_axes, require_finite,
                             spacing_pair)
from ts2d_xray.orientation import Orientation

__all__ = [
    "BODY_THRESHOLD_HU",
    "CHANNELS",
    "DEFAULT_SPACING_MM",
    "HU_RANGE",
    "Mode",
    "project",
    "project_ct",
    "project_labels",
    "resample",
]

log = logging.getLogger(__name__)

Mode = Literal["ts2d", "clean"]
#: Channel names of a projection, in TS2D's order (the ``"coronal"`` kind's).
CHANNELS: tuple[str, ...] = kinds.CHANNELS["coronal"]
#: Pixel size TS2D's models work at (the TotalSegmentator data set's 1.5 mm).
DEFAULT_SPACING_MM = 1.5
#: HU range kept in "clean" mode: air (-1024) to the 12-bit CT ceiling (3071).
HU_RANGE = (-1024.0, 3071.0)
#: Voxels above this are tissue when finding the body in "clean" mode (fat is about
#: -100 HU, lung parenchyma about -850 HU, air -1000 HU).
BODY_THRESHOLD_HU = -500.0
_AIR_HU = HU_RANGE[0]
# Voxel size (mm) at which the body outline is found in "clean" mode.
_BODY_VOXEL_MM = 1.5
# Direction cosines further than this from an axis make a volume oblique.
_OBLIQUE_TOL = 1e-3
# Largest plausible voxel size (mm): beyond it a header is corrupt, and resampling would overflow.
_MAX_VOXEL_MM = 1e4


@dataclass(frozen=True)
class _Layout:
    """Where the LPS axes lie in a volume's stored ``(z, y, x)`` array.

    ``ray``, ``row``, ``col``: array axes along AP, superior-inferior and left-right.
    ``orientation``: brings the projected ``(..., a, b)`` image (remaining axes in
    stored order) to rows running head to feet and columns following the display
    convention.
    """

    ray: int
    row: int
    col: int
    orientation: Orientation
    plane: Plane


def _layout(grid: Grid, display: Display) -> _Layout:
    if display not in DISPLAYS:
        raise ValueError(f"display must be one of {list(DISPLAYS)}, got {display!r}")
    m = grid.matrix
    lps_axis = nearest_axes(m)  # LPS axis of index axis n
    if any(m[a, n] == 0 for n, a in enumerate(lps_axis)):
        raise ValueError(f"degenerate direction matrix {m.round(3).tolist()}")
    index_of = {int(a): n for n, a in enumerate(lps_axis)}  # LPS axis -> index axis
    # ITK index axis n is numpy axis 2 - n.
    ray, row, col = (2 - index_of[a] for a in (1, 2, 0))
    sign = lambda a: float(np.sign(m[a, index_of[a]]))  # noqa: E731
    flip_rows = sign(2) > 0  # index runs toward the head; rows must run toward the feet
    want_col = 1.0 if DISPLAYS[display] == "L" else -1.0
    flip_cols = sign(0) != want_col
    spacing = np.asarray(grid.spacing)
    n_row, n_col = grid.shape[row], grid.shape[col]
    # LPS position of the first output pixel: corner voxel on the chosen sides, mid-ray.
    index = np.zeros(3)
    index[index_of[2]] = n_row - 1 if flip_rows else 0
    index[index_of[0]] = n_col - 1 if flip_cols else 0
    index[index_of[1]] = (grid.shape[ray] - 1) / 2
    origin = np.asarray(grid.origin) + m @ (index * spacing)
    plane = Plane(
        shape=(n_row, n_col),
        spacing=(float(spacing[index_of[2]]), float(spacing[index_of[0]])),
        col_dir=(want_col, 0.0, 0.0),
        row_dir=(0.0, 0.0, -1.0),
        origin=tuple(float(v) for v in origin),
    )
    return _Layout(ray, row, col, Orientation(row > col, flip_rows, flip_cols), plane)


def _is_oblique(grid: Grid) -> bool:
    m = np.abs(grid.matrix)
    return bool(np.any((m > _OBLIQUE_TOL) & (m < 1 - _OBLIQUE_TOL)))


def _axis_aligned(array: np.ndarray, grid: Grid, nearest: bool, fill: float) -> tuple[np.ndarray, Grid]:
    """Resample an oblique volume onto the nearest axis-aligned grid covering it."""
    import SimpleITK as sitk

    image = Volume(array, grid).to_sitk()
    m = grid.matrix
    aligned = np.zeros((3, 3))
    for n, a in enumerate(nearest_axes(m)):  # an assignment: a 45-degree rotation has ties
        aligned[a, n] = np.sign(m[a, n])
    # Bounding box of the original voxel centres, in the aligned frame.
    size = np.asarray(grid.shape[::-1]) - 1
    corners = np.array([[i, j, k] for i in (0, size[0]) for j in (0, size[1]) for k in (0, size[2])], float)
    lps = np.asarray(grid.origin) + (corners * grid.spacing) @ m.T
    local = lps @ aligned  # aligned is orthonormal: inverse = transpose
    lo, hi = local.min(axis=0), local.max(axis=0)
    new_size = np.floor((hi - lo) / grid.spacing + 1e-6).astype(int) + 1
    ref = sitk.Image([int(s) for s in new_size], image.GetPixelID())
    ref.SetSpacing(grid.spacing)
    ref.SetDirection(aligned.ravel().tolist())
    ref.SetOrigin((aligned @ lo).tolist())
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(image, ref, sitk.Transform(), interp, fill)
    log.info("resampled an oblique volume onto an axis-aligned grid")
    vol = Volume.from_sitk(out)
    return vol.array, vol.grid


def _body_mask(hu: np.ndarray, grid: Grid, lay: _Layout) -> np.ndarray:
    """Voxels inside the patient: largest tissue region, holes filled per axial slice.

    Found on a grid of about :data:`_BODY_VOXEL_MM` voxels (the body outline needs no
    finer detail), then brought back to the full grid.
    """
    from scipy import ndimage

    steps = tuple(max(1, round(_BODY_VOXEL_MM / grid.spacing[2 - axis])) for axis in range(3))
    tissue = hu[tuple(slice(None, None, s) for s in steps)] > BODY_THRESHOLD_HU
    # A thin opening detaches the table and blankets, which touch the body only
    # along a few voxels; the dilation afterwards gives the body its edge back.
    opened = ndimage.binary_opening(tissue, iterations=2)
    regions, n = ndimage.label(opened)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(regions.ravel())
    sizes[0] = 0
    body = regions == int(np.argmax(sizes))
    body = _fill_slices(ndimage.binary_dilation(body, iterations=2) & tissue, lay.row)
    for axis, step in enumerate(steps):
        body = np.repeat(body, step, axis=axis)
    return body[tuple(slice(0, n) for n in hu.shape)]


def _fill_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    from scipy import ndimage

    # Filling per axial slice closes lungs and bowel gas, which a 3D fill cannot
    # (they connect to the outside through the airways).
    moved = np.moveaxis(mask, axis, 0)
    filled = np.stack([ndimage.binary_fill_holes(s) for s in moved])
    return np.moveaxis(filled, 0, axis)


def project_ct(
    ct: Volume,
    *,
    mode: Mode = "ts2d",
    spacing: float | None = DEFAULT_SPACING_MM,
    display: Display = "radiograph",
) -> Image2D:
    """Project a CT onto the coronal plane: channels ``("mean", "max")`` in HU.

    Args:
        ct: CT in HU, any orientation.
        mode: ``"ts2d"`` (raw, as TS2D) or ``"clean"`` (clipped, body only); see the
            module docstring.
        spacing: Output pixel size in mm (square pixels), or None for the CT's own
            spacing along superior-inferior (rows) and left-right (columns).
        display: ``"radiograph"`` (patient's right on the image left) or ``"ts2d"``.

    Returns:
        A 2-channel :class:`Image2D` (float32), rows head to feet.  ``meta`` records
        the mode and the source.

    Raises:
        InputError: A CT without voxels, with NaN or infinite values, or with a
            degenerate geometry (direction or spacing).

    Example:
        >>> from ts2d_xray.io import read_ct
        >>> image = project_ct(read_ct("ct.nii.gz"), spacing=1.5)  # doctest: +SKIP
        >>> image.array.shape  # (2, rows, columns)  # doctest: +SKIP
    """
    if mode not in ("ts2d", "clean"):
        raise ValueError(f"mode must be 'ts2d' or 'clean', got {mode!r}")
    _check_ct(ct)
    array, grid = ct.array, ct.grid
    if _is_oblique(grid):
        array, grid = _axis_aligned(array, grid, nearest=False, fill=_AIR_HU)
    lay = _layout(grid, display)
    if mode == "ts2d":
        mean = array.mean(axis=lay.ray, dtype=np.float64)
        peak = array.max(axis=lay.ray)
    else:
        hu = np.clip(array, *HU_RANGE, dtype=np.float32)
        body = _body_mask(hu, grid, lay)
        count = body.sum(axis=lay.ray)
        total = np.where(body, hu, 0).sum(axis=lay.ray, dtype=np.float64)
        mean = np.where(count > 0, total / np.maximum(count, 1), _AIR_HU)
        peak = np.where(body, hu, _AIR_HU).max(axis=lay.ray)
    stacked = lay.orientation.array(np.stack([mean.astype(np.float32), peak.astype(np.float32)]))
    image = Image2D(stacked, lay.plane, CHANNELS, {"source": ct.source, "mode": mode, "kind": "projection"})
    return image if spacing is None else resample(image, spacing)


def _check_ct(ct: Volume) -> None:
    """Refuse a CT that cannot be projected: no voxels, NaN or infinite values, a degenerate direction."""
    source = ct.source  # None: an array given to the API
    if ct.array.size == 0:
        raise InputError(source, f"the CT holds no voxels (shape {ct.array.shape})")
    require_finite(ct.array, source)
    if not np.all(np.isfinite(ct.grid.matrix)) or abs(np.linalg.det(ct.grid.matrix)) < 1e-3:
        raise InputError(source, f"degenerate direction matrix {ct.grid.matrix.round(3).tolist()}")
    if not all(np.isfinite(s) and 0 < s <= _MAX_VOXEL_MM for s in ct.grid.spacing):
        raise InputError(source, f"voxel spacing {ct.grid.spacing} mm: each must be > 0 and at most {_MAX_VOXEL_MM:g} mm")


def project_labels(
    labels: LabelMap,
    *,
    spacing: float | None = DEFAULT_SPACING_MM,
    display: Display = "radiograph",
    min_voxels: int = 1,
    min_mm: float | None = None,
    names: Sequence[str] | None = None,
) -> Masks:
    """Project 3D labels to multi-label coronal masks.

    A pixel belongs to a structure when its AP ray crosses at least ``min_voxels``
    voxels of it (or, when ``min_mm`` is given, at least that path length in mm).

    Args:
        labels: 3D labels, on the same grid as the CT they belong to.
        spacing: Output pixel size in mm, or None for native spacing (must match
            :func:`project_ct`'s for the masks to align with the image).
        display: As in :func:`project_ct`.
        min_voxels: Voxel count threshold along the ray (>= 1).
        min_mm: Path-length threshold in mm; overrides ``min_voxels``.
        names: Structures to project, in this order; default: all in ``labels``.
            Names absent from ``labels`` give empty masks (the structure is not in
            this scan); names unknown to the catalog raise ValueError.

    Returns:
        :class:`Masks` ``(K, H, W)``, aligned pixel for pixel with
        ``project_ct(ct, spacing=spacing, display=display)``.
    """
    from ts2d_xray import labels as catalog

    if min_voxels < 1:
        raise ValueError(f"min_voxels must be >= 1, got {min_voxels}")
    names = tuple(labels.segments) if names is None else tuple(names)
    for n in names:
        if n not in labels.segments and not catalog.is_known(n):
            catalog.structure(n)  # raises "unknown structure ... did you mean"
    layers, grid = labels.layers, labels.grid
    if _is_oblique(grid):
        aligned = [_axis_aligned(layer, grid, nearest=True, fill=0) for layer in layers]
        layers, grid = np.stack([a for a, _ in aligned]), aligned[0][1]
    lay = _layout(grid, display)
    ray_mm = grid.spacing[2 - lay.ray]
    threshold = max(1, int(np.ceil(min_mm / ray_mm - 1e-9))) if min_mm is not None else min_voxels

    present = [lay.orientation.array(_ray_counts(layer, lay.ray) >= threshold) for layer in layers]
    out = np.zeros((len(names),) + lay.plane.shape, dtype=bool)
    for k, name in enumerate(names):
        if name in labels.segments:
            layer, value = labels.segments[name]
            if value < present[layer].shape[0]:
                out[k] = present[layer][value]
    masks = Masks(out, names, lay.plane)
    return masks if spacing is None else resample(masks, spacing)


def _ray_counts(layer: np.ndarray, ray: int) -> np.ndarray:
    """Voxel count of every label value along every ray: ``(V, a, b)`` int.

    One bincount per slab of rays over its labelled voxels replaces one pass over the
    volume per structure; slabs keep the working set in cache.
    """
    moved = np.moveaxis(layer, ray, 1)  # (a, depth, b): a slab of rays per index of a
    a, _, b = moved.shape
    n_values = int(layer.max(initial=0)) + 1
    counts = np.empty((a, b, n_values), dtype=np.int64)
    for i in range(a):
        slab = moved[i].reshape(-1)
        nz = np.flatnonzero(slab)
        counts[i] = np.bincount((nz % b) * n_values + slab[nz], minlength=b * n_values).reshape(b, n_values)
    return counts.transpose(2, 0, 1)


def resample(item: Image2D | Masks, spacing: float | tuple[float, float]) -> Image2D | Masks:
    """Resample a 2D image or masks to a pixel size in mm, keeping the physical extent.

    The output has ``round(extent / spacing)`` pixels per axis, so its spacing is the
    requested one adjusted by less than one pixel over the extent.  Images use
    antialiased bilinear interpolation; masks are interpolated as fractions and
    thresholded at 0.5.  ``plane.origin`` moves with the first pixel centre.

    Args:
        item: :class:`Image2D` or :class:`Masks`.
        spacing: Target ``(row, column)`` spacing in mm, or one value for both.
    """
    import torch
    import torch.nn.functional as F

    target = np.asarray(spacing_pair(spacing))
    plane = item.plane
    extent = np.asarray(plane.extent)
    shape = np.maximum(1, np.round(extent / target))
    if not np.all(np.isfinite(shape)) or np.prod(shape) > 2**31:
        raise ValueError(f"resampling {plane.shape} px of {plane.spacing} mm to {spacing} mm would give {shape} px")
    shape = shape.astype(int)
    if tuple(shape) == plane.shape:
        return item
    new_spacing = extent / shape
    data = torch.from_numpy(np.ascontiguousarray(item.array, dtype=np.float32))[None]
    out = F.interpolate(data, size=tuple(int(s) for s in shape), mode="bilinear", antialias=True, align_corners=False)[0]
    origin = plane.origin
    if origin is not None:
        # Pixel edges stay put, so the first centre moves by half the spacing change.
        shift = (new_spacing - np.asarray(plane.spacing)) / 2
        origin = tuple(
            float(v)
            for v in np.asarray(origin) + shift[1] * np.asarray(plane.col_dir) + shift[0] * np.asarray(plane.row_dir)
        )
    new_plane = replace(plane, shape=(int(shape[0]), int(shape[1])), spacing=tuple(float(s) for s in new_spacing), origin=origin)
    if isinstance(item, Masks):
        return Masks(out.numpy() >= 0.5, item.names, new_plane)
    return replace(item, array=out.numpy(), plane=new_plane)


def project(
    ct: Volume,
    labels: LabelMap | None = None,
    *,
    mode: Mode = "ts2d",
    spacing: float | None = DEFAULT_SPACING_MM,
    display: Display = "radiograph",
    min_voxels: int = 1,
    min_mm: float | None = None,
) -> tuple[Image2D, Masks | None]:
    """Project a CT and, when given, its labels with one geometry (see project_ct/project_labels)."""
    if labels is not None and not labels.grid.matches(ct.grid):
        raise ValueError(f"labels ({labels.grid.describe()}) and CT ({ct.grid.describe()}) are on different grids")
    image = project_ct(ct, mode=mode, spacing=spacing, display=display)
    masks = None
    if labels is not None:
        masks = project_labels(labels, spacing=spacing, display=display, min_voxels=min_voxels, min_mm=min_mm)
    return image, masks
