"""Bring 2D masks onto another plane of the same patient, exactly or by nearest neighbour.

Used by :mod:`ts2d_xray.evaluate.metrics` to put a prediction on the ground truth's grid.  The
steps, each only when needed:

1. **Orient**: transpose and/or flip the masks so that their row and column directions
   (LPS) are those of the target plane.  Exact (no interpolation).  Planes whose axes
   are not parallel or perpendicular (within :data:`DIRECTION_TOL`) are refused.
2. **Same grid**: same shape, spacing within :data:`SPACING_RTOL` and, where both
   planes have a position, origins within :data:`ORIGIN_TOL_PX` of a pixel: nothing to
   do.  A plane without a position (a radiograph, a PNG folder) is taken to cover the
   same field as the other when shapes and spacings agree.
3. **Resample** (nearest neighbour): each target pixel takes the value of the source
   pixel that contains its centre.  With both origins known the mapping is physical
   (LPS mm; target pixels outside the source are background, with a warning).  With an
   origin unknown, both planes must have the same physical size (edge to edge, within
   one pixel), and their edges are aligned; otherwise the planes are refused.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import Masks, Plane
from ts2d_xray.orientation import DIRECTION_TOL, Orientation

__all__ = ["DIRECTION_TOL", "ORIGIN_TOL_PX", "SPACING_RTOL", "align_masks"]

log = logging.getLogger(__name__)

#: Relative difference of pixel sizes below which two spacings are the same.
SPACING_RTOL = 1e-3
#: Origin difference (in pixels of the target) below which two grids coincide.
ORIGIN_TOL_PX = 0.05


def _describe(plane: Plane) -> str:
    where = "no position" if plane.origin is None else "origin " + ", ".join(f"{v:.4g}" for v in plane.origin) + " mm"
    return (f"{plane.shape[1]}x{plane.shape[0]} px at {plane.spacing[1]:.4g}x{plane.spacing[0]:.4g} mm, "
            f"orientation {''.join(plane.orientation)}, {where}")


def _orient(masks: Masks, target: Plane, source: str, target_name: str) -> Masks:
    """Transpose/flip ``masks`` so that its column and row directions are the target's."""
    try:
        orientation = Orientation.between(masks.plane, target, tol=DIRECTION_TOL)
    except ValueError as err:
        raise InputError(source, f"cannot be aligned with {target_name}: {err}") from None
    if not orientation.is_identity:
        log.info("%s: %s to match %s", source, orientation.describe(), target_name)
    oriented = orientation.apply(masks)
    # Directions now agree within DIRECTION_TOL; use the target's exactly.
    return replace(oriented, plane=replace(oriented.plane, col_dir=target.col_dir, row_dir=target.row_dir))


def align_masks(masks: Masks, target: Plane, *, source: str = "the masks", target_name: str = "the target") -> Masks:
    """The masks on ``target``'s grid (see the module docstring for the steps and tolerances).

    Args:
        masks: ``(K, H, W)`` masks on their own plane.
        target: The plane to bring them onto.
        source, target_name: Names (paths) for messages.

    Returns:
        :class:`Masks` ``(K, *target.shape)`` on ``target``.

    Raises:
        InputError: Axes not parallel, planes without a position and of different
            physical sizes, or planes that do not overlap.
    """
    oriented = _orient(masks, target, source, target_name)
    plane = oriented.plane
    spacing, target_spacing = np.asarray(plane.spacing), np.asarray(target.spacing)
    same_spacing = np.allclose(spacing, target_spacing, rtol=SPACING_RTOL, atol=0)
    positioned = plane.origin is not None and target.origin is not None
    if positioned:
        offset = np.asarray(target.origin, float) - np.asarray(plane.origin, float)
        # Offset of the target's first pixel centre in source pixels, along (rows, cols).
        offset_px = np.array([offset @ np.asarray(target.row_dir), offset @ np.asarray(target.col_dir)]) / spacing
    if plane.shape == target.shape and same_spacing and (not positioned or np.all(np.abs(offset_px) < ORIGIN_TOL_PX)):
        return Masks(oriented.array, masks.names, target)

    if positioned:
        # Source pixel whose centre is nearest to each target pixel centre, per axis.
        index = [np.floor(offset_px[a] + np.arange(target.shape[a]) * target_spacing[a] / spacing[a] + 0.5)
                 for a in (0, 1)]
    else:
        extent, target_extent = np.asarray(plane.extent), np.asarray(target.extent)
        if np.any(np.abs(extent - target_extent) > np.maximum(spacing, target_spacing)):
            raise InputError(source, f"cannot be aligned with {target_name}: {_describe(plane)} vs "
                                     f"{_describe(target)}; without a position in the patient both must cover the "
                                     "same field, and their physical sizes differ")
        # Source pixel containing each target pixel centre, edges aligned.
        index = [np.floor((np.arange(target.shape[a]) + 0.5) * target_spacing[a] / spacing[a]) for a in (0, 1)]
    inside = [(i >= 0) & (i < plane.shape[a]) for a, i in enumerate(index)]
    covered = float(inside[0].mean() * inside[1].mean())
    if covered == 0:
        raise InputError(source, f"cannot be aligned with {target_name}: the planes do not overlap "
                                 f"({_describe(plane)} vs {_describe(target)})")
    if covered < 1:
        log.warning("%s covers %.0f%% of %s; the rest counts as background", source, 100 * covered, target_name)
    rows, cols = (np.clip(i, 0, n - 1).astype(int) for i, n in zip(index, plane.shape))
    out = oriented.array[:, rows[:, None], cols[None, :]] & (inside[0][:, None] & inside[1][None, :])
    log.info("%s resampled (nearest neighbour) from %s onto %s", source, _describe(plane), _describe(target))
    return Masks(out, masks.names, target)
