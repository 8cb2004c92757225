"""Tests for ts2d_xray.io.radiograph, io.projection and io.image2d on the real shared data and tiny synthetic files."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest

from ts2d_xray.errors import InputError
from ts2d_xray.examples import missing_data_message, shared_data_dir
from ts2d_xray.io.image2d import read_image2d
from ts2d_xray.io.projection import read_projection
from ts2d_xray.io.radiograph import read_radiograph

DATA = shared_data_dir()
XRAY = DATA / "xray" / "dicom"
NIH = DATA / "xray" / "nih_cxr14"
LUT = DATA / "ct" / "dicom_misc" / "lut"
PROJ = DATA / "projections" / "ts2d_samples"

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=missing_data_message())

DOG = XRAY / "highdicom_dx_dog_chest_monochrome1.dcm"
RG1_RAW = XRAY / "pydicomdata_RG1_UNCR_cr_chest_monochrome1.dcm"
RG1_J2K = XRAY / "pydicomdata_RG1_J2KR_cr_chest_monochrome1_j2k.dcm"
TIBIA = XRAY / "pydicomdata_RG3_J2KR_cr_tibia_monochrome1_j2k.dcm"
SIIM_M2 = XRAY / "siim_nih_cr_chest_monochrome2.dcm"
SIIM_FAKE = XRAY / "siim_nih_cr_chest_FAKE_monochrome1.dcm"
ALL_DICOM = [DOG, RG1_RAW, RG1_J2K, TIBIA, SIIM_M2, SIIM_FAKE]


def _read(reader, path, **kw):
    """Call a reader, returning the image and the warning messages it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = reader(path, **kw)
    return image, [str(w.message) for w in caught]


def _check_radiograph(image):
    assert image.channels == ("xray",)
    assert image.array.dtype == np.float32 and image.array.shape[0] == 1
    assert 0.0 <= image.array.min() and image.array.max() <= 1.0
    for key in ("source", "format", "spacing_source", "orientation_source"):
        assert key in image.meta


def _dicom_copy(src, dst, **changes):
    """Write a copy of a DICOM file with some attributes changed (None deletes one)."""
    import pydicom

    ds = pydicom.dcmread(src)
    for name, value in changes.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    ds.save_as(dst)
    return dst


# --- radiographs: real files ---------------------------------------------------------


@needs_data
@pytest.mark.parametrize("name", ["00000001_000.png", "00027426_000.png"])
def test_nih_png(name):
    image, messages = _read(read_radiograph, NIH / name)
    _check_radiograph(image)
    assert image.array.shape == (1, 512, 512)
    assert image.meta["format"] == "png" and image.meta["bit_depth"] == 8
    assert image.meta["spacing_source"] == "fallback: 430 mm field of view"
    assert image.plane.spacing == pytest.approx((430 / 512, 430 / 512))
    assert image.meta["orientation_source"] == "assumed radiograph convention"
    assert image.plane.display == "radiograph"
    assert len(messages) == 2 and all(name in m for m in messages)


@needs_data
@pytest.mark.parametrize("path", ALL_DICOM, ids=lambda p: p.name)
def test_every_dicom_reads(path):
    image, _ = _read(read_radiograph, path)
    _check_radiograph(image)
    assert image.meta["format"] == "dicom"
    assert image.meta["modality"] in ("CR", "DX")
    assert image.plane.display == "radiograph"


@needs_data
def test_rg1_jpeg2000_equals_uncompressed_and_spacing_falls_back():
    raw, messages = _read(read_radiograph, RG1_RAW)
    j2k, _ = _read(read_radiograph, RG1_J2K)
    np.testing.assert_array_equal(raw.array, j2k.array)
    assert raw.array.shape == (1, 1955, 1841)
    # PixelSpacing is 0.000\0.000: invalid, so the 430 mm field-of-view guess is used.
    assert any("invalid PixelSpacing" in m and RG1_RAW.name in m for m in messages)
    assert raw.meta["spacing_source"] == "fallback: 430 mm field of view"
    assert raw.plane.spacing == pytest.approx((430 / 1955, 430 / 1955))
    assert raw.meta["view_position"] == "PA" and raw.meta["inverted"] is True


