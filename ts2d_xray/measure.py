"""Measurements from multi-label 2D masks: areas, boxes, centroids, body regions, CTR.

Geometry follows :class:`~ts2d_xray.image.Plane`: pixel ``(row, col)`` has its centre
at ``(row * spacing[0], col * spacing[1])`` mm from the centre of pixel (0, 0) along
``row_dir`` and ``col_dir``.  Boxes and centroids are given in three frames:

* ``*_px``: ``[row, col]`` pixel indices (boxes ``[row_min, col_min, row_max, col_max]``,
  inclusive);
* ``*_mm``: mm in the image, from the top-left corner of pixel (0, 0) (the image's
  outer edge), rows down and columns right as stored;
* ``*_lps``: LPS position in mm (centroids only), where the plane's origin is known
  (CT projections); ``None`` for radiographs.

Example:
    >>> import numpy as np
    >>> from ts2d_xray.image import Masks, Plane, patient_direction
    >>> plane = Plane((10, 10), (2.0, 1.0))
    >>> m = np.zeros((1, 10, 10), bool); m[0, 2:4, 5:9] = True
    >>> stats = structure_stats(Masks(m, ("heart",), plane))["heart"]
    >>> stats["area_mm2"], stats["bbox_mm"]
    (16.0, [4.0, 5.0, 8.0, 9.0])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ts2d_xray.image import Masks, Plane, patient_direction

__all__ = [
    "BODY_REGIONS",
    "LEG_FEMUR_MIN_MM",
    "MIN_PRESENT_AREA_MM2",
    "REGION_MARKERS",
    "body_regions",
    "cardiothoracic_ratio",
    "present_structures",
    "structure_stats",
]

#: A structure counts as present when its mask covers at least this area (mm^2): about
#: 22 pixels at 1.5 mm, smaller than the smallest TotalSegmentator structure seen in a
#: coronal projection (the adrenal glands, a few hundred mm^2), larger than stray pixels.
MIN_PRESENT_AREA_MM2 = 50.0
#: Body regions, head to feet.
BODY_REGIONS: tuple[str, ...] = ("head", "neck", "thorax", "abdomen", "pelvis", "legs")
_VERTEBRAE = {
    "neck": [f"vertebrae_C{i}" for i in range(1, 8)],
    "thorax": [f"vertebrae_T{i}" for i in range(1, 13)],
    "abdomen": [f"vertebrae_L{i}" for i in range(1, 6)],
}
#: Structures that lie within one body region (TotalSegmentator v1 and v2 names).  An
#: image covers a region when at least one of its markers is present.  Structures that
#: span regions (aorta, esophagus, colon, spinal cord, autochthon muscles) mark none.
REGION_MARKERS: Mapping[str, tuple[str, ...]] = {
    "head": ("brain", "skull", "face"),
    "neck": (*_VERTEBRAE["neck"], "thyroid_gland", "common_carotid_artery_left", "common_carotid_artery_right"),
    "thorax": (*_VERTEBRAE["thorax"], "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
               "lung_middle_lobe_right", "lung_lower_lobe_right", "heart", "heart_myocardium", "heart_atrium_left",
               "heart_ventricle_left", "heart_atrium_right", "heart_ventricle_right", "pulmonary_artery",
               "pulmonary_vein", "atrial_appendage_left", "superior_vena_cava", "brachiocephalic_trunk",
               "brachiocephalic_vein_left", "brachiocephalic_vein_right", "trachea", "sternum",
               *(f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 11))),
    "abdomen": (*_VERTEBRAE["abdomen"], "liver", "spleen", "kidney_left", "kidney_right", "kidney_cyst_left",
                "kidney_cyst_right", "pancreas", "stomach", "gallbladder", "adrenal_gland_left",
                "adrenal_gland_right", "duodenum", "portal_vein_and_splenic_vein"),
    "pelvis": ("sacrum", "vertebrae_S1", "hip_left", "hip_right", "urinary_bladder", "prostate",
               "iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right",
               "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right",
               "gluteus_minimus_left", "gluteus_minimus_right"),
    "legs": ("femur_left", "femur_right"),
}
#: The legs count as covered when a femur is seen over at least this many mm head to
#: feet: a pelvic scan shows the femoral head, neck and trochanters (about 100 mm of an
#: adult femur of about 450 mm); more means the thighs are in the image.
LEG_FEMUR_MIN_MM = 150.0


def _axes_mm(plane: Plane) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(plane.row_dir, float), np.asarray(plane.col_dir, float)


def structure_stats(
    masks: Masks, probabilities: Mapping[str, Mapping[str, float | None]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per structure: ``present``, area, bounding box and centroid (see the module docstring).

    Args:
        masks: ``(K, H, W)`` masks on their plane.
        probabilities: Optional per-structure values merged into each entry (e.g.
            ``{"heart": {"confidence": 0.93}}``).

    Returns:
        ``{name: {"present", "area_mm2", "area_px", "bbox_px", "bbox_mm", "centroid_px",
        "centroid_mm", "centroid_lps"}}``; the box and centroid are ``None`` for an
        empty mask.  ``present`` is ``area_mm2 >= MIN_PRESENT_AREA_MM2``.
    """
    plane = masks.plane
    row_sp, col_sp = plane.spacing
    row_dir, col_dir = _axes_mm(plane)
    out = {}
    for name, mask in zip(masks.names, masks.array):
        rows, cols = np.nonzero(mask)
        area_px = int(rows.size)
        entry: dict[str, Any] = {"present": bool(area_px * row_sp * col_sp >= MIN_PRESENT_AREA_MM2),
                       "area_mm2": round(float(area_px * row_sp * col_sp), 3), "area_px": area_px,
                       "bbox_px": None, "bbox_mm": None, "centroid_px": None, "centroid_mm": None,
                       "centroid_lps": None}
        if area_px:
            r0, r1, c0, c1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
            rc, cc = float(rows.mean()), float(cols.mean())
            entry.update(
                bbox_px=[r0, c0, r1, c1],
                bbox_mm=[round(v, 3) for v in (r0 * row_sp, c0 * col_sp, (r1 + 1) * row_sp, (c1 + 1) * col_sp)],
                centroid_px=[round(rc, 3), round(cc, 3)],
                centroid_mm=[round((rc + 0.5) * row_sp, 3), round((cc + 0.5) * col_sp, 3)],
            )
            if plane.origin is not None:
                lps = np.asarray(plane.origin, float) + rc * row_sp * row_dir + cc * col_sp * col_dir
                entry["centroid_lps"] = [round(float(v), 3) for v in lps]
        if probabilities and name in probabilities:
            entry.update(probabilities[name])
        out[name] = entry
    return out


