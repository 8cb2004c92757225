"""Tests of ts2d_xray.io.masks and io.image2d: Slicer segmentations, NIfTI, PNG folders, NRRD images, previews."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ts2d_xray import labels
from ts2d_xray.examples import shared_data_dir
from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.io.preview import MIN_DISPLAY_PX, write_preview
from ts2d_xray.io.image2d import write_image2d
from ts2d_xray.io.mask_sources import read_mask_source
from ts2d_xray.io.masks import pack_layers, read_masks, read_segment_colors, write_mask_folder, write_masks
from ts2d_xray.io.terminology import slicer_terminology

DATA = shared_data_dir()
NAMES = ("heart", "lung_left", "vertebrae_T5")
H, W = 40, 30


def _plane(origin=(-120.5, 80.25, 310.0)) -> Plane:
    # Radiograph convention (columns toward the patient's left, rows toward the feet),
    # non-square pixels: 0.8 mm between rows, 1.2 mm between columns.
    return Plane((H, W), (0.8, 1.2), col_dir=(1.0, 0.0, 0.0), row_dir=(0.0, 0.0, -1.0), origin=origin)


def _masks(plane: Plane | None = None) -> Masks:
    array = np.zeros((3, H, W), bool)
    array[0, 10:30, 8:22] = True  # heart
    array[1, 5:25, 15:28] = True  # lung_left, overlaps the heart
    array[2, 2:38, 13:17] = True  # vertebrae_T5, overlaps both
    return Masks(array, NAMES, plane or _plane())


def _projection(plane: Plane | None = None) -> Image2D:
    rng = np.random.default_rng(0)
    array = rng.normal(-300, 200, (2, H, W)).astype(np.float32)
    return Image2D(array, plane or _plane(), ("mean", "max"))


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- .seg.nrrd


def test_seg_nrrd_round_trip(tmp_path):
    masks = _masks()
    before = masks.array.copy()
    path = write_masks(masks, tmp_path / "sub" / "masks.seg.nrrd")
    np.testing.assert_array_equal(masks.array, before)  # input untouched
    assert path.is_file() and _files(path.parent) == ["masks.seg.nrrd"]

    back = read_masks(path)
    assert back.names == NAMES
    np.testing.assert_array_equal(back.array, masks.array)
    assert back.array[:, 15, 15].all()  # one pixel in all three structures survives
    assert back.plane.shape == (H, W)
    np.testing.assert_allclose(back.plane.spacing, (0.8, 1.2))
    np.testing.assert_allclose(back.plane.col_dir, (1, 0, 0), atol=1e-12)
    np.testing.assert_allclose(back.plane.row_dir, (0, 0, -1), atol=1e-12)
    np.testing.assert_allclose(back.plane.origin, (-120.5, 80.25, 310.0))
    assert read_segment_colors(path) == {n: labels.color(n) for n in NAMES}


def test_seg_nrrd_header_is_slicer_like(tmp_path):
    import nrrd

    path = write_masks(_masks(), tmp_path / "masks.seg.nrrd")
    header = nrrd.read_header(str(path))
    assert header["space"] == "left-posterior-superior"
    # Three mutually overlapping structures need three layers.
    assert header["kinds"] == ["list", "domain", "domain", "domain"]
    assert list(header["sizes"]) == [3, W, H, 1]
    for n, name in enumerate(NAMES):
        assert header[f"Segment{n}_Name"] == name
        assert header[f"Segment{n}_Layer"] == str(n)
        assert header[f"Segment{n}_LabelValue"] == "1"
        assert header[f"Segment{n}_Extent"] == f"0 {W - 1} 0 {H - 1} 0 0"
        rgb = [float(v) for v in header[f"Segment{n}_Color"].split()]
        np.testing.assert_allclose(rgb, np.array(labels.color(name)) / 255, atol=1e-5)
    # k axis is the plane normal L x F = (1,0,0) x (0,0,-1) = (0,1,0), 1 mm.
    np.testing.assert_allclose(header["space directions"][1:], [[1.2, 0, 0], [0, 0, -0.8], [0, 1, 0]])


def test_seg_nrrd_packs_layers_and_keeps_empty_and_unknown(tmp_path):
    array = np.zeros((3, H, W), bool)
    array[0, :10] = True
    array[2, 20:] = True  # disjoint from structure 0: shares its layer
    masks = Masks(array, ("liver", "empty_thing", "my_tumour"), _plane(origin=None))
    path = write_masks(masks, tmp_path / "m.seg.nrrd")
    back = read_masks(path)
    assert back.names == masks.names and not back.array[1].any()
    np.testing.assert_array_equal(back.array, array)
    assert back.plane.origin is None  # radiograph without origin stays without one
    colors = read_segment_colors(path)
    assert colors["liver"] == labels.color("liver")
    assert colors["my_tumour"] in labels.FALLBACK_COLORS


def test_seg_nrrd_terminology_entries(tmp_path):
    """Slicer's TerminologyEntry tag: SNOMED CT codes of the catalog, Tissue for a name it does not know."""
    import nrrd

    array = np.zeros((3, H, W), bool)
    array[:, 5:9, 5:9] = True
    path = write_masks(Masks(array, ("kidney_left", "vertebrae_T5", "my_tumour"), _plane()), tmp_path / "t.seg.nrrd")
    header = nrrd.read_header(str(path))
    tags = [header[f"Segment{n}_Tags"] for n in range(3)]
    assert tags[0] == ("TerminologyEntry:Segmentation category and type - DICOM master list"
                       "~SCT^123037004^Anatomical Structure~SCT^64033007^Kidney~SCT^7771000^Left"
                       "~Anatomic codes - DICOM master list~^^~^^|")
    assert "~SCT^" in tags[1] and "~^^~" in tags[1]  # no laterality
    assert "~SCT^85756007^Tissue~SCT^85756007^Tissue~" in tags[2]
    import slicerio

    seg = slicerio.read_segmentation(str(path), skip_voxels=True)
    assert seg["segments"][0]["terminology"]["typeModifier"] == ["SCT", "7771000", "Left"]
    assert slicer_terminology("kidney_left")["type"] == ["SCT", "64033007", "Kidney"]