@needs_data
def test_rg1_spacing_given_overrides_without_warning():
    image, messages = _read(read_radiograph, RG1_RAW, spacing=(0.2, 0.2))
    assert image.plane.spacing == (0.2, 0.2) and image.meta["spacing_source"] == "given"
    assert not any("PixelSpacing" in m for m in messages)
    with pytest.raises(ValueError, match="spacing must be"):
        read_radiograph(RG1_RAW, spacing=(0.0, 0.2))


@needs_data
def test_tibia_r_f_is_flipped_for_display():
    import pydicom

    stored, _ = _read(read_radiograph, TIBIA, display=None)
    shown, _ = _read(read_radiograph, TIBIA)
    assert list(pydicom.dcmread(TIBIA, stop_before_pixels=True).PatientOrientation) == ["R", "F"]
    assert stored.plane.orientation == ("R", "F")
    assert stored.meta["orientation_source"] == "PatientOrientation"
    assert shown.plane.orientation == ("L", "F") and shown.plane.display == "radiograph"
    np.testing.assert_array_equal(shown.array, stored.array[:, :, ::-1])


@needs_data
def test_dog_dx_monochrome1_inverse_is_inverted_once():
    import pydicom

    ds = pydicom.dcmread(DOG)
    assert (ds.PhotometricInterpretation, ds.PresentationLUTShape) == ("MONOCHROME1", "INVERSE")
    raw = ds.pixel_array.astype(np.float64)
    image, _ = _read(read_radiograph, DOG)
    # Window 128/256 on 8-bit data is the identity, so the output is just the flip.
    np.testing.assert_allclose(image.array[0], 1 - raw / 255, atol=1e-6)
    assert image.meta["inverted"] is True and image.meta["photometric"] == "MONOCHROME1"
    assert image.plane.spacing == pytest.approx((1.2, 1.2012))
    assert image.meta["spacing_source"] == "PixelSpacing"
    plain, _ = _read(read_radiograph, DOG, invert=False)
    np.testing.assert_allclose(plain.array[0], raw / 255, atol=1e-6)


@needs_data
def test_fake_monochrome1_trap_and_override():
    genuine, _ = _read(read_radiograph, SIIM_M2)
    fake, _ = _read(read_radiograph, SIIM_FAKE)
    fixed, _ = _read(read_radiograph, SIIM_FAKE, invert=False)
    # The header says MONOCHROME1 but the pixels were never inverted: followed
    # literally the image comes out negative; invert=False repairs it.
    np.testing.assert_allclose(fake.array, 1 - genuine.array, atol=1e-6)
    np.testing.assert_array_equal(fixed.array, genuine.array)
    assert fake.meta["inverted"] is True and fixed.meta["invert_source"] == "given"
    assert genuine.meta["inverted"] is False and genuine.meta["photometric"] == "MONOCHROME2"


@needs_data
def test_siim_spacing_is_set_aside_and_orientation_assumed():
    # A 1024 x 1024 copy of an NIH film keeping the original's 0.168 mm: a 172 mm chest.
    image, messages = _read(read_radiograph, SIIM_M2)
    assert image.plane.spacing == pytest.approx((430 / 1024, 430 / 1024))
    assert image.meta["spacing_source"].startswith("fallback")
    assert "172 x 172 mm" in image.meta["spacing_rejected"]
    assert any("PixelSpacing 0.168 x 0.168 mm makes this chest film" in m and SIIM_M2.name in m for m in messages)
    assert image.meta["orientation_source"] == "assumed radiograph convention"
    assert any("PatientOrientation" in m for m in messages)
    given, messages = _read(read_radiograph, SIIM_M2, spacing=(0.2, 0.2))
    assert given.plane.spacing == (0.2, 0.2) and "spacing_rejected" not in given.meta
    assert not any("PixelSpacing" in m for m in messages)


