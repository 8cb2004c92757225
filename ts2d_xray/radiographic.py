"""Radiographic structures: what a frontal chest radiograph shows, derived from projected labels.

A TotalSegmentator projection gives the *whole* projected lung: every pixel whose ray
crosses a lobe.  Chest radiology measures the *radiographic lung fields* instead (JSRT/SCR,
Montgomery, Shenzhen, CheXmask, Wingspan): the part of each lung that is visible on the
film.  Lung tissue behind the heart and the mediastinum, and in the posterior recesses
behind the diaphragm dome, lies on rays that also cross dense soft tissue; the film shows
that tissue there, not lung.

Definition (:func:`derive_lung_fields`), per pixel of a frontal 2D view:

    lung_field_<side> = largest region of (lung_<side> AND NOT hidden)
    hidden            = some structure of :data:`HIDING` crosses the ray for more than
                        :data:`HIDING_MIN_MM` mm

``lung_<side>`` is the projection of that side's lobes (the masks' own threshold).  Each
field keeps its largest 8-connected region: a film shows one lung field per side, not the
specks of lung that peek between mediastinal vessels.
:data:`HIDING` holds the heart, the mediastinum (great vessels, trachea, oesophagus) and
the organs below the diaphragm (liver, spleen, stomach, bowel, kidneys, ...); the
projected top of the liver and spleen is the diaphragm dome a film shows.  Not hiding:
bones (lung is read through ribs, clavicles and spine), the neck and arm vessels (the
apices are read through them).  The path-length threshold keeps a thin sliver (the
tangent ray at the edge of the heart or the dome) from hiding lung.  4 mm was chosen by
measurement (``docs/lung_fields.md``, ``scripts/lung_field_stats.py``): it keeps the share
of the heart inside the lung fields of DRRs (0.6 %) at the level of the Wingspan manual
masks (median 0.2 %, 90th percentile 0.65 %), where 8 mm gives 2 % and 15 mm 7 %; the
other shape statistics hardly change below 15 mm.

Everything is 2D and geometry-free: masks on one :class:`~ts2d_xray.image.Plane`, in any
display convention (the sides are named by the patient, not by the image).  Callers that
have path lengths (synth's DRRs) or voxel counts (coronal projections) threshold the
hiding structures at :data:`HIDING_MIN_MM` themselves and pass the masks.

Example:
    >>> import numpy as np
    >>> from ts2d_xray.image import Masks, Plane
    >>> plane = Plane(shape=(1, 3), spacing=(1.0, 1.0))
    >>> names = ("lung_upper_lobe_right", "lung_upper_lobe_left")
    >>> lobes = Masks(np.array([[[1, 1, 0]], [[0, 0, 0]]], bool), names, plane)
    >>> hiding = Masks(np.array([[[0, 1, 1]]], bool), ("heart",), plane)
    >>> derive_lung_fields(lobes, hiding).array.astype(int).tolist()
    [[[1, 0, 0]], [[0, 0, 0]]]
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ts2d_xray.image import Masks
from ts2d_xray.labels import LUNG_FIELDS, expand
from ts2d_xray.measure import largest_component

__all__ = [
    "HIDING",
    "HIDING_MIN_MM",
    "LUNGS",
    "derive_lung_fields",
    "hidden",
    "lung_fields_labelled",
]

#: Lung field -> the lung (a union of lobes, see :func:`ts2d_xray.labels.expand`) it is the visible part of.
LUNGS: dict[str, str] = {"lung_field_right": "lung_right", "lung_field_left": "lung_left"}

#: v2 classes that hide the lung behind or in front of them on a frontal film.
HIDING: tuple[str, ...] = (
    # heart
    "heart", "atrial_appendage_left", "pulmonary_vein",
    # mediastinum
    "aorta", "superior_vena_cava", "inferior_vena_cava", "brachiocephalic_trunk",
    "brachiocephalic_vein_left", "brachiocephalic_vein_right", "trachea", "esophagus",
    # below the diaphragm
    "liver", "spleen", "stomach", "gallbladder", "pancreas", "duodenum", "small_bowel", "colon",
    "kidney_right", "kidney_left", "adrenal_gland_right", "adrenal_gland_left", "portal_vein_and_splenic_vein",
)

#: Path length (mm) a ray must cross inside one hiding structure for it to hide the lung there.
HIDING_MIN_MM = 4.0


def hidden(hiding: Masks) -> np.ndarray:
    """``(H, W)`` bool: pixels where a structure of :data:`HIDING` hides the lung.

    Args:
        hiding: Masks of hiding structures (v2 names; others are ignored), each already
            thresholded at :data:`HIDING_MIN_MM` of path length.
    """
    rows = [hiding.names.index(n) for n in HIDING if n in hiding.names]
    if not rows:
        return np.zeros(hiding.plane.shape, dtype=bool)
    return np.any(hiding.array[rows], axis=0)


def derive_lung_fields(masks: Masks, hiding: Masks) -> Masks:
    """The radiographic lung fields of a frontal view (see the module docstring).

    Args:
        masks: Projected masks holding each side's lobes (v2 or v1 lobe names, or
            ``lung_right``/``lung_left`` themselves); a side without any gives an empty
            field.
        hiding: Masks of the :data:`HIDING` structures on the same plane, each at
            :data:`HIDING_MIN_MM` (see :func:`hidden`).

    Returns:
        :class:`Masks` ``(2, H, W)`` named :data:`ts2d_xray.labels.LUNG_FIELDS`
        (right, left), on ``masks.plane``.

    Raises:
        ValueError: ``hiding`` is on a plane of another shape.
    """
    if hiding.plane.shape != masks.plane.shape:
        raise ValueError(f"hiding masks are {hiding.plane.shape} px, the lung masks {masks.plane.shape} px")
    covered = hidden(hiding)
    fields = np.zeros((len(LUNG_FIELDS), *masks.plane.shape), dtype=bool)
    for k, name in enumerate(LUNG_FIELDS):
        lung = _lung(masks, LUNGS[name])
        if lung is not None:
            fields[k] = largest_component(lung & ~covered)
    return Masks(fields, LUNG_FIELDS, masks.plane)


def _lung(masks: Masks, lung: str) -> np.ndarray | None:
    members = [m for m in (lung, *expand(lung)) if m in masks.names]
    if not members:
        return None
    return np.any(masks.array[[masks.names.index(m) for m in members]], axis=0)


def lung_fields_labelled(labelled: Iterable[str]) -> bool:
    """Whether labels that cover the v2 classes ``labelled`` (empty or not) define the lung fields.

    They do when they label every lobe of both lungs and every :data:`HIDING` structure;
    otherwise an unlabelled heart or liver would leave lung fields that are too large.
    """
    have = set(labelled)
    needed = {m for lung in LUNGS.values() for m in expand(lung)} | set(HIDING)
    return needed <= have