def test_pack_layers_matches_slicerio_add_segment():
    """One pass packs the layers exactly as slicerio's add_segment, one segment at a time, does."""
    import slicerio

    rng = np.random.default_rng(3)
    array = np.zeros((40, 30, 20), bool)
    for k in range(38):  # random boxes, two left empty; many overlaps
        r, c = rng.integers(0, 25), rng.integers(0, 15)
        array[k, r:r + rng.integers(1, 8), c:c + rng.integers(1, 8)] = True
    layers, placed = pack_layers(array)
    seg = slicerio.create_segmentation((30, 20, 1), np.eye(4))
    for k in range(len(array)):
        slicerio.add_segment(seg, array[k][:, :, None], {"id": str(k)})
    assert placed == [(s["layer"], s["labelValue"]) for s in seg["segments"]]
    expected = seg["voxels"] if seg["voxels"].ndim == 4 else seg["voxels"][None]
    np.testing.assert_array_equal(layers, expected[..., 0])


def test_read_masks_ts2d_layout(tmp_path):
    """A Slicer segmentation made on a TS2D image: the singleton axis is j, rows are k."""
    import slicerio

    m = np.eye(4)
    m[:3, :3] = np.diag([-1.5, -400.0, -1.5])
    m[:3, 3] = (10.0, 20.0, 30.0)
    seg = slicerio.create_segmentation((W, 1, H), m)
    mask = np.zeros((W, 1, H), bool)
    mask[3, 0, 7] = True  # column 3, row 7
    slicerio.add_segment(seg, mask, {"id": "s", "name": "spleen", "color": [1.0, 0.0, 0.0]})
    slicerio.write_segmentation(str(tmp_path / "t.seg.nrrd"), seg)
    back = read_masks(tmp_path / "t.seg.nrrd")
    assert back.plane.shape == (H, W) and back.plane.orientation == ("R", "F")
    assert np.argwhere(back.array[0]).tolist() == [[7, 3]]