def _head_to_feet_extent_mm(mask: np.ndarray, plane: Plane) -> float:
    """Extent of a mask along the patient's head-feet axis, in mm (edge to edge)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return 0.0
    row_dir, col_dir = _axes_mm(plane)
    # The superior-inferior (LPS z) component of each pixel axis, per pixel step.
    z = (rows * plane.spacing[0] * row_dir[2] + cols * plane.spacing[1] * col_dir[2])
    pixel = abs(plane.spacing[0] * row_dir[2]) + abs(plane.spacing[1] * col_dir[2])
    return float(z.max() - z.min() + pixel)


def present_structures(masks: Masks, min_area_mm2: float = MIN_PRESENT_AREA_MM2) -> tuple[str, ...]:
    """Names of the structures whose mask covers at least ``min_area_mm2`` (mm^2), in mask order."""
    row_sp, col_sp = masks.plane.spacing
    area = masks.array.sum(axis=(1, 2)) * row_sp * col_sp
    return tuple(n for n, a in zip(masks.names, area) if a >= min_area_mm2)


def body_regions(masks: Masks, present: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The body regions an image covers, head to feet, each with its markers found.

    Args:
        masks: The masks (used for the femur length rule, :data:`LEG_FEMUR_MIN_MM`).
        present: Names of the present structures (default: those covering at least
            :data:`MIN_PRESENT_AREA_MM2`).

    Returns:
        ``{region: [markers present]}`` for the covered regions, in
        :data:`BODY_REGIONS` order.
    """
    present = set(present_structures(masks) if present is None else present)
    out = {}
    for region in BODY_REGIONS:
        found = [m for m in REGION_MARKERS[region] if m in present]
        if region == "legs":
            found = [m for m in found if _head_to_feet_extent_mm(masks.mask(m), masks.plane) >= LEG_FEMUR_MIN_MM]
        if found:
            out[region] = found
    return out


def cardiothoracic_ratio(masks: Masks) -> dict[str, float | int] | None:
    """The cardiothoracic ratio (CTR) of a frontal chest image from its heart and lung masks.

    CTR = widest horizontal extent of the heart / widest horizontal extent of the
    thorax, as read on a PA chest radiograph (Danzer 1919).  The heart's width is the
    extent of its mask across the image (its right-most to its left-most pixel, over
    all rows); the thorax's is the widest row of the union of both lungs (the lung
    fields reach the inner margins of the ribs).  Columns must run left-right in the
    patient (a coronal view in either display convention, rows head to feet or not).

    Returns:
        ``{"ctr", "heart_width_mm", "thorax_width_mm", "thorax_row_px"}``, or None when
        the heart or either lung is absent (below :data:`MIN_PRESENT_AREA_MM2`) or the
        columns do not run left-right.
    """
    if patient_direction(masks.plane.col_dir) not in ("L", "R"):
        return None
    try:
        heart, left, right = masks.mask("heart"), masks.mask("lung_left"), masks.mask("lung_right")
    except (KeyError, ValueError):
        return None
    px_area = masks.plane.spacing[0] * masks.plane.spacing[1]
    if min(heart.sum(), left.sum(), right.sum()) * px_area < MIN_PRESENT_AREA_MM2:
        return None
    col_sp = masks.plane.spacing[1]
    cols = np.nonzero(heart.any(axis=0))[0]
    heart_mm = float(cols.max() - cols.min() + 1) * col_sp
    lungs = left | right
    rows = np.nonzero(lungs.any(axis=1))[0]
    widths = np.zeros(lungs.shape[0])
    for r in rows:
        c = np.nonzero(lungs[r])[0]
        widths[r] = c.max() - c.min() + 1
    row = int(np.argmax(widths))
    thorax_mm = float(widths[row]) * col_sp
    return {"ctr": round(heart_mm / thorax_mm, 4), "heart_width_mm": round(heart_mm, 2),
            "thorax_width_mm": round(thorax_mm, 2), "thorax_row_px": row}