@needs_data
@pytest.mark.parametrize("body_part, pixel_mm, kept", [("CHEST", 0.168, False), ("chest ", 0.1, False),
                                                       ("HAND", 0.168, True), ("CHEST", 0.2, True)])
def test_only_a_chest_film_too_small_for_a_chest_has_its_spacing_set_aside(tmp_path, body_part, pixel_mm, kept):
    path = _dicom_copy(SIIM_M2, tmp_path / "f.dcm", BodyPartExamined=body_part, PixelSpacing=[pixel_mm, pixel_mm])
    image, _ = _read(read_radiograph, path)
    assert (image.plane.spacing == pytest.approx((pixel_mm, pixel_mm))) is kept
    assert ("spacing_rejected" in image.meta) is not kept


@needs_data
def test_reading_does_not_modify_the_file():
    before = hashlib.sha256(DOG.read_bytes()).hexdigest()
    _read(read_radiograph, DOG)
    assert hashlib.sha256(DOG.read_bytes()).hexdigest() == before


# --- DICOM LUTs ----------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("name, voi", [("vlut_04.dcm", "VOI LUT Sequence"), ("mlut_18.dcm", "min-max")])
def test_lut_files_read(name, voi):
    image, _ = _read(read_radiograph, LUT / name)
    _check_radiograph(image)
    assert image.meta["voi"] == voi
    assert image.array.min() == 0.0 and image.array.max() == 1.0


@needs_data
@pytest.mark.parametrize(
    "name, sequence", [("vlut_04.dcm", "VOILUTSequence"), ("mlut_18.dcm", "ModalityLUTSequence")]
)
def test_lut_is_applied(tmp_path, name, sequence):
    """The shipped LUTs are linear, so swap in a curved one and check it is followed."""
    import pydicom

    ds = pydicom.dcmread(LUT / name)
    item = getattr(ds, sequence)[0]
    entries, first, _ = item.LUTDescriptor
    curve = np.round(65535 * np.linspace(0, 1, entries) ** 2).astype(int)
    item.LUTData = curve.tolist()
    ds.save_as(tmp_path / name)

    raw = ds.pixel_array.astype(np.int64)
    expected = curve[np.clip(raw - first, 0, entries - 1)]
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    plain = (raw - raw.min()) / (raw.max() - raw.min())
    image, _ = _read(read_radiograph, tmp_path / name, display=None)
    np.testing.assert_allclose(image.array[0], expected, atol=1e-6)
    assert np.abs(image.array[0] - plain).max() > 0.2


# --- radiographs: synthetic DICOM variants -------------------------------------------


@needs_data
def test_imager_pixel_spacing_with_and_without_magnification(tmp_path):
    path = _dicom_copy(DOG, tmp_path / "mag.dcm", PixelSpacing=None, ImagerPixelSpacing=[0.2, 0.2],
                       EstimatedRadiographicMagnificationFactor=1.25)
    image, _ = _read(read_radiograph, path)
    assert image.plane.spacing == pytest.approx((0.16, 0.16))
    assert image.meta["spacing_source"] == "ImagerPixelSpacing/magnification"
    path = _dicom_copy(DOG, tmp_path / "det.dcm", PixelSpacing=None, ImagerPixelSpacing=[0.2, 0.2])
    image, _ = _read(read_radiograph, path)
    assert image.plane.spacing == pytest.approx((0.2, 0.2))
    assert image.meta["spacing_source"] == "ImagerPixelSpacing (detector plane)"


