"""Whether a segmentation may be trusted, and what it rests on: the rules of the report's ``trust``.

A model gives masks for any image, also for a knee, a dog or noise.  These rules say
when the answer should not be used, from three sources; each failed rule adds one
plain-words reason, and a flagged input gets its masks (marked) but no CTR:

* **the DICOM header** (radiographs; :func:`ts2d_xray.io.radiograph.read_radiograph`
  puts the facts into ``Image2D.meta``): ``BodyPartExamined`` not a chest
  (:data:`CHEST_BODY_PARTS`), ``ViewPosition`` lateral or oblique
  (:data:`NOT_FRONTAL_VIEWS`), ``PatientOrientation`` with an anterior or posterior
  direction (a lateral or oblique view; one along A/P is refused before segmenting,
  as no coronal plane);
* **the image** (radiographs, with a model that has the heart and both lung fields):
  no plausible pair of lung fields with a heart between them, judged in the
  radiograph display (patient's right on the image left): each lung field present and
  covering :data:`LUNG_FIELD_FRACTION` of the image, the smaller at least
  :data:`MIN_LUNG_SYMMETRY` of the larger, each on its own side of the midline between
  them (:data:`MIN_SIDE_PURITY` of its pixels), and :data:`MIN_HEART_BETWEEN` of the
  heart's pixels between the two;
* **the model's confidence**: every heart and lung structure below
  :data:`LOW_CONFIDENCE` (a mean probability barely above a 0.5 threshold).

The thresholds were set on the bundled X-ray model's masks of the 220 Wingspan chest
films, the other real chest films of the shared data, the tibia, the dog and 12 kinds
of noise and flat images (docs/models.md): over the 225 chest films where it finds a
heart, the worst values were side purity 0.78, heart between 0.76, symmetry 0.43 and a
lung field of 0.019 of the image; noise reached at most 0.60 and 0.23 in the first two,
the dog 0.08 and 0.

Assumptions are recorded, not flagged: a pixel spacing guessed from a
:data:`~ts2d_xray.io.radiograph.FALLBACK_FIELD_OF_VIEW_MM` field or not recorded (an
array input), one at the detector plane, an orientation taken without a header.  Every
mm figure of a report with ``spacing_assumed`` rests on the guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ts2d_xray.image import Masks
from ts2d_xray.measure import MIN_PRESENT_AREA_MM2, heart_silhouette, lung_fields
from ts2d_xray.orientation import Orientation

__all__ = [
    "CHEST_BODY_PARTS",
    "LOW_CONFIDENCE",
    "LUNG_FIELD_FRACTION",
    "MIN_HEART_BETWEEN",
    "MIN_LUNG_SYMMETRY",
    "MIN_SIDE_PURITY",
    "NOT_FRONTAL_VIEWS",
    "Trust",
    "assess",
]

#: BodyPartExamined words of a chest examination (DICOM defined terms and common vendor text).
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS", "HEART", "CXR"})
#: ViewPosition values of views that are not frontal, and what they are.
NOT_FRONTAL_VIEWS: Mapping[str, str] = {"LL": "lateral", "RL": "lateral", "LAT": "lateral", "LATERAL": "lateral",
                                        "LLO": "oblique", "RLO": "oblique"}
#: Each lung field covers this fraction of the image, (low, high).
LUNG_FIELD_FRACTION = (0.01, 0.4)
#: The smaller lung field's area over the larger's.
MIN_LUNG_SYMMETRY = 0.2
#: Fraction of each lung field's pixels on its own side of the midline between the two.
MIN_SIDE_PURITY = 0.7
#: Fraction of the heart's pixels between the two lung fields' median columns.
MIN_HEART_BETWEEN = 0.5
#: Confidences (mean probability inside the mask) of the heart and lung structures all
#: below this mean that the model barely sees them.
LOW_CONFIDENCE = 0.65
_HEART_AND_LUNGS = re.compile(r"^(heart|heart_silhouette|lung_.*)$")
_SPACING_TRUSTED = ("PixelSpacing", "ImagerPixelSpacing/magnification", "given", "file header")
_ORIENTATION_TRUSTED = ("PatientOrientation", "file header (LPS)")


@dataclass(frozen=True)
class Trust:
    """The verdict on one segmentation.

    Attributes:
        reasons: Why the result should not be trusted (empty: no rule failed).
        assumptions: Values that were assumed, not read from the input.
        spacing_assumed: The pixel spacing is a guess (the fallback field of view, or not
            recorded), and so is every mm figure.
        orientation_assumed: The patient orientation is assumed.
        header: The DICOM header's examination facts (``Image2D.meta``), as written.
    """

    reasons: tuple[str, ...]
    assumptions: tuple[str, ...]
    spacing_assumed: bool
    orientation_assumed: bool
    header: Mapping[str, Any]

    @property
    def flagged(self) -> bool:
        """True when a rule failed: keep the masks for a look, do not use the measurements."""
        return bool(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``flagged``, ``reasons``, ``assumptions``, ``spacing_assumed``, ``orientation_assumed``."""
        return {"flagged": self.flagged, "reasons": list(self.reasons), "assumptions": list(self.assumptions),
                "spacing_assumed": self.spacing_assumed, "orientation_assumed": self.orientation_assumed}


