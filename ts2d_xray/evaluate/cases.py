"""Evaluation: :func:`evaluate` pairs cases, reads both sides, brings them onto one grid and scores them.

Each case goes through these steps:

1. **Pair**: a single prediction with the ground truth, or each result of a folder with
   the ground truth's file or folder of the same stem.
2. **Read**: the prediction as 2D masks; the ground truth as 2D masks renamed by the
   mapping, or (``vs_3d``) as 3D labels projected on the prediction's spacing and
   display convention.
3. **One grid**: the ground truth's plane (or the prediction's, for masks without a
   patient frame); the prediction is aligned onto it (:mod:`ts2d_xray.evaluate.align`).
4. **Structures**: the requested ones, else those both sides can form; then scored
   (:func:`ts2d_xray.evaluate.metrics.score_masks`).

Inputs:

* ``pred``: a result (a :class:`~ts2d_xray.Result`, :class:`~ts2d_xray.image.Masks`,
  or anything :func:`~ts2d_xray.io.mask_sources.read_mask_source` reads: a
  ``.seg.nrrd``, our NIfTI + JSON masks, a result folder of ``ts2d-xray
  segment``/``project``), or a folder of such results, one per case.
* ``gt``: the same kinds, or a user's masks (a folder with one PNG/NRRD/NIfTI per
  structure, or a single file) named through ``mapping``.  When ``pred`` is a folder
  of results, ``gt`` is a folder holding, per case, a file or folder of the same
  stem (``pred/s01/`` or ``pred/s01.seg.nrrd`` <-> ``gt/s01.seg.nrrd`` or
  ``gt/s01/``); unmatched cases are listed in the report's ``notes``.
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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence, Union

import numpy as np

from ts2d_xray import labels as catalog
from ts2d_xray.errors import InputError
from ts2d_xray.evaluate.align import align_masks
from ts2d_xray.evaluate.mapping import check_mapping, read_mapping
from ts2d_xray.evaluate.metrics import HD95Variant, StructureScore, check_hd95_variant, score_masks
from ts2d_xray.evaluate.report import EvaluationReport
from ts2d_xray.image import LabelMap, Masks
from ts2d_xray.io.mask_sources import (MASK_FILE_SUFFIXES, RESULT_MASK_NAMES, MaskSource, is_multilabel_file,
                                       read_mask_source, result_masks)
from ts2d_xray.io.volume import read_labels
from ts2d_xray.kinds import format_stem, format_suffix
from ts2d_xray.measure import MIN_PRESENT_AREA_MM2
from ts2d_xray.projection import project_labels

if TYPE_CHECKING:
    from ts2d_xray.segment.result import Result

__all__ = ["evaluate", "evaluate_cases", "pair_cases"]

#: A prediction: a path (file, result folder, or folder of results), masks, or a Result.
Prediction = Union[str, PathLike, Masks, MaskSource, "Result"]
#: A ground truth: as a prediction, or (``vs_3d``) 3D labels.
GroundTruth = Union[str, PathLike, Masks, MaskSource, LabelMap, "Result"]
ClassMap = Union[str, PathLike, Mapping[int, str], None]

log = logging.getLogger(__name__)

# Files of a ground-truth folder that can hold one case.
_CASE_SUFFIXES = (".seg.nrrd", *MASK_FILE_SUFFIXES)
# Notes list at most this many names, then a count.
_NOTE_NAMES = 8


@dataclass(frozen=True)
class _Case:
    name: str
    pred: Prediction
    gt: GroundTruth


def _stem(path: Path) -> str:
    if path.name in RESULT_MASK_NAMES and path.parent.name:
        return path.parent.name  # the masks of a result folder: the case is the folder
    return format_stem(path) if path.is_file() else path.name


def _is_result(path: Path) -> bool:
    """A path holding one case's predicted masks."""
    if path.is_file():
        return format_suffix(path) in _CASE_SUFFIXES
    return result_masks(path) is not None or (path / "structures.json").is_file()


def _names(names: Sequence[str]) -> str:
    names = list(names)
    more = f" and {len(names) - _NOTE_NAMES} more" if len(names) > _NOTE_NAMES else ""
    return ", ".join(names[:_NOTE_NAMES]) + more


