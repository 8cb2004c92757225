"""Measurements of the report: areas, boxes and centroids in mm, body regions, CTR."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.measure import (
    LEG_FEMUR_MIN_MM,
    MIN_PRESENT_AREA_MM2,
    body_regions,
    cardiothoracic_ratio,
    structure_stats,
)
from ts2d_xray.segment.result import Result

#: A coronal CT-projection plane: radiograph display, 2 mm rows, 1 mm columns, origin known.
PLANE = Plane((100, 80), (2.0, 1.0), col_dir=(1.0, 0.0, 0.0), row_dir=(0.0, 0.0, -1.0), origin=(-40.0, 10.0, 500.0))


def masks_of(**boxes) -> Masks:
    """Masks with one box per structure: name=(row0, row1, col0, col1), end-exclusive."""
    array = np.zeros((len(boxes), *PLANE.shape), bool)
    for k, (r0, r1, c0, c1) in enumerate(boxes.values()):
        array[k, r0:r1, c0:c1] = True
    return Masks(array, tuple(boxes), PLANE)


def test_area_box_and_centroid_in_mm_and_lps():
    stats = structure_stats(masks_of(liver=(10, 20, 30, 50), spleen=(0, 0, 0, 0)))
    liver = stats["liver"]
    assert liver["area_px"] == 200 and liver["area_mm2"] == 400.0 and liver["present"]
    assert liver["bbox_px"] == [10, 30, 19, 49]
    assert liver["bbox_mm"] == [20.0, 30.0, 40.0, 50.0]  # from the image's top-left edge
    assert liver["centroid_px"] == [14.5, 39.5] and liver["centroid_mm"] == [30.0, 40.0]
    # LPS: origin + 14.5 rows x 2 mm toward the feet + 39.5 columns x 1 mm toward the patient's left.
    assert liver["centroid_lps"] == [-0.5, 10.0, 471.0]
    assert stats["spleen"] == {**stats["spleen"], "present": False, "area_mm2": 0.0, "bbox_mm": None,
                               "centroid_lps": None}


def test_tiny_masks_are_not_present():
    pixels = int(MIN_PRESENT_AREA_MM2 // 2) - 1  # 2 mm^2 pixels
    stats = structure_stats(masks_of(heart=(0, 1, 0, pixels)))
    assert stats["heart"]["area_px"] == pixels and not stats["heart"]["present"]


def test_body_regions_head_to_feet_from_markers():
    masks = masks_of(vertebrae_L1=(40, 50, 35, 45), liver=(30, 50, 10, 30), lung_upper_lobe_left=(0, 20, 50, 70),
                     aorta=(0, 60, 40, 45))
    regions = body_regions(masks)
    assert list(regions) == ["thorax", "abdomen"]
    assert regions["abdomen"] == ["vertebrae_L1", "liver"] and regions["thorax"] == ["lung_upper_lobe_left"]


def test_legs_need_a_long_femur():
    rows_short = int(LEG_FEMUR_MIN_MM / PLANE.spacing[0]) - 10  # femoral heads of a pelvic scan
    short = body_regions(masks_of(femur_left=(0, rows_short, 10, 20), hip_left=(0, 10, 10, 30)))
    assert list(short) == ["pelvis"]
    long = body_regions(masks_of(femur_left=(0, 90, 10, 20), hip_left=(0, 10, 10, 30)))
    assert list(long) == ["pelvis", "legs"]


def test_cardiothoracic_ratio_from_heart_and_lungs():
    # Lungs: columns 10-29 and 50-69 at rows 10-40 (thorax 60 mm wide); heart: columns 30-59 (30 mm).
    masks = masks_of(heart=(30, 50, 30, 60), lung_upper_lobe_right=(10, 40, 10, 30),
                     lung_upper_lobe_left=(10, 40, 50, 70))
    ctr = cardiothoracic_ratio(masks)
    assert {k: ctr[k] for k in ("ctr", "heart_width_mm", "thorax_width_mm")} == \
        {"ctr": 0.5, "heart_width_mm": 30.0, "thorax_width_mm": 60.0}
    # The measurement lines: columns (edges in mm), rows (centres in mm, 2 mm rows) of their ends.
    assert ctr["lines"]["heart"] == {"row_px": 39, "col_px": [30, 59], "end_rows_px": [39, 39], "width_px": 30,
                                     "row_mm": 79.0, "col_mm": [30.0, 60.0], "end_rows_mm": [79.0, 79.0],
                                     "width_mm": 30.0}
    assert ctr["lines"]["thorax"]["col_px"] == [10, 69] and ctr["lines"]["thorax"]["row_px"] == 24
    assert cardiothoracic_ratio(masks_of(heart=(30, 50, 30, 60))) is None  # no lungs
    lateral = Masks(masks.array, masks.names, Plane(PLANE.shape, PLANE.spacing, col_dir=(0.0, -1.0, 0.0)))
    assert cardiothoracic_ratio(lateral) is None


def test_result_report_is_json_and_has_ctr_for_radiographs():
    masks = masks_of(heart=(30, 50, 30, 60), lung_upper_lobe_right=(10, 40, 10, 30),
                     lung_upper_lobe_left=(10, 40, 50, 70))
    image = Image2D(np.zeros((1, *PLANE.shape), np.float32), PLANE, ("xray",))
    scores = {n: {"confidence": 0.9, "max_probability": 0.99} for n in masks.names}
    report = Result(masks, image, "radiograph", "m", "x.dcm", scores, {"total": 1.0}).report()
    assert json.loads(json.dumps(report)) == report
    assert report["cardiothoracic_ratio"]["ctr"] == 0.5
    assert report["present"] == ["heart", "lung_upper_lobe_right", "lung_upper_lobe_left"]
    assert report["body_regions"] == {"thorax": ["lung_upper_lobe_left", "lung_upper_lobe_right", "heart"]}
    assert report["structures"]["heart"]["confidence"] == 0.9
    assert report["image"]["display"] == "radiograph"
    projection = Result(masks, Image2D(np.zeros((2, *PLANE.shape), np.float32), PLANE, ("mean", "max")),
                        "projection", "m").report()
    assert projection["cardiothoracic_ratio"] is None


@pytest.mark.parametrize("name", ["lungs", "lung_left"])
def test_result_mask_accepts_derived_names(name):
    masks = masks_of(lung_upper_lobe_left=(10, 40, 50, 70), lung_lower_lobe_left=(40, 50, 50, 70))
    result = Result(masks, Image2D(np.zeros((1, *PLANE.shape), np.float32), PLANE, ("xray",)), "radiograph", "m")
    assert result.mask(name).sum() == 20 * 40


def test_ctr_measures_largest_components_and_prefers_lung_fields():
    chest = dict(heart=(30, 50, 30, 60), lung_upper_lobe_right=(10, 40, 10, 30), lung_upper_lobe_left=(10, 40, 50, 70))
    # A stray island of lung far out (column 75) does not stretch the thorax line.
    islands = masks_of(**chest, lung_lower_lobe_left=(90, 92, 75, 77))
    assert cardiothoracic_ratio(islands)["lines"]["thorax"]["col_px"] == [10, 69]
    # Radiographic lung fields, when the masks have them, are measured instead of the lobes.
    fields = masks_of(**chest, lung_field_right=(10, 40, 15, 30), lung_field_left=(10, 40, 50, 65))
    ctr = cardiothoracic_ratio(fields)
    assert ctr["lines"]["thorax"]["col_px"] == [15, 64] and ctr["ctr"] == 0.6
    assert ctr["lung_fields_from"] == ["lung_field_right", "lung_field_left"] and ctr["heart_from"] == "heart"
    assert cardiothoracic_ratio(islands)["lung_fields_from"] == ["lung_right", "lung_left"]  # the lobes, per side
    # The heart silhouette, when the masks have it, is measured instead of the heart.
    silhouette = masks_of(**chest, heart_silhouette=(30, 50, 25, 65))
    assert cardiothoracic_ratio(silhouette)["lines"]["heart"]["col_px"] == [25, 64]
    assert cardiothoracic_ratio(silhouette)["heart_from"] == "heart_silhouette"


def test_overlay_draws_the_ctr_lines(tmp_path):
    from PIL import Image

    from ts2d_xray.io.preview import draw_measure_lines

    plane = Plane((100, 100), (1.0, 1.0))
    canvas = Image.new("RGB", (200, 200))  # a display at twice the grid
    line = {"row_px": 50, "col_px": [20, 69], "end_rows_px": [40, 60]}
    draw_measure_lines(canvas, plane, [line])
    rgb = np.asarray(canvas)
    assert rgb[101, 60:130].min() == 255  # the line at row 50.5 * 2, columns 40..140
    assert rgb[101, :30].max() == 0 and rgb[101, 150:].max() == 0
    assert rgb[82, 40].min() == 255 and rgb[120, 140].min() == 255  # the ticks reach the end rows
