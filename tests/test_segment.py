"""End-to-end segmentation of every input kind, the geometric round trip, and bad input.

The models are the deterministic ones of ``model_fixtures``: a structure is "normalised
intensity above a threshold", a fixed pointwise function of the input.  So the
expected mask of any input is known on the input's own grid, and a flipped or
transposed header must give the same mask, moved with the pixels.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

import model_fixtures as mf
from ts2d_xray import Image2D, Segmenter, read_ct, read_projection, write_image2d
from ts2d_xray.cli import main
from ts2d_xray.errors import InputError
from ts2d_xray.image import Plane, Volume
from ts2d_xray.segment.models import install_model
from ts2d_xray.nnunet.predict import window_starts
from ts2d_xray.segment.groups import predict_group as predict_logits
from ts2d_xray.segment.result import FORMATS

pytestmark = pytest.mark.filterwarnings("ignore:.*(assum|fallback|spans).*:UserWarning")

#: Structure thresholds of the deterministic models (see model_fixtures).
BONE_HU = 300.0
BRIGHT_SD = 1.0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny networks: thread start-up costs more than it saves (and the machine may be shared).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TS2D_XRAY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def coronal_model(tmp_path_factory) -> Path:
    return mf.deterministic_bundle(tmp_path_factory.mktemp("models") / "coronal-test")


@pytest.fixture(scope="module")
def xray_model(tmp_path_factory) -> Path:
    return mf.deterministic_bundle(tmp_path_factory.mktemp("models") / "xray-test", kind="xray", spacing=2.0)


@pytest.fixture(scope="module")
def coronal(coronal_model):
    with Segmenter(coronal_model, device="cpu") as seg:
        yield seg


@pytest.fixture(scope="module")
def xray(xray_model):
    with Segmenter(xray_model, device="cpu") as seg:
        yield seg


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def expected(result) -> tuple[str, np.ndarray]:
    """The deterministic model's rule applied on the input's own grid."""
    image = result.image.array
    if result.image.array.shape[0] == 2:
        return "bone", image[1] > BONE_HU
    return "bright", (image[0] - image[0].mean()) / image[0].std() > BRIGHT_SD


@pytest.mark.parametrize("relpath, kind, min_iou", [
    ("ct/ts_example/ct.nii.gz", "ct", 0.95),
    ("ct/ts_example_dicom/dicom", "ct", 0.95),
    ("projections/ts2d_samples/sample_s0332.nrrd", "projection", 0.8),
    ("projections/ts2d_samples/sample_s0616.nrrd", "projection", 0.8),
    ("xray/nih_cxr14/00000001_000.png", "radiograph", 0.8),
    ("xray/dicom/siim_nih_cr_chest_monochrome2.dcm", "radiograph", 0.8),
    ("xray/dicom/highdicom_dx_dog_chest_monochrome1.dcm", "radiograph", 0.8),
    # 1841 x 1955 px at 0.22 mm, predicted at 2 mm: fine detail of the input-grid rule is lost.
    ("xray/dicom/pydicomdata_RG1_UNCR_cr_chest_monochrome1.dcm", "radiograph", 0.65),
])
def test_every_input_kind_end_to_end(data, coronal, xray, tmp_path, relpath, kind, min_iou):
    seg = xray if kind == "radiograph" else coronal
    result = seg(data / relpath)
    assert result.input_kind == kind and result.model == seg.manifest.name
    assert result.masks.plane == result.image.plane  # on the input's own grid
    if kind != "ct":
        assert result.masks.plane.shape == tuple(result.image.array.shape[1:])
    name, truth = expected(result)
    assert truth.any() and iou(result.mask(name), truth) >= min_iou
    assert result.scores[name]["confidence"] > 0.7
    dicom = relpath.endswith(".dcm")
    assert result.is_dicom_radiograph == dicom and ("dicom-seg" in result.default_formats) == dicom
    written = result.save(tmp_path / "out", [f for f in FORMATS if dicom or f != "dicom-seg"])
    assert {p.name for p in written} == {"masks.seg.nrrd", "segmentations", "masks", "overlay.png", "report.json",
                                         *(["masks.dcm"] if dicom else [])}
    assert len(list((tmp_path / "out" / "segmentations").glob("*.nii.gz"))) == len(result.names)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert name in report["present"] and report["structures"][name]["area_mm2"] > 0
    assert report["input_kind"] == kind and report["image"]["shape_hw"] == list(result.masks.plane.shape)


def test_ct_projection_uses_the_model_spacing_and_mode(data, coronal):
    ct = read_ct(data / "ct" / "ts_example" / "ct.nii.gz")
    result = coronal(ct)
    assert result.masks.plane.display == "radiograph"
    assert np.allclose(result.masks.plane.spacing, coronal.manifest.spacing_mm, atol=0.1)
    assert result.image.meta["mode"] == "ts2d"


def _centroid_lps(result, name: str) -> np.ndarray:
    return np.asarray(result.report()["structures"][name]["centroid_lps"])


def test_masks_follow_flipped_and_transposed_projection_headers(data, coronal, tmp_path):
    """The same pixels stored flipped or transposed (with the header saying so) give the same mask, moved along."""
    src = data / "projections" / "ts2d_samples" / "sample_s0332.nrrd"
    image = read_projection(src, display=None)
    reference = coronal(src)
    flipped = replace(image, array=np.ascontiguousarray(image.array[:, ::-1, ::-1]),
                      plane=image.plane.flipped(rows=True, cols=True))
    p = image.plane
    transposed = Image2D(np.ascontiguousarray(image.array.transpose(0, 2, 1)),
                         Plane((p.shape[1], p.shape[0]), (p.spacing[1], p.spacing[0]), p.row_dir, p.col_dir, p.origin),
                         image.channels)
    for variant, undo in ((flipped, lambda m: m[::-1, ::-1]), (transposed, lambda m: m.T)):
        path = write_image2d(variant, tmp_path / f"variant_{len(list(tmp_path.iterdir()))}.nrrd")
        result = coronal(path)
        assert result.masks.plane.shape == variant.plane.shape
        for name in ("bone", "dense"):
            back = undo(result.mask(name))
            assert iou(back, reference.mask(name)) > 0.999
        assert np.allclose(_centroid_lps(result, "bone"), _centroid_lps(reference, "bone"), atol=0.5)


def test_masks_follow_a_flipped_ct_header(data, coronal, tmp_path):
    ct = read_ct(data / "ct" / "ts_example" / "ct.nii.gz")
    g = ct.grid
    m = g.matrix.copy()
    # Reverse index axis i (the last array axis): same voxels in space, stored mirrored.
    origin = np.asarray(g.origin) + m[:, 0] * g.spacing[0] * (g.shape[2] - 1)
    m[:, 0] *= -1
    mirrored = Volume(np.ascontiguousarray(ct.array[:, :, ::-1]),
                      replace(g, origin=tuple(origin), direction=tuple(m.ravel())))
    a, b = coronal(ct), coronal(mirrored)
    assert np.array_equal(a.masks.array, b.masks.array)  # the projection is in the radiograph display either way
    assert np.allclose(a.masks.plane.origin, b.masks.plane.origin, atol=1e-3)


def _dicom_variant(src: Path, out: Path, pixels: np.ndarray, orientation: list[str]) -> Path:
    ds = pydicom.dcmread(src)
    original = ds.pixel_array
    ds.PixelData = np.ascontiguousarray(pixels).astype(original.dtype).tobytes()
    ds.Rows, ds.Columns = pixels.shape
    ds.PatientOrientation = orientation
    if pixels.shape != original.shape:  # transposed: (row, column) spacing swaps too
        ds.PixelSpacing = list(ds.PixelSpacing)[::-1]
    ds.save_as(out)
    return out


def test_masks_follow_the_dicom_patient_orientation(data, xray, tmp_path):
    src = data / "xray" / "dicom" / "highdicom_dx_dog_chest_monochrome1.dcm"
    pixels = pydicom.dcmread(src).pixel_array
    reference = xray(src).mask("bright")
    flipped = xray(_dicom_variant(src, tmp_path / "flip.dcm", pixels[:, ::-1], ["R", "F"]))
    transposed = xray(_dicom_variant(src, tmp_path / "transpose.dcm", pixels.T, ["F", "L"]))
    assert flipped.masks.plane.orientation == ("R", "F")
    assert iou(flipped.mask("bright")[:, ::-1], reference) > 0.999
    assert transposed.masks.plane.shape == pixels.T.shape
    assert iou(transposed.mask("bright").T, reference) > 0.999


def test_lateral_view_is_refused(data, xray, tmp_path):
    src = data / "xray" / "dicom" / "highdicom_dx_dog_chest_monochrome1.dcm"
    lateral = _dicom_variant(src, tmp_path / "lateral.dcm", pydicom.dcmread(src).pixel_array, ["A", "F"])
    with pytest.raises(InputError, match="not a coronal"):
        xray(lateral)


def test_published_layout_runs_as_ts2d(data, tmp_path):
    """TS2D's published layout runs nnU-Net's way: K + 1 outputs, the fork's rule, masks on the CT's own grid."""
    from ts2d_xray.orientation import Orientation
    from ts2d_xray.segment.groups import channel_order, predict_exact

    _, archive = mf.random_pair(tmp_path)
    ct = data / "ct" / "ts_example" / "ct.nii.gz"
    with Segmenter(archive, device="cpu", backend="torch") as seg:  # inspects the torch network
        assert seg.exact and seg.manifest.display == "ts2d"
        result = seg(ct)
        assert result.masks.plane.shape == (112, 122) and result.masks.plane.spacing == (3.0, 3.0)  # TS2D's grid
        image = result.image  # the projection that was segmented
        oriented = Orientation.for_display(image.plane, "ts2d").apply(image)
        group = seg.groups[0]
        assert group.channel_names == ("mean", "max") and group.networks[0].decoder.seg_layers[-1].out_channels == 4
        masks, probs, logits = predict_exact(group, oriented.array[channel_order(group, oriented.channels)],
                                             oriented.plane.spacing)
    assert logits.shape == (4, 1, 112, 122)  # every pixel of a CT projection is non-zero: no crop
    background = torch.sigmoid(torch.from_numpy(logits[0, 0]).float()).numpy() > 0.5
    assert background.any() and not background.all()
    expect = (probs > 0.5) & ~background
    assert np.array_equal(masks, expect) and masks.any()
    ours = Orientation.for_display(result.masks.plane, "ts2d").array(result.masks.array)
    assert np.array_equal(ours, masks)
    with Segmenter(archive, device="cpu", exact=False) as fast:  # ts2d-xray's padding: same grid, not TS2D's masks
        assert fast(ct).masks.plane == result.masks.plane


def test_sliding_windows_are_exact_for_a_pointwise_model(coronal):
    group = coronal.groups[0]  # patch 64 x 64: a 150 x 200 image needs windows
    x = torch.linspace(-2, 12, 2 * 150 * 200).reshape(2, 150, 200)
    logits = predict_logits(group, x, batch_size=3)
    source = x[1]
    expect = mf.GAIN * (source.clamp(min=0) - torch.tensor([3.0, 10.0])[:, None, None])
    inside = source > 0.5
    assert torch.allclose(logits[:, inside], expect[:, inside], atol=1e-3)
    assert window_starts(200, 64) == [0, 27, 54, 82, 109, 136]  # nnU-Net's rounding
    assert window_starts(50, 64) == [0]


def test_tta_and_group_selection(data, coronal_model):
    src = data / "projections" / "ts2d_samples" / "sample_s0332.nrrd"
    with Segmenter(coronal_model, device="cpu", groups=["soft"], tta=True) as seg:
        result = seg(src)
    assert result.names == ("dense_soft",)
    with Segmenter(coronal_model, device="cpu", groups=["soft"]) as seg:
        plain = seg(src)
    assert iou(result.mask("dense_soft"), plain.mask("dense_soft")) > 0.999  # shifts change nothing pointwise
    with pytest.raises(ValueError, match="has no group 'lungs'"):
        Segmenter(coronal_model, device="cpu", groups=["lungs"])


def test_array_and_image_inputs(data, coronal, xray):
    proj = read_projection(data / "projections" / "ts2d_samples" / "sample_s0332.nrrd")  # radiograph display
    from_image = coronal(proj)
    from_array = coronal(proj.array, spacing=proj.plane.spacing)
    assert from_array.source is None
    assert iou(from_array.mask("bone"), from_image.mask("bone")) > 0.999
    gray = np.zeros((100, 80), np.float32)
    gray[20:40, 10:30] = 1.0
    result = xray(gray, spacing=2.0)
    assert result.mask("bright")[20:40, 10:30].all() and not result.mask("bright")[60:].any()
    with pytest.raises(InputError, match="segments coronal CT projections"):
        coronal(gray)
    with pytest.raises(InputError, match="segments radiographs"):
        xray(proj)


def test_save_writes_nothing_when_a_format_fails(data, coronal, tmp_path, monkeypatch):
    import ts2d_xray.segment.result

    result = coronal(data / "projections" / "ts2d_samples" / "sample_s0332.nrrd")
    monkeypatch.setattr(ts2d_xray.segment.result, "write_preview", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        result.save(tmp_path / "out", ["seg.nrrd", "overlay", "json"])
    assert list(tmp_path.iterdir()) == []  # no empty case folder, no temporary folder
    with pytest.raises(ValueError, match="unknown output format 'pdf'"):
        result.save(tmp_path / "out", ["pdf"])


def test_cli_segments_folders_and_globs_with_the_installed_model(data, xray_model, tmp_path, capsys):
    install_model(xray_model)
    out = tmp_path / "out"
    code = main(["segment", str(data / "xray" / "nih_cxr14"), str(data / "xray" / "dicom" / "highdicom_*.dcm"),
                 "-o", str(out), "--device", "cpu", "--format", "seg.nrrd,json"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("model xray-test" in line and "radiograph" in line for line in lines)
    assert sorted(p.name for p in out.iterdir()) == ["00000001_000", "00027426_000",
                                                     "highdicom_dx_dog_chest_monochrome1"]
    assert sorted(p.name for p in (out / "00000001_000").iterdir()) == ["masks.seg.nrrd", "report.json"]


def test_dicom_radiographs_get_a_dicom_seg_by_default(data, xray, xray_model, tmp_path, capsys):
    """The CLI's default formats add dicom-seg for a DICOM radiograph; other inputs refuse it, writing nothing."""
    import highdicom as hd

    dog = data / "xray" / "dicom" / "highdicom_dx_dog_chest_monochrome1.dcm"
    png = data / "xray" / "nih_cxr14" / "00000001_000.png"
    out = tmp_path / "out"
    assert main(["segment", str(dog), str(png), "-o", str(out), "--model", str(xray_model), "--device", "cpu"]) == 0
    assert sorted(p.name for p in (out / dog.stem).iterdir()) == ["masks.dcm", "masks.seg.nrrd", "overlay.png",
                                                                  "report.json"]
    assert sorted(p.name for p in (out / png.stem).iterdir()) == ["masks.seg.nrrd", "overlay.png", "report.json"]
    seg = hd.seg.segread(out / dog.stem / "masks.dcm")
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
        pydicom.dcmread(dog, stop_before_pixels=True).SOPInstanceUID
    capsys.readouterr()
    result = xray(png)
    with pytest.raises(InputError, match="a DICOM SEG is written for DICOM radiographs only"):
        result.save(tmp_path / "png-out", ["seg.nrrd", "dicom-seg"])
    assert not (tmp_path / "png-out").exists()
    code = main(["segment", str(png), "-o", str(tmp_path / "cli"), "--model", str(xray_model), "--device", "cpu",
                 "--format", "dicom-seg"])
    assert code == 2 and "DICOM radiographs only" in capsys.readouterr().err
    assert _no_outputs(tmp_path / "cli")