@needs_data
def test_lateral_view_cannot_be_displayed_coronal(tmp_path):
    path = _dicom_copy(DOG, tmp_path / "lat.dcm", PatientOrientation=["P", "F"])
    with pytest.raises(InputError, match="not a coronal view.*display=None"):
        read_radiograph(path)
    image, _ = _read(read_radiograph, path, display=None)
    assert image.plane.orientation == ("P", "F")


@needs_data
@pytest.mark.parametrize(
    "changes, match",
    [
        ({"PixelData": None}, "no pixel data"),
        ({"NumberOfFrames": 2}, "multi-frame"),
        ({"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB"}, "colour DICOM"),
    ],
    ids=["no-pixels", "multi-frame", "colour"],
)
def test_unsupported_dicom(tmp_path, changes, match):
    path = _dicom_copy(DOG, tmp_path / "bad.dcm", **changes)
    with pytest.raises(InputError, match=match):
        read_radiograph(path)


# --- radiographs: synthetic PNG / JPEG -----------------------------------------------


def test_png_16_bit(tmp_path):
    from PIL import Image

    pixels = (np.arange(40 * 30).reshape(40, 30) * 54).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "grey16.png")
    image, messages = _read(read_radiograph, tmp_path / "grey16.png", spacing=(0.5, 0.25))
    _check_radiograph(image)
    assert image.meta["bit_depth"] == 16
    np.testing.assert_allclose(image.array[0], pixels / 65535, atol=1e-6)
    assert image.plane.shape == (40, 30) and image.plane.spacing == (0.5, 0.25)
    assert image.meta["spacing_source"] == "given" and len(messages) == 1  # orientation only


def test_rgb_jpeg_becomes_luma(tmp_path):
    from PIL import Image

    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (200, 40, 40)
    rgb[:, 16:32] = (40, 200, 40)
    rgb[:, 32:] = (40, 40, 200)
    Image.fromarray(rgb).save(tmp_path / "colour.jpg", quality=95)
    image, messages = _read(read_radiograph, tmp_path / "colour.jpg")
    _check_radiograph(image)
    assert image.meta["format"] == "jpeg" and image.array.shape == (1, 32, 48)
    luma = rgb @ np.array([0.299, 0.587, 0.114]) / 255
    # Centres of the patches, away from JPEG ringing at the edges.
    for col in (8, 24, 40):
        assert image.array[0, 16, col] == pytest.approx(luma[16, col], abs=0.03)
    assert image.plane.spacing == pytest.approx((430 / 48, 430 / 48))
    assert any("430 mm" in m for m in messages)


def test_2d_nrrd_radiograph(tmp_path):
    import SimpleITK as sitk

    pixels = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    image = sitk.GetImageFromArray(pixels)
    image.SetSpacing((0.3, 0.2))
    sitk.WriteImage(image, str(tmp_path / "flat.nrrd"))
    out, messages = _read(read_radiograph, tmp_path / "flat.nrrd")
    _check_radiograph(out)
    # Identity direction: axes toward LPS x and -z, already the radiograph convention.
    np.testing.assert_allclose(out.array[0], pixels / pixels.max(), atol=1e-6)
    assert out.plane.spacing == pytest.approx((0.2, 0.3)) and out.plane.orientation == ("L", "F")
    assert out.meta["format"] == "nrrd" and any("2D file" in m for m in messages)


# --- projections ---------------------------------------------------------------------