def assess(masks: Masks, meta: Mapping[str, Any], input_kind: str,
           scores: Mapping[str, Mapping[str, float | None]] | None = None) -> Trust:
    """Apply the rules of the module docstring to one segmentation.

    Args:
        masks: The masks on the input's grid.
        meta: The input image's ``Image2D.meta`` (empty for an array).
        input_kind: ``"ct"``, ``"projection"`` or ``"radiograph"``; the header and image
            rules apply to radiographs only (a CT's header is its geometry).
        scores: Per structure ``{"confidence": ...}`` as the Segmenter gives them.
    """
    reasons: list[str] = []
    if input_kind == "radiograph":
        reasons += header_reasons(meta)
        reasons += layout_reasons(masks)
        reasons += confidence_reasons(scores or {})
    spacing, orientation = _assumptions(meta, input_kind)
    source = meta.get("spacing_source")
    guessed = input_kind != "ct" and (source is None or str(source).startswith("fallback"))
    header = {k: meta[k] for k in ("modality", "body_part_examined", "view_position", "patient_orientation")
              if k in meta}
    return Trust(tuple(reasons), tuple(spacing + orientation), guessed, bool(orientation), header)


def header_reasons(meta: Mapping[str, Any]) -> list[str]:
    """Reasons from the DICOM header's facts (none for a file without them)."""
    reasons = []
    body_part = str(meta.get("body_part_examined", "")).upper()
    if body_part and not CHEST_BODY_PARTS & set(re.split(r"[^A-Z]+", body_part)):
        reasons.append(f"the DICOM header says BodyPartExamined {body_part!r}, not a chest")
    view = str(meta.get("view_position", "")).upper()
    if view in NOT_FRONTAL_VIEWS:
        reasons.append(f"the DICOM header says ViewPosition {view!r}: a {NOT_FRONTAL_VIEWS[view]} view, not frontal")
    orientation = [str(v).upper() for v in meta.get("patient_orientation", ())]
    if any(set(v) & {"A", "P"} for v in orientation):
        reasons.append(f"the DICOM header says PatientOrientation {'/'.join(orientation)}: not a frontal view")
    return reasons


def layout_reasons(masks: Masks) -> list[str]:
    """Reasons from the masks: no plausible pair of lung fields with a heart between them.

    None when the model has no heart or lung fields (it cannot measure a chest).
    """
    fields, heart = lung_fields(masks), heart_silhouette(masks)
    if fields is None or heart is None:
        return []
    try:
        orient = Orientation.for_display(masks.plane, "radiograph")
    except ValueError:  # not a coronal plane: nothing to judge left from right
        return ["the image is not a coronal view: lung fields cannot be told apart"]
    right, left, heart = (orient.array(m) for m in (*fields, heart))
    px_area = masks.plane.spacing[0] * masks.plane.spacing[1]
    missing = [n for n, m in (("right lung field", right), ("left lung field", left), ("heart", heart))
               if m.sum() * px_area < MIN_PRESENT_AREA_MM2]
    if missing:
        return [f"no {' and no '.join(missing)} found: not a frontal chest film, or the model failed"]
    return _lung_field_reasons(right, left) + _heart_reasons(right, left, heart)