def _no_outputs(folder: Path) -> bool:
    return not folder.exists() or not any(folder.rglob("*"))


def _corrupted_model(tmp: Path) -> Path:
    folder = mf.deterministic_bundle(tmp / "broken", manifest=False)
    ckpt = next(folder.rglob("checkpoint_final.pth"))
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    return folder


def _huge_header(tmp: Path) -> Path:
    (tmp / "huge.raw").write_bytes(b"\0")
    header = tmp / "huge.nhdr"
    header.write_text("NRRD0004\ntype: float\ndimension: 2\nsizes: 100000 100000\nendian: little\n"
                      "encoding: raw\ndata file: huge.raw\n")
    return header


def _four_d(tmp: Path) -> Path:
    import SimpleITK as sitk

    path = tmp / "four_d.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.float32), isVector=False), str(path))
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "missing.png: no such file or folder"),
    ("unreadable", "not a readable PNG/JPEG image"),
    ("four_d", "4D image"),
    ("channels", "model 'coronal-test' segments coronal CT projections"),
    ("corrupted", "corrupted or unreadable checkpoint"),
    ("huge", "exceeds the limit of 40,000,000 pixels"),
    ("unknown_model", "unknown model 'ts2d_cardiac'"),
    ("no_model", "no coronal model to use"),
    ("device", "device 'cuda:0' was asked for, but torch"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(data, coronal_model, tmp_path, capsys, monkeypatch,
                                                            case, message):
    if case == "device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if case == "no_model":  # neither installed nor bundled models
        monkeypatch.setattr("ts2d_xray.segment.models.BUNDLED_DIR", tmp_path / "no-bundled-models")
    out = tmp_path / "out"
    png = data / "xray" / "nih_cxr14" / "00000001_000.png"
    ct = data / "ct" / "ts_example" / "ct.nii.gz"
    (tmp_path / "bad.png").write_bytes(b"this is not a PNG")
    inputs = {"missing": tmp_path / "missing.png", "unreadable": tmp_path / "bad.png", "four_d": _four_d(tmp_path),
              "channels": png, "huge": _huge_header(tmp_path)}.get(case, ct)
    model = {"corrupted": _corrupted_model(tmp_path), "unknown_model": "ts2d_cardiac", "no_model": None}.get(
        case, coronal_model)
    argv = ["segment", str(inputs), "-o", str(out), "--device", "cuda:0" if case == "device" else "cpu"]
    argv += ["--model", str(model)] if model is not None else []
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert _no_outputs(out)


@pytest.mark.filterwarnings("ignore:.*not catalog classes")  # segmentations_v1 holds a few non-catalog files
def test_a_model_trained_by_ts2d_xray_train_installs_and_segments(data, tmp_path, capsys):
    """The trainer's own output folder (no manifest) is a model: install it and segment a CT with the CLI."""
    from synth.build import BuildOptions, SampleSpec, build
    from ts2d_xray.train import TrainOptions, get_config, train

    source = tmp_path / "subjects"
    for name, ct, labels in (("s1", data / "ct" / "ts_example" / "ct.nii.gz", data / "ct" / "ts_example" / "segmentations_v1"),
                             ("s2", data / "ct" / "crops" / "aorta" / "ct.nii.gz", None)):
        (source / name).mkdir(parents=True)
        (source / name / "ct.nii.gz").symlink_to(ct)
        if labels is None:
            (source / name / "segmentations").mkdir()
            for m in ("aorta.nii.gz", "vertebrae_T12.nii.gz"):
                (source / name / "segmentations" / m).symlink_to(data / "ct" / "crops" / "aorta" / m)
        else:
            (source / name / "segmentations").symlink_to(labels, target_is_directory=True)
    dataset = tmp_path / "Dataset001_Coronal"
    build(source, dataset, BuildOptions(SampleSpec("coronal", seed=1), groups=("cardiac",)))
    config = replace(get_config("tiny"), epochs=2, iterations_per_epoch=3)
    trained = train(next(p for p in [dataset / "cardiac", dataset] if (p / "dataset.json").is_file()),
                    tmp_path / "model", config, TrainOptions(device="cpu", fold="all"))
    assert trained.final_checkpoint.is_file()
    assert main(["models", "install", str(tmp_path / "model"), "--name", "tiny-cardiac"]) == 0
    out = tmp_path / "out"
    assert main(["segment", str(data / "ct" / "ts_example" / "ct.nii.gz"), "-o", str(out), "--device", "cpu"]) == 0
    assert "model tiny-cardiac" in capsys.readouterr().out
    report = json.loads((out / "ct" / "report.json").read_text())
    assert "heart" in report["structures"] and report["model"] == "tiny-cardiac"


def test_inputs_expand_folders_series_and_names(data, tmp_path):
    from ts2d_xray.segment.inputs import expand_inputs, output_stems

    series = data / "ct" / "ts_example_dicom" / "dicom"
    assert expand_inputs([series]) == [series]  # a CT series folder is one input
    views = tmp_path / "views"  # two radiographs of one series are two inputs, not a volume
    views.mkdir()
    src = data / "xray" / "dicom" / "highdicom_dx_dog_chest_monochrome1.dcm"
    for name in ("a.dcm", "b.dcm"):
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(views / name)
    assert expand_inputs([views]) == [views / "a.dcm", views / "b.dcm"]
    png = data / "xray" / "nih_cxr14"
    assert expand_inputs([str(png / "*.png"), png / "00000001_000.png"]) == sorted(png.glob("*.png"))
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.nrrd")])
    stems = output_stems([Path("a/ct.nii.gz"), Path("b/ct.nii.gz"), Path("x/scan.dcm"), series])
    assert stems == ["a_ct", "b_ct", "scan", "dicom"]


# --- options (issue 14.5, 14.7) ---------------------------------------------------------
def test_upsampling_only_where_a_structure_can_reach_its_threshold_gives_torchs_masks():
    """add_masks computes torch's bilinear upsampling inside each structure's reachable box: the same masks."""
    import torch.nn.functional as F

    from ts2d_xray.segment.groups import add_masks

    rng = np.random.default_rng(0)
    low = torch.from_numpy(rng.random((5, 37, 23), dtype=np.float32))
    low[1] = 0.0  # an empty structure
    low[2] *= 0.6  # a few pixels above the threshold
    thresholds = [0.5, 0.5, 0.55, 0.9, 0.3]
    for h, w in ((37, 23), (100, 61), (257, 400), (20, 12)):  # same size, up, very unequal factors, down
        masks = np.zeros((6, h, w), bool)
        add_masks(masks, low, thresholds, [0, 1, 2, 3, 5])
        up = F.interpolate(low[None], size=(h, w), mode="bilinear", align_corners=False,
                           antialias=(h < 37 or w < 23))[0]
        expect = (up >= torch.tensor(thresholds)[:, None, None]).numpy()
        assert np.array_equal(masks[[0, 1, 2, 3, 5]], expect) and not masks[4].any(), (h, w)


def test_structures_option_runs_and_writes_only_those(data, tmp_path, capsys):
    """--structures lungs,heart: the lobes and the heart, in every output; names the catalog lacks are refused."""
    film = data / "xray" / "dicom" / "siim_nih_cr_chest_monochrome2.dcm"
    out = tmp_path / "out"
    assert main(["segment", str(film), "-o", str(out), "--device", "cpu", "--structures", "lungs,heart",
                 "--format", "seg.nrrd,png,json"]) == 0
    report = json.loads((out / film.stem / "report.json").read_text())
    lobes = {"lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
             "lung_lower_lobe_right"}
    assert set(report["structures"]) == lobes | {"heart"} and report["cardiothoracic_ratio"] is not None
    assert {p.stem for p in (out / film.stem / "masks").glob("*.png")} == lobes | {"heart"}
    from ts2d_xray.io import read_masks

    assert set(read_masks(out / film.stem / "masks.seg.nrrd").names) == lobes | {"heart"}
    capsys.readouterr()
    assert main(["segment", str(film), "-o", str(tmp_path / "bad"), "--structures", "hart"]) == 2
    assert "did you mean heart" in capsys.readouterr().err
    assert main(["segment", str(film), "-o", str(tmp_path / "bad"), "--groups", "organs"]) == 2
    assert "has no group 'organs'; its groups: all" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_spacing_option_replaces_a_radiographs_and_is_refused_for_others(data, tmp_path, capsys):
    png = data / "xray" / "nih_cxr14" / "00000001_000.png"
    out = tmp_path / "out"
    assert main(["segment", str(png), "-o", str(out), "--device", "cpu", "--structures", "heart", "--spacing", "0.5",
                 "--format", "json"]) == 0
    image = json.loads((out / png.stem / "report.json").read_text())["image"]
    assert image["spacing_mm"] == [0.5, 0.5] and image["spacing_source"] == "given" and not image["spacing_assumed"]
    assert image["file_grid"]["spacing"] == [1.0, 1.0, 1.0]  # the files keep the PNG's ITK geometry
    projection = data / "projections" / "ts2d_samples" / "sample_s0332.nrrd"
    capsys.readouterr()
    assert main(["segment", str(projection), "-o", str(tmp_path / "p"), "--spacing", "1"]) == 2
    assert "--spacing is for radiographs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", str(png), "-o", str(tmp_path / "p"), "--spacing", "0"])


