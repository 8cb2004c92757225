"""Compare predicted 2D masks with a ground truth: Dice, HD95 in mm (pooled or max-directed) and presence.

Metric conventions (per structure, on the ground truth's pixel grid; ``P`` = predicted
mask, ``G`` = ground-truth mask, both ``(H, W)`` bool; ``spacing`` = ``(row, column)``
pixel size in mm as in :class:`~ts2d_xray.image.Plane`):

* **Dice** = ``2 |P & G| / (|P| + |G|)``, in [0, 1].  Both empty: 1.0 (nothing to find,
  nothing found); one empty: 0.0.
* **HD95** (mm), in one of two variants (:data:`HD95_VARIANTS`), both from the directed
  surface distances: from every boundary pixel of ``P`` to the nearest boundary pixel of
  ``G`` (``d(P, G)``), and from every boundary pixel of ``G`` to the nearest one of ``P``
  (``d(G, P)``).  A boundary pixel is a mask pixel with a 4-neighbour outside the mask or
  on the image edge.  Distances are between pixel centres, in mm with the anisotropic
  spacing (exact Euclidean distance transform,
  ``scipy.ndimage.distance_transform_edt(sampling=spacing)``); percentiles are numpy's
  (linear interpolation).

  - ``"pooled"`` (the default, this project's from the start): the 95th percentile of
    ``d(P, G)`` and ``d(G, P)`` pooled into one set.
  - ``"max-directed"``: the larger of the two directed 95th percentiles,
    ``max(P95(d(P, G)), P95(d(G, P)))``, the "robust Hausdorff" of MONAI
    (``compute_hausdorff_distance(..., percentile=95)``, with the same boundary and
    distance definitions) and of DeepMind's ``surface-distance``
    (``compute_robust_hausdorff(..., 95)``, which weights boundary elements by their
    length, so its numbers can differ slightly).  Use it to compare with papers that use
    those libraries; it is larger than ``"pooled"`` where one direction has the far misses
    (a prediction that misses a lobe, or adds one).

  Both empty: 0.0; one empty: NaN (undefined; left out of HD95 means, and counted by
  ``hd95_missing``).
* **Presence**: a structure is present when its mask covers at least ``min_area_mm2``
  (default :data:`~ts2d_xray.measure.MIN_PRESENT_AREA_MM2`, the threshold of
  :attr:`ts2d_xray.Result.present`) and at least one pixel.  Presence is correct when
  prediction and ground truth agree (both present or both absent).
* **Summaries** average Dice and HD95 over the cases where the structure is present in
  the ground truth (so a structure outside the field of view does not count as a
  perfect 1.0), then over structures (macro average); presence accuracy is over every
  (case, structure) pair.

Derived structures (``lung_left``, ``lungs``, ``spine``, ...) are unions of the
catalog structures a side holds (:meth:`ts2d_xray.image.Masks.mask`).  How inputs are
read, paired and brought onto one grid is described in :mod:`ts2d_xray.evaluate.cases`.

Example:
    >>> import numpy as np
    >>> a = np.zeros((5, 9), bool); a[2, 2] = True
    >>> b = a.copy(); b[2, 6] = True
    >>> round(dice(a, b), 3)
    0.667
    >>> round(hd95(a, b, spacing=(2.0, 0.5)), 6)  # distances 0, 0 and 2.0 mm, pooled
    1.8
    >>> round(hd95(a, b, spacing=(2.0, 0.5), variant="max-directed"), 6)  # max(P95([0]), P95([0, 2.0]))
    1.9
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence, get_args

import numpy as np
from numpy.typing import ArrayLike

from ts2d_xray.image import Masks, spacing_pair
from ts2d_xray.measure import MIN_PRESENT_AREA_MM2

__all__ = [
    "HD95_PERCENTILE",
    "HD95_VARIANTS",
    "HD95Variant",
    "StructureScore",
    "area_mm2",
    "boundary",
    "check_hd95_variant",
    "dice",
    "hd95",
    "score_masks",
    "surface_distances",
]

#: Percentile of the surface distances reported as HD95.
HD95_PERCENTILE = 95.0
#: How HD95 combines the two directed surface distances (see the module docstring).
HD95Variant = Literal["pooled", "max-directed"]
#: The HD95 variants, the default first.
HD95_VARIANTS: tuple[str, ...] = get_args(HD95Variant)


def check_hd95_variant(variant: str) -> str:
    """``variant`` if it is one of :data:`HD95_VARIANTS`, else ValueError."""
    if variant not in HD95_VARIANTS:
        raise ValueError(f"hd95 variant must be one of {', '.join(HD95_VARIANTS)}; got {variant!r}")
    return variant


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"masks must be two (H, W) arrays of the same shape, got {a.shape} and {b.shape}")
    return a, b


def dice(a: ArrayLike, b: ArrayLike) -> float:
    """Dice coefficient of two ``(H, W)`` masks: 1.0 when both are empty."""
    a, b = _pair(a, b)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def boundary(mask: ArrayLike) -> np.ndarray:
    """``(H, W)`` bool: mask pixels with a 4-neighbour outside the mask or on the image edge."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)


