"""Tests of ts2d_xray.io.dicom_seg: DICOM SEG of every DICOM radiograph of the shared data.

dciodvfy (dicom3tools) must report no error on any of them, and highdicom must read each
back with the same masks, codes, colours and geometry (the source's pixel grid).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ts2d_xray.errors import InputError
from ts2d_xray.examples import shared_data_dir
from ts2d_xray.image import Masks
from ts2d_xray.io.dicom_seg import SERIES_NUMBER_OFFSET, write_dicom_seg
from ts2d_xray.io.radiograph import read_radiograph
from ts2d_xray.io.terminology import GENERIC, segment_terminology
from ts2d_xray.labels import display_color

DATA = shared_data_dir()
RADIOGRAPHS = sorted((DATA / "xray" / "dicom").glob("*.dcm")) if DATA else []
#: Left/right pairs, an overlapping lobe, a derived union, a structure the catalog does not
#: know (generic codes) and one left empty (a segment without frames).
NAMES = ("lung_left", "lung_right", "lung_upper_lobe_left", "heart", "vertebrae_T5", "kidney_left", "lungs",
         "my_marker", "liver")

pytestmark = [pytest.mark.skipif(not RADIOGRAPHS, reason="no shared data with DICOM radiographs"),
              pytest.mark.filterwarnings("ignore:.*(assum|spans).*:UserWarning")]  # the sources' missing facts


def _masks(path: Path) -> Masks:
    """Masks on the radiograph's own grid (stored pixel order), as segment gives them."""
    plane = read_radiograph(path, display=None).plane
    h, w = plane.shape
    rng = np.random.default_rng(len(path.name))
    array = np.zeros((len(NAMES), h, w), bool)
    for k in range(len(NAMES) - 1):  # the last one stays empty
        r, c = rng.integers(0, h // 2), rng.integers(0, w // 2)
        array[k, r:r + h // 3, c:c + w // 4] = True
    array[2] |= array[0]  # overlaps on purpose
    return Masks(array, NAMES, plane)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[Path, tuple[Path, Masks]]:
    out = tmp_path_factory.mktemp("seg")
    return {p: (write_dicom_seg(m := _masks(p), p, out / f"{p.stem}.dcm", algorithm="test-model",
                                software_version="9.9"), m) for p in RADIOGRAPHS}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
@pytest.mark.parametrize("source", RADIOGRAPHS, ids=lambda p: p.name)
def test_dciodvfy_finds_no_error(written, source):
    seg, _ = written[source]
    run = subprocess.run(["dciodvfy", str(seg)], capture_output=True, text=True, timeout=120)
    report = run.stdout + run.stderr
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert not errors, report
    assert "Segmentation" in report  # the IOD it recognised


@pytest.mark.parametrize("source", RADIOGRAPHS, ids=lambda p: p.name)
def test_highdicom_reads_back_masks_codes_and_geometry(written, source):
    import highdicom as hd
    import pydicom

    path, masks = written[source]
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage and seg.SegmentationType == "BINARY"
    assert (seg.StudyInstanceUID, seg.PatientID) == (ds.StudyInstanceUID, ds.PatientID)
    assert seg.SeriesInstanceUID != ds.SeriesInstanceUID
    assert int(seg.SeriesNumber) == SERIES_NUMBER_OFFSET + int(ds.get("SeriesNumber") or 0)
    assert (seg.Rows, seg.Columns) == (ds.Rows, ds.Columns) == masks.plane.shape
    assert seg.get("FrameOfReferenceUID") == ds.get("FrameOfReferenceUID")
    assert seg.PatientOrientation == ds.get("PatientOrientation", "")
    # No Frame of Reference: the geometry is the referenced image's, never a guessed spacing.
    assert "PixelMeasuresSequence" not in seg.SharedFunctionalGroupsSequence[0]
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == ds.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], segment_numbers=list(range(1, len(NAMES) + 1)),
                                               assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(np.moveaxis(pixels[0], -1, 0).astype(bool), masks.array)
    _check_descriptions(seg, masks.names)


def _check_descriptions(seg, names: tuple[str, ...]) -> None:
    import highdicom as hd

    for number, name in enumerate(names, start=1):
        d = seg.get_segment_description(number)
        term = segment_terminology(name)
        assert d.segment_label == name
        assert (d.segmented_property_category.value, d.segmented_property_category.scheme_designator) == \
            (term.category.value, term.category.scheme)
        assert (d.segmented_property_type.value, d.segmented_property_type.meaning) == \
            (term.type.value, term.type.meaning)
        modifiers = d.SegmentedPropertyTypeCodeSequence[0].get("SegmentedPropertyTypeModifierCodeSequence")
        assert (modifiers[0].CodeMeaning if modifiers else None) == \
            (term.type_modifier.meaning if term.type_modifier else None)
        expected = hd.color.CIELabColor.from_rgb(*display_color(name)).value
        assert list(d.RecommendedDisplayCIELabValue) == list(expected)
        assert d.algorithm_identification[0].AlgorithmName == "test-model"
    assert segment_terminology("my_marker") == GENERIC
    assert segment_terminology("kidney_left").type_modifier.meaning == "Left"


def test_refuses_masks_off_the_source_grid_and_non_dicom_sources(tmp_path):
    source = RADIOGRAPHS[0]
    masks = _masks(source)
    cropped = Masks(masks.array[:, 1:], masks.names, masks.plane.__class__(
        (masks.plane.shape[0] - 1, masks.plane.shape[1]), masks.plane.spacing))
    with pytest.raises(ValueError, match="do not lie on the pixel grid"):
        write_dicom_seg(cropped, source, tmp_path / "a.dcm", algorithm="m")
    png = tmp_path / "x.png"
    png.write_bytes(b"not dicom")
    with pytest.raises(InputError, match="not a readable DICOM file"):
        write_dicom_seg(masks, png, tmp_path / "b.dcm", algorithm="m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # nothing half-written