def pair_cases(pred: Prediction, gt: GroundTruth) -> tuple[list[_Case], list[str]]:
    """Cases to evaluate, and notes on cases without a partner."""
    if not isinstance(pred, (str, PathLike)):
        return [_Case("case", pred, gt)], []
    pred = Path(pred)
    if not pred.exists():
        raise InputError(pred, "no such file or folder")
    if pred.is_file() or _is_result(pred):
        return [_Case(_stem(pred), pred, gt)], []
    items = sorted(p for p in pred.iterdir() if not p.name.startswith(".")
                   and (p.is_dir() and _is_result(p) or is_multilabel_file(p)))
    if not items:  # a user's folder of one mask per structure: one case
        return [_Case(pred.name, pred, gt)], []
    if not isinstance(gt, (str, PathLike)) or not Path(gt).is_dir():
        raise InputError(gt, f"{pred} holds {len(items)} results, so the ground truth must be a folder with one "
                             "file or folder per case, named as the results")
    gt = Path(gt)
    if not gt.exists():
        raise InputError(gt, "no such folder")
    candidates: dict[str, list[Path]] = {}
    for p in gt.iterdir():
        if not p.name.startswith(".") and (p.is_dir() or format_suffix(p) in _CASE_SUFFIXES):
            candidates.setdefault(_stem(p), []).append(p)
    cases, missing = [], []
    for item in items:
        stem = _stem(item)
        found = candidates.get(stem, [])
        if len(found) > 1:
            raise InputError(gt, f"several ground truths for case {stem!r}: {', '.join(sorted(p.name for p in found))}")
        if found:
            cases.append(_Case(stem, item, found[0]))
        else:
            missing.append(stem)
    if not cases:
        raise InputError(gt, f"holds no ground truth named as a result of {pred} (e.g. {_stem(items[0])!r})")
    notes = [f"{len(missing)} results without a ground truth in {gt}: {_names(missing)}"] if missing else []
    extra = sorted(set(candidates) - {c.name for c in cases})
    if extra:
        notes.append(f"{len(extra)} ground truths without a result in {pred}: {_names(extra)}")
    return cases, notes


# --- reading ----------------------------------------------------------------------------
def _read_2d(item: Prediction) -> MaskSource:
    if isinstance(item, MaskSource):
        return item
    if isinstance(item, Masks):
        return MaskSource(item, Path("masks"))
    masks = getattr(item, "masks", None)  # a Result
    if isinstance(masks, Masks):
        return MaskSource(masks, Path(getattr(item, "source", None) or "result"))
    if isinstance(item, (str, PathLike)):
        return read_mask_source(item)
    raise TypeError(f"expected a path, Masks or Result, got {type(item).__name__}")


def _renamed(src: MaskSource, mapping: Mapping[str, str] | None, used: set[str]) -> tuple[Masks, list[str]]:
    """Ground-truth masks under catalog names: mapped, kept (catalog names) or skipped (noted)."""
    masks, notes = src.masks, []
    by_key = {name: name for name in masks.names}
    by_key.update({file: name for name, file in src.files.items()})
    renames: dict[str, str] = {}
    for key, target in (mapping or {}).items():
        if key in by_key:
            renames[by_key[key]] = target
            used.add(key)
    names, keep = [], []
    for k, name in enumerate(masks.names):
        new = renames.get(name, name)
        if name not in renames and not catalog.is_known(name):
            continue
        if new in names:
            raise InputError(src.path, f"two masks stand for {new!r} after the mapping: "
                                       f"{masks.names[keep[names.index(new)]]} and {name}")
        names.append(new)
        keep.append(k)
    skipped = [n for n in masks.names if n not in renames and not catalog.is_known(n)]
    if skipped:
        notes.append(f"{src.path}: {len(skipped)} masks are not catalog structures and not in the mapping, "
                     f"skipped: {_names(skipped)}")
    return Masks(masks.array[keep], tuple(names), masks.plane), notes


def _on_one_grid(pred: MaskSource, gt: MaskSource, gt_masks: Masks) -> tuple[Masks, Masks]:
    """Prediction and ground truth on one plane (the ground truth's when it has one)."""
    if gt.geometry != "plane":
        if pred.geometry != "plane":
            raise InputError(gt.path, f"neither it nor {pred.path} gives a patient frame (spacing and orientation); "
                                      "one side must be a result of ts2d-xray or a NRRD/NIfTI with geometry")
        _check_borrowed(gt, pred)
        return pred.masks, Masks(gt_masks.array, gt_masks.names, pred.masks.plane)
    if pred.geometry != "plane":
        _check_borrowed(pred, gt)
        return Masks(pred.masks.array, pred.masks.names, gt_masks.plane), gt_masks
    aligned = align_masks(pred.masks, gt_masks.plane, source=str(pred.path), target_name=str(gt.path))
    return aligned, gt_masks