def test_read_masks_real_slicer_file_slice(tmp_path):
    """A slice of slicerio's Slicer-written overlapping segmentation keeps Slicer's metadata."""
    import slicerio

    source = Path(slicerio.__file__).parent / "data" / "SegmentationOverlapping.seg.nrrd"
    if not source.is_file():
        pytest.skip("slicerio's test data is not installed")
    with pytest.raises(ValueError, match="single-slice"):
        read_masks(source)
    colors = read_segment_colors(source)
    assert len(colors) == 8 and colors["ribs"] == (253, 232, 158)

    seg = slicerio.read_segmentation(str(source))
    seg["voxels"] = seg["voxels"][..., 20:21].copy()
    slicerio.write_segmentation(str(tmp_path / "slice.seg.nrrd"), seg)
    back = read_masks(tmp_path / "slice.seg.nrrd")
    assert back.names == tuple(colors)
    np.testing.assert_array_equal(back.mask("overlapping sphere"), (seg["voxels"][1, :, :, 0] == 1).T)
    np.testing.assert_allclose(back.plane.spacing, (3.04687595, 3.04687595))
    assert back.plane.orientation == ("R", "A")


def test_real_dcmqi_labelmap_is_rejected_as_3d():
    path = DATA / "ct" / "dicom_misc" / "ct3slice" / "liver_seg.nrrd"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    # A plain label map (dcmqi test data): readable, but no segment metadata.
    assert read_segment_colors(path) == {}
    with pytest.raises(ValueError, match=r"3D segmentation of 512 x 512 x 3 voxels, not a single-slice"):
        read_masks(path)


def test_read_masks_not_a_segmentation(tmp_path):
    bad = tmp_path / "bad.seg.nrrd"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not a readable 3D Slicer segmentation"):
        read_masks(bad)
    with pytest.raises(FileNotFoundError):
        read_masks(tmp_path / "missing.seg.nrrd")


# ----------------------------------------------------------------------------- NIfTI, PNG folder


@pytest.mark.parametrize("use_nibabel", [True, False])
def test_masks_nifti_round_trip(tmp_path, monkeypatch, use_nibabel):
    import SimpleITK as sitk

    if not use_nibabel:
        monkeypatch.setitem(__import__("sys").modules, "nibabel", None)  # force the SimpleITK path
    masks = _masks()
    path = write_masks(masks, tmp_path / "masks.nii.gz")
    assert _files(tmp_path) == ["masks.json", "masks.nii.gz"]
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (W, H, 1, 3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[:, 0].astype(bool), masks.array)
    np.testing.assert_allclose(image.GetSpacing()[:3], (1.2, 0.8, 1.0), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin()[:3], (-120.5, 80.25, 310.0), atol=1e-4)
    direction = np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3]
    np.testing.assert_allclose(direction, [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-6)
    sidecar = json.loads((tmp_path / "masks.json").read_text())
    assert [s["name"] for s in sidecar["structures"]] == list(NAMES)


def test_png_folder(tmp_path):
    from PIL import Image

    masks = _masks()
    folder = write_masks(masks, tmp_path / "out" / "masks")
    assert _files(folder) == sorted([f"{n}.png" for n in NAMES] + ["structures.json"])
    assert _files(tmp_path / "out") == ["masks"]  # no temporary folder left
    heart = np.asarray(Image.open(folder / "heart.png"))
    assert heart.dtype == np.uint8 and set(np.unique(heart)) == {0, 255}
    np.testing.assert_array_equal(heart == 255, masks.array[0])
    meta = json.loads((folder / "structures.json").read_text())
    assert [s["name"] for s in meta["structures"]] == list(NAMES)
    assert meta["structures"][0]["color"] == list(labels.color("heart"))
    assert meta["spacing_mm"] == [0.8, 1.2] and meta["orientation"] == ["L", "F"]


@pytest.mark.parametrize("origin", [(-120.5, 80.25, 310.0), None])
def test_nifti_folder_one_3d_file_per_structure(tmp_path, origin):
    """TotalSegmentator's layout: ITK reads each file as one 3D mask on the plane; read back whole."""
    import SimpleITK as sitk

    array = _masks().array.copy()
    array[1] = False  # an empty structure: a copy of the one empty file
    masks = Masks(np.concatenate([array, np.zeros((1, H, W), bool)]), (*NAMES, "my_tumour"), _plane(origin))
    folder = write_mask_folder(masks, tmp_path / "segmentations", ".nii.gz")
    assert _files(folder) == sorted([f"{n}.nii.gz" for n in masks.names] + ["structures.json"])
    for name, mask in zip(masks.names, masks.array):
        image = sitk.ReadImage(str(folder / f"{name}.nii.gz"))
        assert image.GetDimension() == 3 and image.GetSize() == (W, H, 1)
        assert image.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[0], mask.astype(np.uint8))
        np.testing.assert_allclose(image.GetSpacing(), (1.2, 0.8, 1.0), atol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), origin or (0, 0, 0), atol=1e-4)
        np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), [[1, 0, 0], [0, 0, 1], [0, -1, 0]],
                                   atol=1e-6)
    assert (folder / "lung_left.nii.gz").read_bytes() == (folder / "my_tumour.nii.gz").read_bytes()
    meta = json.loads((folder / "structures.json").read_text())
    assert [s["file"] for s in meta["structures"]] == [f"{n}.nii.gz" for n in masks.names]
    back = read_mask_source(folder).masks
    assert back.names == masks.names and back.plane == masks.plane  # origin None survives
    np.testing.assert_array_equal(back.array, masks.array)
    with pytest.raises(ValueError, match="one mask file per structure as '.tif'"):
        write_mask_folder(masks, tmp_path / "other", ".tif")


