"""Compare predicted 2D masks with a ground truth: Dice, HD95 in mm and presence.

Metric conventions (per structure, on the ground truth's pixel grid; ``P`` = predicted
mask, ``G`` = ground-truth mask, both ``(H, W)`` bool; ``spacing`` = ``(row, column)``
pixel size in mm as in :class:`~ts2d_xray.image.Plane`):

* **Dice** = ``2 |P & G| / (|P| + |G|)``, in [0, 1].  Both empty: 1.0 (nothing to find,
  nothing found); one empty: 0.0.
* **HD95** (mm): the 95th percentile (numpy's linear interpolation) of the symmetric
  surface distances: the distance from every boundary pixel of ``P`` to the nearest
  boundary pixel of ``G``, and from every boundary pixel of ``G`` to the nearest one of
  ``P``, pooled.  A boundary pixel is a mask pixel with a 4-neighbour outside the mask
  or on the image edge.  Distances are between pixel centres, in mm with the
  anisotropic spacing (exact Euclidean distance transform,
  ``scipy.ndimage.distance_transform_edt(sampling=spacing)``).  Both empty: 0.0; one
  empty: NaN (undefined; left out of HD95 means, and counted by ``hd95_missing``).
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
read, paired and brought onto one grid is described in :func:`evaluate`.

Example:
    >>> import numpy as np
    >>> a = np.zeros((5, 9), bool); a[2, 2] = True
    >>> b = a.copy(); b[2, 6] = True
    >>> round(dice(a, b), 3)
    0.667
    >>> round(hd95(a, b, spacing=(2.0, 0.5)), 6)  # distances 0, 0 and 2.0 mm, pooled
    1.8
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ts2d_xray import labels as catalog
from ts2d_xray.errors import InputError
from ts2d_xray.measure import MIN_PRESENT_AREA_MM2

__all__ = [
    "HD95_PERCENTILE",
    "EvaluationReport",
    "StructureScore",
    "area_mm2",
    "boundary",
    "dice",
    "evaluate",
    "hd95",
    "read_mapping",
    "score_masks",
    "surface_distances",
]

log = logging.getLogger(__name__)

#: Percentile of the pooled symmetric surface distances reported as HD95.
HD95_PERCENTILE = 95.0


# --- metrics ------------------------------------------------------------------------
def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"masks must be two (H, W) arrays of the same shape, got {a.shape} and {b.shape}")
    return a, b


def dice(a, b) -> float:
    """Dice coefficient of two ``(H, W)`` masks: 1.0 when both are empty."""
    a, b = _pair(a, b)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def boundary(mask) -> np.ndarray:
    """``(H, W)`` bool: mask pixels with a 4-neighbour outside the mask or on the image edge."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)


def surface_distances(a, b, spacing) -> tuple[np.ndarray, np.ndarray]:
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
    spacing = _spacing(spacing)
    ea, eb = boundary(a), boundary(b)
    # The distance transform only needs the box holding both boundaries: every nearest
    # boundary pixel lies inside it.
    rows, cols = np.nonzero(ea | eb)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    ea, eb = ea[box], eb[box]
    to_b = ndimage.distance_transform_edt(~eb, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~ea, sampling=spacing)
    return to_b[ea], to_a[eb]


def hd95(a, b, spacing, percentile: float = HD95_PERCENTILE) -> float:
    """95th-percentile symmetric surface distance (mm) of two ``(H, W)`` masks.

    Both empty: 0.0; one empty: NaN.  See the module docstring for the definition.

    Args:
        a, b: ``(H, W)`` masks.
        spacing: ``(row, column)`` pixel size in mm (a single number for square pixels).
        percentile: 95 by default; 100 gives the Hausdorff distance.
    """
    a, b = _pair(a, b)
    has_a, has_b = bool(a.any()), bool(b.any())
    if not (has_a or has_b):
        return 0.0
    if not (has_a and has_b):
        return math.nan
    d_ab, d_ba = surface_distances(a, b, spacing)
    return float(np.percentile(np.concatenate([d_ab, d_ba]), percentile))


def area_mm2(mask, spacing) -> float:
    """Area of a mask in mm^2 (pixel count x row spacing x column spacing)."""
    row, col = _spacing(spacing)
    return float(np.count_nonzero(mask)) * row * col


def _spacing(spacing) -> tuple[float, float]:
    pair = np.broadcast_to(np.asarray(spacing, dtype=float), (2,))
    if not np.all(np.isfinite(pair)) or np.any(pair <= 0):
        raise ValueError(f"spacing must be (row_mm, col_mm), finite and > 0; got {spacing!r}")
    return float(pair[0]), float(pair[1])