@needs_data
def test_projection_s0332():
    image, messages = _read(read_projection, PROJ / "sample_s0332.nrrd")
    stored, _ = _read(read_projection, PROJ / "sample_s0332.nrrd", display=None)
    assert not messages
    assert image.channels == ("mean", "max") and image.array.dtype == np.float32
    assert image.array.shape == (2, 505, 269)
    assert image.plane.spacing == pytest.approx((1.5, 1.5))
    assert np.all(image.array[0] <= image.array[1])
    # Stored the TS2D way (patient's left on the image left), shown as a radiograph.
    assert stored.plane.display == "ts2d" and image.plane.display == "radiograph"
    assert stored.plane.origin == pytest.approx((205.1064453125, 52.1064453125, 836.0))
    assert image.meta["orientation_source"] == "file header (LPS)"
    # Head up: the lungs (air-filled, inside the body) lie mostly in the upper half.
    mean = image.array[0]
    lungs = (mean > -900) & (mean < -650)
    assert lungs[: mean.shape[0] // 2].sum() > 0.7 * lungs.sum()


@needs_data
def test_projection_s0616_2d_file():
    image, messages = _read(read_projection, PROJ / "sample_s0616.nrrd")
    stored, _ = _read(read_projection, PROJ / "sample_s0616.nrrd", display=None)
    assert image.channels == ("mean", "max") and image.array.shape == (2, 644, 337)
    assert image.plane.spacing == pytest.approx((1.5, 1.5), abs=0.002)
    assert np.all(image.array[0] <= image.array[1])
    assert image.meta["orientation_source"].startswith("assumed: 2D file")
    assert any("2D file" in m for m in messages)
    # The direction is rotated by about 3 degrees; its dominant axes are as in s0332.
    assert stored.plane.display == "ts2d" and image.plane.display == "radiograph"
    assert abs(stored.plane.col_dir[2]) == pytest.approx(0.0517, abs=1e-3)
    # Head up: the head (top tenth) is much narrower than the pelvis (bottom tenth).
    body = (image.array[0] > -900).sum(axis=1)
    assert body[:64].mean() < 0.5 * body[-64:].mean()


@needs_data
def test_read_image2d_dispatch():
    projection, _ = _read(read_image2d, PROJ / "sample_s0332.nrrd")
    radiograph, _ = _read(read_image2d, DOG)
    png, _ = _read(read_image2d, NIH / "00000001_000.png")
    assert projection.channels == ("mean", "max")
    assert radiograph.channels == ("xray",) and png.channels == ("xray",)


# --- errors --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_radiograph(tmp_path / "absent.dcm")
    with pytest.raises(InputError, match="file not found"):
        read_image2d(tmp_path / "absent.nrrd")


def test_text_renamed_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    with pytest.raises(InputError, match="not a readable PNG/JPEG"):
        read_radiograph(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    with pytest.raises(InputError, match="unsupported file type '.txt'"):
        read_image2d(path)


@needs_data
def test_corrupt_files(tmp_path):
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(DOG.read_bytes()[: DOG.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated.dcm: (cannot decode|not a readable DICOM)"):
        read_radiograph(truncated)
    fake_nrrd = tmp_path / "fake.nrrd"
    fake_nrrd.write_text("not an image\n")
    with pytest.raises(InputError, match="fake.nrrd: not a readable image"):
        read_image2d(fake_nrrd)


@needs_data
def test_dicom_without_suffix_is_recognised(tmp_path):
    path = tmp_path / "IM0001"
    path.write_bytes(DOG.read_bytes())
    image, _ = _read(read_image2d, path)
    assert image.meta["format"] == "dicom" and image.array.shape == (1, 169, 211)


@needs_data
def test_3d_ct_is_not_a_radiograph():
    with pytest.raises(InputError, match="this is a 3D volume, not a 2D image"):
        read_radiograph(DATA / "ct" / "ts_example" / "ct_small.nii.gz")


@needs_data
def test_projection_needs_two_channels(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image([30, 20], sitk.sitkVectorFloat32, 3), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="2 channels.*found 3"):
        read_projection(tmp_path / "rgb.nrrd")
    with pytest.raises(InputError, match="3D volume, not a 2D image"):
        read_projection(PROJ / "sample_s0521.nrrd")
    with pytest.raises(InputError, match="NRRD, NIfTI or MHA"):
        read_projection(DOG)
    with pytest.raises(InputError, match="use read_projection"):
        read_radiograph(PROJ / "sample_s0332.nrrd")