def test_png_folder_refuses_non_empty_folder(tmp_path):
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_masks(_masks(), tmp_path / "masks")
    assert _files(tmp_path / "masks") == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    write_masks(_masks(), tmp_path / "empty")  # an empty folder is fine
    assert "structures.json" in _files(tmp_path / "empty")


def test_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"masks\.tif.*\.seg\.nrrd"):
        write_masks(_masks(), tmp_path / "masks.tif")
    with pytest.raises(ValueError, match=r"image\.jpg.*\.nrrd"):
        write_image2d(_projection(), tmp_path / "image.jpg")
    assert _files(tmp_path) == []


# ----------------------------------------------------------------------------- atomicity


def _fail_after_writing(path, *args, **kwargs):
    Path(path).write_bytes(b"half")
    raise OSError("disk full")


def test_seg_nrrd_is_atomic(tmp_path, monkeypatch):
    import slicerio

    target = tmp_path / "masks.seg.nrrd"
    target.write_bytes(b"previous")
    monkeypatch.setattr(slicerio, "write_segmentation", _fail_after_writing)
    with pytest.raises(OSError, match="disk full"):
        write_masks(_masks(), target)
    assert _files(tmp_path) == ["masks.seg.nrrd"] and target.read_bytes() == b"previous"


def test_image_nrrd_and_nifti_are_atomic(tmp_path, monkeypatch):
    import nibabel
    import nrrd

    monkeypatch.setattr(nrrd, "write", _fail_after_writing)
    monkeypatch.setattr(nibabel, "save", lambda image, path: _fail_after_writing(path))
    for name in ("image.nrrd", "image.nii.gz", "masks.nii.gz"):
        with pytest.raises(OSError, match="disk full"):
            item = _masks() if name.startswith("masks") else _projection()
            (write_masks if name.startswith("masks") else write_image2d)(item, tmp_path / name)
    assert _files(tmp_path) == []


def test_png_folder_is_atomic(tmp_path, monkeypatch):
    from PIL import Image

    calls = []

    def save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:
            raise OSError("disk full")
        Path(fp).write_bytes(b"png")

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(OSError, match="disk full"):
        write_masks(_masks(), tmp_path / "masks")
    assert _files(tmp_path) == []


# ----------------------------------------------------------------------------- images, previews


def test_image_nrrd_matches_ts2d_layout(tmp_path):
    import nrrd

    sample = DATA / "projections" / "ts2d_samples" / "sample_s0332.nrrd"
    image = _projection()
    data, header = nrrd.read(str(write_image2d(image, tmp_path / "p.nrrd")),
                             custom_field_map={"channels": "string list"})
    assert data.shape == (2, W, 1, H) and data.dtype == np.float32
    assert header["kinds"] == ["vector", "domain", "domain", "domain"]
    assert header["space"] == "left-posterior-superior" and header["encoding"] == "gzip"
    assert header["channels"] == ["mean", "max"]
    np.testing.assert_array_equal(data[:, :, 0, :].transpose(0, 2, 1), image.array)
    directions = header["space directions"]
    assert np.isnan(directions[0]).all()
    np.testing.assert_allclose(directions[1:], [[1.2, 0, 0], [0, 1, 0], [0, 0, -0.8]])
    np.testing.assert_allclose(header["space origin"], (-120.5, 80.25, 310.0))
    if sample.is_file():
        ref = nrrd.read_header(str(sample))
        assert ref["kinds"] == header["kinds"] and ref["space"] == header["space"]
        assert ref["sizes"][0] == 2 and ref["sizes"][2] == 1  # (C, W, 1, H) as ours