# --- scores ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StructureScore:
    """The scores of one structure in one case.

    Attributes:
        case: Case name (file or folder stem).
        structure: Catalog or derived structure name.
        dice: Dice coefficient (1.0 when both masks are empty).
        hd95_mm: HD95 in mm (0.0 when both are empty, NaN when one is).
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
        return self.pred_present == self.gt_present


def score_masks(pred, gt, structures: Sequence[str] | None = None, *, case: str = "case",
                min_area_mm2: float = MIN_PRESENT_AREA_MM2) -> list[StructureScore]:
    """Score :class:`~ts2d_xray.image.Masks` already on one grid (``gt.plane``).

    Args:
        pred, gt: Masks with the same ``plane.shape``; ``gt.plane.spacing`` gives the mm.
        structures: Names to score (default: ``gt.names``); derived names are unions.
        case: Case name stored in each score.
        min_area_mm2: Presence threshold.
    """
    if pred.plane.shape != gt.plane.shape:
        raise ValueError(f"pred and gt must be on one grid, got {pred.plane.shape} and {gt.plane.shape}")
    spacing = gt.plane.spacing
    out = []
    for name in gt.names if structures is None else structures:
        p, g = pred.mask(name), gt.mask(name)
        pa, ga = area_mm2(p, spacing), area_mm2(g, spacing)
        out.append(StructureScore(case, name, dice(p, g), hd95(p, g, spacing), pa, ga,
                                  bool(pa > 0 and pa >= min_area_mm2), bool(ga > 0 and ga >= min_area_mm2)))
    return out


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """Scores of every (case, structure) pair, with their summary and outputs.

    Attributes:
        scores: One :class:`StructureScore` per case and structure, cases in order.
        pred, gt: What was compared (paths or descriptions).
        min_area_mm2: Presence threshold used.
        notes: What was skipped and why (structures not predicted, unmatched cases, ...).
    """

    scores: tuple[StructureScore, ...]
    pred: str
    gt: str
    min_area_mm2: float = MIN_PRESENT_AREA_MM2
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cases(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.case for s in self.scores))

    @property
    def structures(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.structure for s in self.scores))

    def score(self, structure: str, case: str | None = None) -> StructureScore:
        """The score of one structure (in ``case``; default: the only case)."""
        if case is None:
            if len(self.cases) != 1:
                raise ValueError(f"{len(self.cases)} cases; name one of {list(self.cases)}")
            case = self.cases[0]
        for s in self.scores:
            if s.case == case and s.structure == structure:
                return s
        raise KeyError(f"no score for {structure!r} in case {case!r}")

    def summary(self) -> dict:
        """JSON-ready summary: means over structures present in GT, per structure and per case."""
        from ts2d_xray.evaluate.output import summary

        return summary(self)

    def table(self) -> str:
        """A plain-text table: per structure Dice, HD95 (mm) and presence, then the means."""
        from ts2d_xray.evaluate.output import table

        return table(self)

    def save(self, out_dir: str | PathLike) -> list[Path]:
        """Write ``metrics.csv``, ``summary.json`` and ``dice_boxplot.png`` into ``out_dir``.

        The files are written into a hidden folder first and moved into place when all
        are complete (a new ``out_dir`` appears at once); files of the same names are
        replaced.  Returns the paths written.
        """
        from ts2d_xray.evaluate.output import save

        return save(self, Path(out_dir))


# --- evaluation -----------------------------------------------------------------------
def read_mapping(path: str | PathLike) -> dict[str, str]:
    """Read a YAML mapping from a user's mask names to catalog or derived structures.

    Each key is a mask's file name (``lung_field_left.png``), its stem
    (``lung_field_left``) or a segment name; each value a catalog class or derived
    structure (``lung_left``).  Example file::

        lung_field_left.png: lung_left
        lung_field_right.png: lung_right
        heart_outline.png: heart

    Raises:
        InputError: Missing file, invalid YAML, not a mapping of names to names, an
            unknown structure, or two masks mapped to one structure.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such mapping file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(path, f"not valid YAML{line} ({getattr(err, 'problem', None) or type(err).__name__})") from None
    return check_mapping(data, path)


