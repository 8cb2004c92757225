"""Honest output (issue 12): inputs the X-ray model should not be trusted on are flagged and get no CTR.

The acceptance runs the CURRENT bundled X-ray model on real files: the tibia, the dog, a
random-noise image and a chest film whose header says lateral are flagged; every real
adult chest film of the shared data (NIH PNGs, the chest DICOMs but the dog, the Wingspan
validation split) is not.  The rules themselves are checked on masks made here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pydicom
import pytest

from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.segment import Result, Segmenter
from ts2d_xray.segment.trust import LOW_CONFIDENCE, assess, confidence_reasons, header_reasons, layout_reasons

ROOT = Path(__file__).resolve().parents[1]
XRAY = "ts2d-xray-xray"
#: Radiograph display plane: columns toward the patient's left, rows toward the feet.
PLANE = Plane((100, 100), (2.0, 2.0), col_dir=(1.0, 0.0, 0.0), row_dir=(0.0, 0.0, -1.0))


@pytest.fixture(scope="module")
def xray() -> Iterator[Segmenter]:
    with Segmenter(XRAY, device="cpu") as seg:
        yield seg


def chest_masks(**boxes: tuple[int, int, int, int]) -> Masks:
    """Masks of boxes name=(row0, row1, col0, col1), end-exclusive, on :data:`PLANE`."""
    array = np.zeros((len(boxes), *PLANE.shape), bool)
    for k, (r0, r1, c0, c1) in enumerate(boxes.values()):
        array[k, r0:r1, c0:c1] = True
    return Masks(array, tuple(boxes), PLANE)


CHEST = {"lung_upper_lobe_right": (20, 70, 10, 40), "lung_upper_lobe_left": (20, 70, 60, 90),
         "heart": (45, 75, 35, 70)}


# --- the rules on masks made here ---------------------------------------------------------
def test_a_plausible_chest_passes_and_every_broken_layout_is_named():
    assert layout_reasons(chest_masks(**CHEST)) == []
    swapped = chest_masks(**{**CHEST, "lung_upper_lobe_right": (20, 70, 60, 90), "lung_upper_lobe_left": (20, 70, 10, 40)})
    assert any("one on each side" in r for r in layout_reasons(swapped))
    aside = chest_masks(**{**CHEST, "heart": (45, 75, 0, 10)})
    assert layout_reasons(aside) == ["the heart is not between the lung fields (0% of it is)"]
    shrunk = chest_masks(**{**CHEST, "lung_upper_lobe_left": (20, 25, 60, 75)})  # 0.75 % of the image
    reasons = layout_reasons(shrunk)
    assert any("left lung field covers 0.8%" in r for r in reasons) and any("of the other's area" in r for r in reasons)
    no_heart = chest_masks(**{k: v for k, v in CHEST.items() if k != "heart"}, heart=(0, 0, 0, 0))
    assert layout_reasons(no_heart) == ["no heart found: not a frontal chest film, or the model failed"]
    # A model that cannot measure a chest (no heart, no lungs) is not judged by the chest's layout.
    assert layout_reasons(chest_masks(femur_left=(0, 50, 0, 50))) == []


def test_header_facts_flag_what_is_not_a_frontal_chest():
    assert header_reasons({"body_part_examined": "CHEST", "view_position": "PA", "patient_orientation": ["L", "F"]}) == []
    assert header_reasons({"body_part_examined": "THORAX"}) == [] and header_reasons({}) == []
    assert header_reasons({"body_part_examined": "EXTREMITY"}) == [
        "the DICOM header says BodyPartExamined 'EXTREMITY', not a chest"]
    assert "lateral view" in header_reasons({"view_position": "LL"})[0]
    assert "lateral view" in header_reasons({"view_position": "RL"})[0]
    assert "oblique view" in header_reasons({"view_position": "LLO"})[0]
    assert "not a frontal view" in header_reasons({"patient_orientation": ["LP", "F"]})[0]


def test_all_low_confidence_is_flagged():
    low = {n: {"confidence": LOW_CONFIDENCE - 0.05} for n in ("heart", "lung_upper_lobe_left")}
    assert "barely sees" in confidence_reasons({**low, "liver": {"confidence": 0.99}})[0]
    assert confidence_reasons({**low, "lung_lower_lobe_left": {"confidence": 0.9}}) == []


def test_assumptions_are_recorded_and_mm_figures_carry_the_flag():
    masks = chest_masks(**CHEST)
    image = Image2D(np.zeros((1, *PLANE.shape), np.float32), PLANE, ("xray",),
                    {"spacing_source": "fallback: 430 mm field of view", "orientation_source": "assumed radiograph convention"})
    result = Result(masks, image, "radiograph", "m")
    report = result.report()
    assert not report["trust"]["flagged"] and report["trust"]["spacing_assumed"]
    assert [a.split(" ")[:3] for a in report["trust"]["assumptions"]] == [["pixel", "spacing", "assumed"],
                                                                          ["patient", "orientation", "not"]]
    assert report["image"]["spacing_assumed"] and report["image"]["spacing_source"].startswith("fallback")
    assert report["cardiothoracic_ratio"]["mm_assumed"] is True
    read = Image2D(image.array, PLANE, ("xray",), {"spacing_source": "PixelSpacing", "orientation_source": "PatientOrientation"})
    trusted = Result(masks, read, "radiograph", "m").report()
    assert trusted["trust"]["assumptions"] == [] and trusted["cardiothoracic_ratio"]["mm_assumed"] is False
    # A header spacing the reader set aside: the assumption says why, not "the file gives none".
    why = "PixelSpacing 0.168 x 0.168 mm makes this chest film 172 x 172 mm"
    rejected = Image2D(image.array, PLANE, ("xray",), {**image.meta, "spacing_rejected": why})
    assumed = Result(masks, rejected, "radiograph", "m").report()["trust"]["assumptions"][0]
    assert why in assumed and "gives none" not in assumed
    # A CT's projection has its geometry from the CT: nothing assumed, no chest rules.
    assert assess(chest_masks(femur_left=(0, 50, 0, 50)), {}, "ct").as_dict()["assumptions"] == []


# --- acceptance on real files, with the current bundled model --------------------------------
def _flagged_without_ctr(result: Result, out: Path) -> dict:
    report = result.report()
    assert report["trust"]["flagged"] and report["trust"]["reasons"]
    assert report["cardiothoracic_ratio"] is None
    assert result.masks.array.any()  # the masks are kept, marked by the report and the overlay
    result.save(out, ("overlay", "json"))
    assert json.loads((out / "report.json").read_text())["trust"]["flagged"]
    return report


def test_tibia_dog_and_noise_are_flagged(data, xray, tmp_path):
    tibia = _flagged_without_ctr(xray(data / "xray/dicom/pydicomdata_RG3_J2KR_cr_tibia_monochrome1_j2k.dcm"),
                                 tmp_path / "tibia")
    assert "BodyPartExamined 'EXTREMITY'" in tibia["trust"]["reasons"][0]
    assert tibia["image"]["header"]["body_part_examined"] == "EXTREMITY"
    dog = _flagged_without_ctr(xray(data / "xray/dicom/highdicom_dx_dog_chest_monochrome1.dcm"), tmp_path / "dog")
    assert dog["image"]["header"]["body_part_examined"] == "THORAX"  # the header looks like a chest: the image tells
    noise = np.random.default_rng(12).random((512, 512)).astype(np.float32)
    flagged = _flagged_without_ctr(xray(noise), tmp_path / "noise")
    assert flagged["trust"]["spacing_assumed"]  # an array's spacing is not recorded


def test_chest_film_whose_header_says_lateral_is_flagged(data, xray, tmp_path):
    ds = pydicom.dcmread(data / "xray/dicom/siim_nih_cr_chest_monochrome2.dcm")
    ds.ViewPosition = "LL"
    ds.save_as(tmp_path / "lateral.dcm")
    report = _flagged_without_ctr(xray(tmp_path / "lateral.dcm"), tmp_path / "out")
    assert report["trust"]["reasons"] == ["the DICOM header says ViewPosition 'LL': a lateral view, not frontal"]
    assert report["image"]["header"]["view_position"] == "LL"


def _real_chest_films(data: Path) -> list[Path]:
    dicoms = [p for p in sorted((data / "xray/dicom").glob("*chest*.dcm")) if "dog" not in p.name]
    return sorted((data / "xray/nih_cxr14").glob("*.png")) + dicoms


def test_real_chest_films_are_not_flagged(data, xray):
    films = _real_chest_films(data)
    assert len(films) == 6
    for path in films:
        report = xray(path).report()
        assert not report["trust"]["flagged"], (path.name, report["trust"]["reasons"])
        assert report["cardiothoracic_ratio"] is not None, path.name


def test_wingspan_validation_films_are_not_flagged(data, xray):
    names = json.loads((ROOT / "configs/wingspan_split.json").read_text())["validation"]
    flagged = {}
    for name in names:
        report = xray(data / "xray/wingspan/png" / name).report()
        if report["trust"]["flagged"]:
            flagged[name] = report["trust"]["reasons"]
        assert report["trust"]["spacing_assumed"] and report["trust"]["orientation_assumed"]  # a PNG has neither
    assert len(names) == 44 and flagged == {}