def test_image_nifti_has_channels_last(tmp_path):
    import SimpleITK as sitk

    image = _projection()
    path = write_image2d(image, tmp_path / "p.nii")
    read = sitk.ReadImage(str(path))
    assert read.GetSize() == (W, H, 1, 2)
    np.testing.assert_allclose(sitk.GetArrayFromImage(read)[:, 0], image.array)
    assert json.loads((tmp_path / "p.json").read_text())["channels"] == ["mean", "max"]


def test_preview_blends_colours_and_adds_legend(tmp_path):
    from PIL import Image

    # Flat grey radiograph so that the expected blend is known.
    image = Image2D(np.full((1, H, W), 0.5, np.float32), _plane(), ("xray",))
    masks = _masks()
    path = write_preview(image, tmp_path / "preview.png", masks, alpha=0.5)
    rgb = np.asarray(Image.open(path))
    assert rgb.ndim == 3 and rgb.shape[2] == 3
    # Square display pixels (columns at 1.2 mm shown as 0.8 mm: 30 -> 45), enlarged
    # so the shorter side has MIN_DISPLAY_PX pixels.
    zoom = MIN_DISPLAY_PX / H
    width = round(45 * zoom)
    assert rgb.shape[0] == MIN_DISPLAY_PX and rgb.shape[1] > width
    # Row 35, column 14 is inside vertebrae_T5 only (display column ~21).
    expected = 0.5 * 128 + 0.5 * np.array(labels.color("vertebrae_T5"))
    np.testing.assert_allclose(rgb[round(35.5 * zoom), round(22 * zoom)], expected, atol=2)
    # The legend panel shows each structure's colour somewhere right of the image.
    legend = rgb[:, width:].reshape(-1, 3)
    for name in NAMES:
        assert (legend == labels.color(name)).all(axis=1).any(), name


def test_preview_projection_without_masks(tmp_path):
    from PIL import Image

    path = write_image2d(_projection(), tmp_path / "p.png")
    rgb = np.asarray(Image.open(path))
    assert rgb.shape == (MIN_DISPLAY_PX, round(45 * MIN_DISPLAY_PX / H), 3)  # no legend, square pixels
    assert (rgb[..., 0] == rgb[..., 1]).all()  # grey only
    with pytest.raises(ValueError, match="channel must be in 0..1"):
        write_preview(_projection(), tmp_path / "q.png", channel=2)


def test_preview_marks_the_left_edge_direction(tmp_path):
    from PIL import Image

    def preview(plane):
        black = Image2D(np.zeros((1, H, W), np.float32), plane, ("xray",))
        return np.asarray(Image.open(write_preview(black, tmp_path / "m.png")))

    radiograph = preview(_plane())  # left edge = patient's right: "R"
    ts2d = preview(_plane().flipped(rows=False, cols=True))  # left edge = patient's left: "L"
    for rgb in (radiograph, ts2d):
        corner = 2 * MIN_DISPLAY_PX // 40  # font size scales with the display
        assert (rgb[:corner, :corner] > 200).any()  # a white (anti-aliased) letter in the top-left corner ...
        assert not rgb[corner:].any() and not rgb[:, corner:].any()  # ... and nothing elsewhere
    assert not np.array_equal(radiograph, ts2d)


def test_preview_rejects_masks_on_another_plane(tmp_path):
    image = _projection()
    flipped = Masks(_masks().array[:, :, ::-1], NAMES, _plane().flipped(rows=False, cols=True))
    with pytest.raises(ValueError, match="does not match the image plane"):
        write_preview(image, tmp_path / "p.png", flipped)
