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
from ts2d_xray.labels import HEART_SILHOUETTE

__all__ = [
    "BODY_REGIONS",
    "LEG_FEMUR_MIN_MM",
    "MIN_PRESENT_AREA_MM2",
    "HEARTS",
    "LUNG_FIELDS",
    "REGION_MARKERS",
    "body_regions",
    "cardiothoracic_ratio",
    "heart_name",
    "heart_silhouette",
    "horizontal_line",
    "largest_component",
    "lung_field_names",
    "lung_fields",
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
#: Structures that lie within one body region (TotalSegmentator v1 and v2 names, and the
#: radiographic structures of :mod:`ts2d_xray.labels`).  An image covers a region when
#: at least one of its markers is present.  Structures that span regions (aorta,
#: esophagus, colon, spinal cord, autochthon muscles) mark none.
REGION_MARKERS: Mapping[str, tuple[str, ...]] = {
    "head": ("brain", "skull", "face"),
    "neck": (*_VERTEBRAE["neck"], "thyroid_gland", "common_carotid_artery_left", "common_carotid_artery_right"),
    "thorax": (*_VERTEBRAE["thorax"], "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
               "lung_middle_lobe_right", "lung_lower_lobe_right", "heart", "heart_myocardium", "heart_atrium_left",
               "heart_ventricle_left", "heart_atrium_right", "heart_ventricle_right", "pulmonary_artery",
               "pulmonary_vein", "atrial_appendage_left", "superior_vena_cava", "brachiocephalic_trunk",
               "brachiocephalic_vein_left", "brachiocephalic_vein_right", "trachea", "sternum",
               "lung_field_right", "lung_field_left", HEART_SILHOUETTE,
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
    # Row and column profiles of every mask at once: area, box and centroid follow from
    # them exactly, without listing each mask's pixels.
    row_counts = masks.array.sum(axis=2, dtype=np.int64)  # (K, H)
    col_counts = masks.array.sum(axis=1, dtype=np.int64)  # (K, W)
    row_index, col_index = np.arange(row_counts.shape[1]), np.arange(col_counts.shape[1])
    out = {}
    for name, by_row, by_col in zip(masks.names, row_counts, col_counts):
        area_px = int(by_row.sum())
        entry: dict[str, Any] = {"present": bool(area_px * row_sp * col_sp >= MIN_PRESENT_AREA_MM2),
                       "area_mm2": round(float(area_px * row_sp * col_sp), 3), "area_px": area_px,
                       "bbox_px": None, "bbox_mm": None, "centroid_px": None, "centroid_mm": None,
                       "centroid_lps": None}
        if area_px:
            rows, cols = np.flatnonzero(by_row), np.flatnonzero(by_col)
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
            rc, cc = int(by_row @ row_index) / area_px, int(by_col @ col_index) / area_px
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


#: Lung field names, by preference: the radiographic lung fields when a model has them,
#: else each side's lobes (a union, see :func:`ts2d_xray.labels.expand`).
LUNG_FIELDS: tuple[tuple[str, str], ...] = (("lung_field_right", "lung_field_left"), ("lung_right", "lung_left"))


def _lung_field_pair(masks: Masks) -> tuple[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None:
    """The first pair of :data:`LUNG_FIELDS` the masks give, with its two masks."""
    for right, left in LUNG_FIELDS:
        try:
            return (right, left), (masks.mask(right), masks.mask(left))
        except (KeyError, ValueError):  # not among the masks, or unknown to the catalog
            continue
    return None


def lung_fields(masks: Masks) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``(right, left)`` lung field masks (see :data:`LUNG_FIELDS`), or None when a side has none."""
    found = _lung_field_pair(masks)
    return None if found is None else found[1]


def lung_field_names(masks: Masks) -> tuple[str, str] | None:
    """The names :func:`lung_fields` takes the ``(right, left)`` lung fields from, or None."""
    found = _lung_field_pair(masks)
    return None if found is None else found[0]


#: Heart names, by preference: the radiographic heart silhouette (what a film shows and
#: radiologists draw) when a model has it, else the TotalSegmentator heart's projection.
HEARTS: tuple[str, ...] = (HEART_SILHOUETTE, "heart")


def heart_name(masks: Masks) -> str | None:
    """The name :func:`heart_silhouette` takes the heart from (see :data:`HEARTS`), or None."""
    return next((name for name in HEARTS if name in masks.names), None)


def heart_silhouette(masks: Masks) -> np.ndarray | None:
    """The heart silhouette mask (see :data:`HEARTS`), or None when the masks have no heart."""
    name = heart_name(masks)
    return None if name is None else masks.mask(name)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D mask (the mask itself when empty)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return mask.astype(bool, copy=False)
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1


def horizontal_line(mask: np.ndarray, plane: Plane) -> dict[str, Any]:
    """The widest horizontal extent of a non-empty mask, as a measurement line.

    The line spans the mask's first to last column.  Its two ends lie where the mask
    reaches those columns, often on different rows (``end_rows_px``: the median row of
    each extreme column); it is drawn at the row midway between them (``row_px``).
    Columns in mm are edges (``col_mm``: the left edge of the first column to the right
    edge of the last, from the image's left edge), rows in mm are pixel centres, as
    ``bbox_mm`` and ``centroid_mm`` of :func:`structure_stats`.
    """
    row_sp, col_sp = plane.spacing
    rows, cols = np.nonzero(mask)
    c0, c1 = int(cols.min()), int(cols.max())
    ends = [int(np.median(rows[cols == c])) for c in (c0, c1)]
    row = (ends[0] + ends[1]) // 2
    return {"row_px": row, "col_px": [c0, c1], "end_rows_px": ends, "width_px": c1 - c0 + 1,
            "row_mm": round((row + 0.5) * row_sp, 2), "col_mm": [round(c0 * col_sp, 2), round((c1 + 1) * col_sp, 2)],
            "end_rows_mm": [round((r + 0.5) * row_sp, 2) for r in ends],
            "width_mm": round((c1 - c0 + 1) * col_sp, 2)}


def cardiothoracic_ratio(masks: Masks) -> dict[str, Any] | None:
    """The cardiothoracic ratio (CTR) of a frontal chest image from its heart and lung field masks.

    CTR = widest horizontal extent of the heart silhouette / widest inner thoracic
    width, as read on a PA chest radiograph (Danzer 1919): the heart's right-most to
    left-most border, over the thorax from the outer edge of the right lung field to
    the outer edge of the left one (the lung fields reach the inner margins of the
    ribs).  Each is the extent across the image over all rows (the two ends may lie on
    different rows), as the Wingspan authors measure it.  Each structure is measured on
    its largest connected component, so that stray islands of a predicted mask do not
    stretch the lines.  Lung fields: :func:`lung_fields`; heart: :func:`heart_silhouette`.
    Columns must run left-right in the patient (a coronal view in either display
    convention).

    Returns:
        ``{"ctr", "heart_width_mm", "thorax_width_mm", "heart_from", "lung_fields_from",
        "lines": {"heart": line, "thorax": line}}`` with each line as
        :func:`horizontal_line` gives it (pixels and mm on the masks' own grid) and the
        structures measured (``heart_from``: :func:`heart_name`; ``lung_fields_from``:
        :func:`lung_field_names`, right then left), or None when the heart or either
        lung field is absent (below :data:`MIN_PRESENT_AREA_MM2`) or the columns do not
        run left-right.
    """
    if patient_direction(masks.plane.col_dir) not in ("L", "R"):
        return None
    fields, heart = _lung_field_pair(masks), heart_silhouette(masks)  # the pair's names and masks at once
    if fields is None or heart is None:
        return None
    field_names, (right, left) = fields
    px_area = masks.plane.spacing[0] * masks.plane.spacing[1]
    if min(heart.sum(), left.sum(), right.sum()) * px_area < MIN_PRESENT_AREA_MM2:
        return None
    heart_line = horizontal_line(largest_component(heart), masks.plane)
    thorax_line = horizontal_line(largest_component(right) | largest_component(left), masks.plane)
    return {"ctr": round(heart_line["width_px"] / thorax_line["width_px"], 4),
            "heart_width_mm": heart_line["width_mm"], "thorax_width_mm": thorax_line["width_mm"],
            "heart_from": heart_name(masks), "lung_fields_from": list(field_names),
            "lines": {"heart": heart_line, "thorax": thorax_line}}