def test_version_and_fast_flags(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"ts2d-xray {version('ts2d-xray')}"
    from ts2d_xray.cli.main import build_parser

    args = build_parser().parse_args(["segment", "x.png", "-o", "out", "--fast"])
    assert args.fast and not build_parser().parse_args(["segment", "x.png", "-o", "out"]).fast


def test_segmenter_without_a_model_picks_the_default_of_each_input_kind(data):
    """Segmenter() chooses per input kind, as the CLI does, loading each default model once, when first needed."""
    from ts2d_xray.segment import SegmentOptions

    with Segmenter(device="cpu", structures=["heart"]) as seg:
        assert seg._by_kind == {}
        with pytest.raises(ValueError, match="picks the default model"):
            seg.manifest
        film = seg(data / "xray" / "nih_cxr14" / "00000001_000.png")
        projection = seg(data / "projections" / "ts2d_samples" / "sample_s0332.nrrd")
        assert (film.model, projection.model) == ("ts2d-xray-xray", "ts2d-xray-coronal")
        assert film.names == projection.names == ("heart",)
        assert seg(data / "xray" / "nih_cxr14" / "00027426_000.png").model == "ts2d-xray-xray"
        assert sorted(seg._by_kind) == ["coronal", "xray"]
    with pytest.raises(TypeError, match="not both"):
        Segmenter(options=SegmentOptions(), device="cpu")
    with pytest.raises(TypeError, match="unexpected keyword"):
        Segmenter(devise="cpu")
    with pytest.raises(ValueError, match="unknown structure 'hart'"):
        Segmenter("ts2d-xray-xray", structures=["hart"])


def test_structures_load_only_the_groups_that_predict_them(data, coronal_model):
    """A model's own names work too; a group none of whose structures is asked for is not even loaded."""
    src = data / "projections" / "ts2d_samples" / "sample_s0332.nrrd"
    with Segmenter(coronal_model, device="cpu", structures=["dense_soft"]) as seg:
        assert [g.name for g in seg.groups] == ["soft"]
        assert seg(src).names == ("dense_soft",)
    with Segmenter(coronal_model, device="cpu", structures=["dense", "bone"]) as seg:
        assert [g.name for g in seg.groups] == ["bones"] and seg.structures == ("bone", "dense")
    with pytest.raises(ValueError, match="predicts no structure of 'heart'"):
        Segmenter(coronal_model, device="cpu", structures=["heart"])


def test_masks_select_can_skip_absent_structures():
    from ts2d_xray.image import Masks

    masks = Masks(np.ones((2, 3, 4), bool), ("heart", "lung_upper_lobe_left"), Plane((3, 4), (1.0, 1.0)))
    with pytest.raises(KeyError, match="liver"):
        masks.select(["lungs", "liver"])
    picked = masks.select(["lungs", "liver", "heart"], missing="skip")
    assert picked.names == ("lungs", "heart") and picked.array.shape == (2, 3, 4)
    with pytest.raises(ValueError, match="did you mean"):
        masks.select(["hart"], missing="skip")
    with pytest.raises(ValueError, match="missing must be"):
        masks.select(["heart"], missing="ignore")