def surface_distances(a: ArrayLike, b: ArrayLike, spacing: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: ``a``'s boundary to ``b``'s, and ``b``'s to ``a``'s.

    Args:
        a, b: ``(H, W)`` masks, both non-empty.
        spacing: ``(row, column)`` pixel size in mm.

    Returns:
        Two 1D float arrays, one distance per boundary pixel (see :func:`boundary`).
    """
    from scipy import ndimage

    a, b = _pair(a, b)
    if not (a.any() and b.any()):
        raise ValueError("surface distances need two non-empty masks")
    spacing = spacing_pair(spacing)
    ea, eb = boundary(a), boundary(b)
    # The distance transform only needs the box holding both boundaries: every nearest
    # boundary pixel lies inside it.
    rows, cols = np.nonzero(ea | eb)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    ea, eb = ea[box], eb[box]
    to_b = ndimage.distance_transform_edt(~eb, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~ea, sampling=spacing)
    return to_b[ea], to_a[eb]


def hd95(a: ArrayLike, b: ArrayLike, spacing: float | Sequence[float], percentile: float = HD95_PERCENTILE, *,
         variant: HD95Variant = "pooled") -> float:
    """95th-percentile Hausdorff distance (mm) of two ``(H, W)`` masks.

    Both empty: 0.0; one empty: NaN.  See the module docstring for the definition.

    Args:
        a, b: ``(H, W)`` masks.
        spacing: ``(row, column)`` pixel size in mm (a single number for square pixels).
        percentile: 95 by default; 100 gives the Hausdorff distance (in both variants).
        variant: ``"pooled"``: the percentile of both directed distances pooled;
            ``"max-directed"``: the larger of the two directed percentiles (MONAI,
            DeepMind's surface-distance).
    """
    check_hd95_variant(variant)
    a, b = _pair(a, b)
    has_a, has_b = bool(a.any()), bool(b.any())
    if not (has_a or has_b):
        return 0.0
    if not (has_a and has_b):
        return math.nan
    d_ab, d_ba = surface_distances(a, b, spacing)
    if variant == "max-directed":
        return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))
    return float(np.percentile(np.concatenate([d_ab, d_ba]), percentile))


def area_mm2(mask: ArrayLike, spacing: float | Sequence[float]) -> float:
    """Area of a mask in mm^2 (pixel count x row spacing x column spacing)."""
    row, col = spacing_pair(spacing)
    return float(np.count_nonzero(mask)) * row * col


@dataclass(frozen=True)
class StructureScore:
    """The scores of one structure in one case.

    Attributes:
        case: Case name (file or folder stem).
        structure: Catalog or derived structure name.
        dice: Dice coefficient (1.0 when both masks are empty).
        hd95_mm: HD95 in mm, in the variant of the evaluation (0.0 when both are empty,
            NaN when one is).
        pred_area_mm2, gt_area_mm2: Mask areas in mm^2 on the ground truth's grid.
        pred_present, gt_present: Presence (area >= the report's ``min_area_mm2``).
    """

    case: str
    structure: str
    dice: float
    hd95_mm: float
    pred_area_mm2: float
    gt_area_mm2: float
    pred_present: bool
    gt_present: bool

    @property
    def presence_correct(self) -> bool:
        """Whether prediction and ground truth agree on presence (both present or both absent)."""
        return self.pred_present == self.gt_present


def score_masks(pred: Masks, gt: Masks, structures: Sequence[str] | None = None, *, case: str = "case",
                min_area_mm2: float = MIN_PRESENT_AREA_MM2, hd95_variant: HD95Variant = "pooled"
                ) -> list[StructureScore]:
    """Score :class:`~ts2d_xray.image.Masks` already on one grid (``gt.plane``).

    Args:
        pred, gt: Masks with the same ``plane.shape``; ``gt.plane.spacing`` gives the mm.
        structures: Names to score (default: ``gt.names``); derived names are unions.
        case: Case name stored in each score.
        min_area_mm2: Presence threshold.
        hd95_variant: ``"pooled"`` or ``"max-directed"`` (see :func:`hd95`).
    """
    check_hd95_variant(hd95_variant)
    if pred.plane.shape != gt.plane.shape:
        raise ValueError(f"pred and gt must be on one grid, got {pred.plane.shape} and {gt.plane.shape}")
    spacing = gt.plane.spacing
    out = []
    for name in gt.names if structures is None else structures:
        p, g = pred.mask(name), gt.mask(name)
        pa, ga = area_mm2(p, spacing), area_mm2(g, spacing)
        out.append(StructureScore(case, name, dice(p, g), hd95(p, g, spacing, variant=hd95_variant), pa, ga,
                                  bool(pa > 0 and pa >= min_area_mm2), bool(ga > 0 and ga >= min_area_mm2)))
    return out