def _check_borrowed(src: MaskSource, other: MaskSource) -> None:
    """Masks without a patient frame take ``other``'s plane: the shapes (and any spacing) must agree."""
    mine, theirs = src.masks.plane, other.masks.plane
    what = "PNG/JPEG masks carry no pixel spacing" if src.geometry == "none" else "2D files carry no patient frame"
    if mine.shape != theirs.shape:
        raise InputError(src.path, f"{what}, so they must have the shape of {other.path}: they are "
                                   f"{mine.shape[1]}x{mine.shape[0]} px, it is {theirs.shape[1]}x{theirs.shape[0]} px")
    if src.geometry == "spacing" and not np.allclose(mine.spacing, theirs.spacing, rtol=1e-3):
        raise InputError(src.path, f"pixel spacing {mine.spacing[0]:g}x{mine.spacing[1]:g} mm (row x column) differs "
                                   f"from {other.path}'s {theirs.spacing[0]:g}x{theirs.spacing[1]:g} mm")
    log.info("%s: %s; taking the plane of %s", src.path, what, other.path)


def _projected_gt(item: GroundTruth, pred: MaskSource, classmap: ClassMap) -> tuple[Masks, set[str] | None, str]:
    """3D labels projected on the prediction's spacing and display, and the classes they annotate.

    Returns the masks (v2 names when the prediction uses them), the set of classes whose
    absence means "not in this scan" (None: only the labels' own), and a description.
    """
    plane = pred.masks.plane
    if pred.geometry != "plane" or plane.origin is None:
        raise InputError(pred.path, "has no position in the patient; comparing with 3D labels needs a result made "
                                    "from the CT (ts2d-xray segment CT, or ts2d-xray project)")
    labels = item if isinstance(item, LabelMap) else read_labels(item, classmap=classmap)
    source = labels.source or "3D labels"
    display = plane.display or "radiograph"  # any other orientation is aligned afterwards
    masks = project_labels(labels, spacing=plane.spacing, display=display)
    names = set(masks.names)
    version = next((v for v in ("v2", "v1") if names <= set(catalog.classes(v))), None)
    v1_only = {n for n in names if catalog.structure(n).v2_id is None} if version else set()
    pred_classes = {n for n in pred.masks.names if catalog.is_known(n) and n not in catalog.derived_names()}
    universe = None
    if version == "v1" and v1_only and not (v1_only & pred_classes):
        masks = masks.to_v2()
        universe = {catalog.v1_to_v2(n) for n in catalog.classes("v1")} - {None}
    elif version:
        # Classes of every version the names fit (v1 and v2 share most names).
        fits = [v for v in ("v1", "v2") if names <= set(catalog.classes(v))]
        universe = set.intersection(*(set(catalog.classes(v)) for v in fits))
    return masks, universe, str(source)


def _completed(masks: Masks, names: Sequence[str]) -> Masks:
    """``masks`` with an empty mask for each of ``names`` it lacks."""
    missing = [n for n in dict.fromkeys(names) if n not in masks.names]
    if not missing:
        return masks
    empty = np.zeros((len(missing), *masks.plane.shape), bool)
    return Masks(np.concatenate([masks.array, empty]), masks.names + tuple(missing), masks.plane)


# --- scoring ----------------------------------------------------------------------------
def _formable(masks: Masks, name: str) -> bool:
    if name in masks.names:
        return True
    try:
        return any(m in masks.names for m in catalog.expand(name))
    except ValueError:
        return False