def _lung_field_reasons(right: np.ndarray, left: np.ndarray) -> list[str]:
    """Size, symmetry and sides of the two lung fields (radiograph display)."""
    reasons = []
    low, high = LUNG_FIELD_FRACTION
    for name, m in (("right", right), ("left", left)):
        if not low <= m.mean() <= high:
            reasons.append(f"the {name} lung field covers {m.mean():.1%} of the image (a chest film: "
                           f"{low:.0%}-{high:.0%})")
    symmetry = min(right.sum(), left.sum()) / max(right.sum(), left.sum())
    if symmetry < MIN_LUNG_SYMMETRY:
        reasons.append(f"one lung field is {symmetry:.0%} of the other's area")
    col_right, col_left = np.nonzero(right)[1], np.nonzero(left)[1]
    mid = (np.median(col_right) + np.median(col_left)) / 2
    purity = min(float(np.mean(col_right < mid)), float(np.mean(col_left > mid)))
    if np.median(col_right) >= np.median(col_left) or purity < MIN_SIDE_PURITY:
        reasons.append(f"the lung fields are not one on each side ({purity:.0%} of their pixels on their own "
                       f"side, a chest film: over {MIN_SIDE_PURITY:.0%})")
    return reasons


def _heart_reasons(right: np.ndarray, left: np.ndarray, heart: np.ndarray) -> list[str]:
    """The heart between the lung fields (radiograph display)."""
    low, high = np.median(np.nonzero(right)[1]), np.median(np.nonzero(left)[1])
    cols = np.nonzero(heart)[1]
    between = float(np.mean((cols > low) & (cols < high))) if low < high else 0.0
    if between < MIN_HEART_BETWEEN:
        return [f"the heart is not between the lung fields ({between:.0%} of it is)"]
    return []


def confidence_reasons(scores: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """A reason when every heart and lung structure's confidence is below :data:`LOW_CONFIDENCE`."""
    values = [s.get("confidence") for n, s in scores.items() if _HEART_AND_LUNGS.match(n)]
    values = [v for v in values if v is not None]
    if values and max(values) < LOW_CONFIDENCE:
        return [f"the model barely sees the heart and lungs (confidence at most {max(values):.2f}, "
                f"under {LOW_CONFIDENCE})"]
    return []


def _assumptions(meta: Mapping[str, Any], input_kind: str) -> tuple[list[str], list[str]]:
    """(spacing, orientation) assumptions in words; empty lists when read from the input."""
    if input_kind == "ct":
        return [], []  # projected from the CT's own geometry
    spacing_source = meta.get("spacing_source")
    if spacing_source is None:
        spacing = ["pixel spacing not recorded (an array input: the caller's or the model's pixel size); "
                   "mm figures assume it"]
    elif str(spacing_source).startswith("fallback"):
        why = meta.get("spacing_rejected") or "the file gives none"
        spacing = [f"pixel spacing assumed ({spacing_source}; {why}): every mm figure rests on it"]
    elif spacing_source == "ImagerPixelSpacing (detector plane)":
        spacing = ["pixel spacing at the detector (no magnification factor in the file): mm figures are "
                   "larger than at the patient by the magnification, typically 5-15 %"]
    else:
        spacing = [] if spacing_source in _SPACING_TRUSTED else [f"pixel spacing from {spacing_source}"]
    orientation_source = meta.get("orientation_source")
    orientation = [] if orientation_source in _ORIENTATION_TRUSTED else [
        f"patient orientation not in the input ({orientation_source or 'not recorded'}): columns taken as "
        "toward the patient's left, rows toward the feet"]
    return spacing, orientation