def check_mapping(data, source: str | PathLike = "mapping") -> dict[str, str]:
    """Validate a ``{mask name: structure}`` mapping (see :func:`read_mapping`)."""
    if not isinstance(data, Mapping) or not data:
        raise InputError(source, "a mapping must be a non-empty set of 'mask name: structure' lines")
    out: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InputError(source, f"entry {key!r}: {value!r} must map a mask name to one structure name")
        try:
            catalog.expand(value)
        except ValueError as err:
            raise InputError(source, f"entry {key!r}: {err}") from None
        out[key] = value
    targets = list(out.values())
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        raise InputError(source, f"several masks map to {', '.join(repeated)}; map one mask per structure")
    return out


def evaluate(pred, gt, mapping: str | PathLike | Mapping[str, str] | None = None, *,
             structures: Sequence[str] | None = None, vs_3d: bool = False, classmap=None,
             min_area_mm2: float = MIN_PRESENT_AREA_MM2) -> EvaluationReport:
    """Compare predicted masks with a ground truth, per structure.

    Inputs:

    * ``pred``: a result (a :class:`~ts2d_xray.Result`, :class:`~ts2d_xray.image.Masks`,
      or anything :func:`~ts2d_xray.io.mask_sources.read_mask_source` reads: a
      ``.seg.nrrd``, our NIfTI + JSON masks, a result folder of ``ts2d-xray
      segment``/``project``), or a folder of such results, one per case.
    * ``gt``: the same kinds, or a user's masks (a folder with one PNG/NRRD/NIfTI per
      structure, or a single file) named through ``mapping``.  When ``pred`` is a folder
      of results, ``gt`` is a folder holding, per case, a file or folder of the same
      stem (``pred/s01/`` or ``pred/s01.seg.nrrd`` <-> ``gt/s01.seg.nrrd`` or
      ``gt/s01/``); unmatched cases are listed in ``notes``.
    * ``vs_3d``: ``gt`` is a 3D segmentation (TotalSegmentator multilabel file with
      ``classmap``, or a subject/``segmentations`` folder) of the CT the prediction was
      made from.  It is projected with :func:`ts2d_xray.projection.project_labels` at the
      prediction's pixel spacing and display convention (as TS2D made its training and
      test masks); its grid comes from the labels' own geometry, so the CT itself is not
      needed.  Every class of the labels' TotalSegmentator version that the labels lack
      counts as absent (empty); v1 labels are renamed to v2 classes when the prediction
      uses v2 names.

    Grids: metrics are computed on the ground truth's grid.  The prediction is brought
    onto it by :func:`ts2d_xray.evaluate.align.align_masks` (exact flips/transposes, then
    nearest neighbour where shape, spacing or position differ), or refused with an
    error naming both files.  Masks without a patient frame (PNG/JPEG: no spacing; 2D
    NRRD/NIfTI: spacing only) take the other side's plane when their shapes match, and
    are refused otherwise.

    Structures: ``structures`` (catalog or derived names), else every ground-truth mask
    with a catalog name (after ``mapping``; other names are skipped with a note) that the
    prediction can form.  With ``vs_3d``: every catalog structure of the prediction
    that the labels' version has.

    Args:
        pred, gt: See above.
        mapping: YAML file or dict from the ground truth's mask names to structures
            (:func:`read_mapping`).
        structures: Names to evaluate (default: see above).
        vs_3d: Compare with a 3D segmentation (see above).
        classmap: ``"v1"``, ``"v2"`` or a file, for a multilabel 3D map (``vs_3d``).
        min_area_mm2: Presence threshold (mm^2).

    Returns:
        :class:`EvaluationReport`.

    Raises:
        InputError: Missing or unreadable inputs, a bad mapping, grids that cannot be
            aligned, nothing in common to evaluate.
    """
    from ts2d_xray.evaluate.cases import evaluate_cases

    if mapping is not None:
        if vs_3d:
            raise ValueError("a mapping renames 2D ground-truth masks; 3D labels (vs_3d) use catalog names")
        mapping = read_mapping(mapping) if isinstance(mapping, (str, PathLike)) else check_mapping(mapping)
    if structures is not None:
        structures = tuple(dict.fromkeys(structures))
        for name in structures:
            catalog.expand(name)  # ValueError with suggestions for an unknown name
    if not min_area_mm2 >= 0:
        raise ValueError(f"min_area_mm2 must be >= 0, got {min_area_mm2}")
    scores, notes = evaluate_cases(pred, gt, mapping=mapping, structures=structures, vs_3d=vs_3d,
                                   classmap=classmap, min_area_mm2=min_area_mm2)
    return EvaluationReport(tuple(scores), _describe(pred), _describe(gt), min_area_mm2, tuple(notes))


def _describe(item) -> str:
    if isinstance(item, (str, PathLike)):
        return str(item)
    source = getattr(item, "source", None)
    return str(source) if source else type(item).__name__