def evaluate_cases(pred: Prediction, gt: GroundTruth, *, mapping: Mapping[str, str] | None,
                   structures: Sequence[str] | None, vs_3d: bool, classmap: ClassMap,
                   min_area_mm2: float, hd95_variant: HD95Variant = "pooled") -> tuple[list[StructureScore], list[str]]:
    """Scores and notes of every case (see :func:`evaluate`; arguments checked there)."""
    cases, notes = pair_cases(pred, gt)
    scores, used_keys, evaluated = [], set(), set()
    for case in cases:
        p = _read_2d(case.pred)
        if vs_3d:
            g_masks, universe, g_name = _projected_gt(case.gt, p, classmap)
            g = MaskSource(g_masks, Path(g_name))
            names = list(structures) if structures is not None else [
                n for n in p.masks.names if catalog.is_known(n) and (universe is None or n in universe)]
            outside = [n for n in p.masks.names if catalog.is_known(n) and n not in names]
            if structures is None and outside:
                notes.append(f"{case.name}: classes the labels' TotalSegmentator version does not have, skipped: "
                             f"{_names(outside)}")
            if universe is not None:  # the labels annotate every class of their version: absent = empty
                g_masks = _completed(g_masks, [m for n in names for m in catalog.expand(n) if m in universe])
        else:
            g = _read_2d(case.gt)
            g_masks, more = _renamed(g, mapping, used_keys)
            notes += more
            names = list(structures) if structures is not None else list(g_masks.names)
        p_masks, g_masks = _on_one_grid(p, g, g_masks)
        missing_gt = [n for n in names if not _formable(g_masks, n)]
        missing_pred = [n for n in names if n not in missing_gt and not _formable(p_masks, n)]
        if missing_gt:
            notes.append(f"{case.name}: not in the ground truth {g.path}: {_names(missing_gt)}")
        if missing_pred:
            notes.append(f"{case.name}: not predicted in {p.path}: {_names(missing_pred)}")
        names = [n for n in names if n not in missing_gt and n not in missing_pred]
        evaluated.update(names)
        scores += score_masks(p_masks, g_masks, names, case=case.name, min_area_mm2=min_area_mm2,
                              hd95_variant=hd95_variant)
    unused = [k for k in mapping or {} if k not in used_keys]
    if unused:
        raise InputError(gt, f"the mapping names masks that are not there: {_names(unused)}")
    if structures is not None:
        never = [n for n in structures if n not in evaluated]
        if never:
            raise InputError(gt, f"requested structures found in no case on both sides: {_names(never)}")
    if not scores:
        raise InputError(gt, f"no structure in common with {pred}" + (f" ({notes[-1]})" if notes else ""))
    return scores, notes


def evaluate(pred: Prediction, gt: GroundTruth, mapping: str | PathLike | Mapping[str, str] | None = None, *,
             structures: Sequence[str] | None = None, vs_3d: bool = False, classmap: ClassMap = None,
             min_area_mm2: float = MIN_PRESENT_AREA_MM2, hd95_variant: HD95Variant = "pooled") -> EvaluationReport:
    """Compare predicted masks with a ground truth, per structure.

    What ``pred`` and ``gt`` may be, how they are paired and brought onto one grid, and
    which structures are scored: see :mod:`ts2d_xray.evaluate.cases`.  The metrics are
    defined in :mod:`ts2d_xray.evaluate.metrics`.

    Args:
        pred: A result, masks, a result file or folder, or a folder of results.
        gt: The same kinds, a user's masks, or (``vs_3d``) 3D labels.
        mapping: YAML file or dict from the ground truth's mask names to structures
            (:func:`~ts2d_xray.evaluate.read_mapping`).
        structures: Names to evaluate (default: those both sides can form).
        vs_3d: Compare with a 3D segmentation of the CT the prediction was made from.
        classmap: ``"v1"``, ``"v2"`` or a file, for a multilabel 3D map (``vs_3d``).
        min_area_mm2: Presence threshold (mm^2).
        hd95_variant: ``"pooled"`` (default): the 95th percentile of both directed
            surface distances pooled; ``"max-directed"``: the larger of the two directed
            95th percentiles, as MONAI and DeepMind's surface-distance compute HD95.

    Returns:
        :class:`~ts2d_xray.evaluate.EvaluationReport`.

    Raises:
        InputError: Missing or unreadable inputs, a bad mapping, grids that cannot be
            aligned, nothing in common to evaluate.
    """
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
    check_hd95_variant(hd95_variant)
    scores, notes = evaluate_cases(pred, gt, mapping=mapping, structures=structures, vs_3d=vs_3d,
                                   classmap=classmap, min_area_mm2=min_area_mm2, hd95_variant=hd95_variant)
    return EvaluationReport(tuple(scores), _describe(pred), _describe(gt), min_area_mm2, tuple(notes), hd95_variant)


def _describe(item: Prediction | GroundTruth) -> str:
    if isinstance(item, (str, PathLike)):
        return str(item)
    source = getattr(item, "source", None)
    return str(source) if source else type(item).__name__
