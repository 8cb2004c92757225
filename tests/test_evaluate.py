"""Tests of ts2d_xray.evaluate and `ts2d-xray evaluate`: metrics, inputs, grids, outputs, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ts2d_xray.cli import main
from ts2d_xray.errors import InputError
from ts2d_xray.evaluate import boundary, dice, evaluate, hd95, read_mapping, score_masks, surface_distances
from ts2d_xray.image import Masks, Plane
from ts2d_xray.io import write_masks
from ts2d_xray.io.masks import write_mask_folder

# Radiograph display (columns toward the patient's left, rows toward the feet), 1.5 mm.
ORIGIN = (-100.0, 50.0, 300.0)


def _plane(shape=(40, 60), spacing=(1.5, 1.5), origin=ORIGIN, col=(1.0, 0.0, 0.0)) -> Plane:
    return Plane(shape, spacing, col_dir=col, row_dir=(0.0, 0.0, -1.0), origin=origin)


def _chest(plane: Plane | None = None) -> Masks:
    """Two left lung lobes, heart, liver on a 40 x 60 plane; blocks of 2 x 2 pixels."""
    plane = plane or _plane()
    a = np.zeros((4, 40, 60), bool)
    a[0, 4:14, 34:50] = True    # lung_upper_lobe_left (patient's left: image right)
    a[1, 14:26, 34:52] = True   # lung_lower_lobe_left
    a[2, 12:24, 22:40] = True   # heart
    a[3, 26:38, 6:30] = True    # liver
    return Masks(a, ("lung_upper_lobe_left", "lung_lower_lobe_left", "heart", "liver"), plane)


def _png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


# --- metrics, hand-computed ------------------------------------------------------------
def test_dice_hand_computed():
    a = np.zeros((8, 8), bool)
    a[2:6, 0:4] = True  # 16 px
    b = np.roll(a, 2, axis=1)  # 16 px, 8 shared
    assert dice(a, b) == pytest.approx(2 * 8 / 32)
    assert dice(a, a) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        dice(a, a[:4])


def test_hd95_in_mm_with_anisotropic_spacing():
    spacing = (2.0, 0.5)  # 2 mm between rows, 0.5 mm between columns
    a = np.zeros((5, 9), bool)
    a[2, 2] = True
    down, right = np.zeros_like(a), np.zeros_like(a)
    down[3, 2] = True
    right[2, 3] = True
    assert hd95(a, down, spacing) == pytest.approx(2.0)
    assert hd95(a, right, spacing) == pytest.approx(0.5)
    # Pooled symmetric distances {0} + {0, 4 columns * 0.5 mm}: 95th percentile of
    # [0, 0, 2] by linear interpolation = 0 + 0.9 * 2.
    b = a.copy()
    b[2, 6] = True
    assert hd95(a, b, spacing) == pytest.approx(1.8)
    assert hd95(b, a, spacing) == pytest.approx(1.8)
    assert hd95(a, b, spacing, percentile=100) == pytest.approx(2.0)  # the Hausdorff distance
    d_ab, d_ba = surface_distances(a, b, spacing)
    assert sorted(d_ab) == [0.0] and sorted(d_ba) == pytest.approx([0.0, 2.0])
    # A 3 x 3 block and the same block 2 rows lower: each boundary pixel is 0, 2 or 4 mm away.
    block = np.zeros((10, 10), bool)
    block[2:5, 2:5] = True
    lower = np.roll(block, 2, axis=0)
    d_ab, d_ba = surface_distances(block, lower, spacing)
    assert sorted(d_ab) == pytest.approx([0, 0, 0, 2, 2, 4, 4, 4])
    assert hd95(block, lower, spacing) == pytest.approx(4.0)


def _block_and_stray_pixel() -> tuple[np.ndarray, np.ndarray]:
    """A 3 x 3 block (ground truth) and the same block plus one pixel 8 columns to its right (prediction)."""
    gt = np.zeros((8, 14), bool)
    gt[2:5, 2:5] = True
    pred = gt.copy()
    pred[3, 12] = True
    return pred, gt


def test_hd95_variants_pooled_and_max_directed_differ_by_hand():
    pred, gt = _block_and_stray_pixel()
    d_pg, d_gp = surface_distances(pred, gt, (1.0, 1.0))
    assert sorted(d_pg) == pytest.approx([0] * 8 + [8]) and sorted(d_gp) == pytest.approx([0] * 8)
    # Pooled: 16 zeros and one 8; 95th percentile at rank 0.95 * 16 = 15.2 -> 0.2 * 8.
    assert hd95(pred, gt, 1.0) == pytest.approx(1.6)
    assert hd95(pred, gt, 1.0, variant="pooled") == pytest.approx(1.6)
    # Max-directed (MONAI, DeepMind): pred -> gt: 8 zeros and one 8, rank 0.95 * 8 = 7.6 -> 0.6 * 8;
    # gt -> pred: 0.  The larger one.
    assert hd95(pred, gt, 1.0, variant="max-directed") == pytest.approx(4.8)
    assert hd95(gt, pred, 1.0, variant="max-directed") == pytest.approx(4.8)  # symmetric
    assert hd95(pred, gt, (2.0, 0.5), variant="max-directed") == pytest.approx(4.8 * 0.5)  # columns of 0.5 mm
    for variant in ("pooled", "max-directed"):  # the 100th percentile is the Hausdorff distance either way
        assert hd95(pred, gt, 1.0, percentile=100, variant=variant) == pytest.approx(8.0)
    empty = np.zeros_like(gt)
    assert hd95(empty, empty, 1.0, variant="max-directed") == 0.0
    assert math.isnan(hd95(gt, empty, 1.0, variant="max-directed"))
    with pytest.raises(ValueError, match="hd95 variant must be one of pooled, max-directed; got 'mean'"):
        hd95(pred, gt, 1.0, variant="mean")


def test_evaluate_reports_the_hd95_variant(tmp_path):
    pred_mask, gt_mask = _block_and_stray_pixel()
    plane = Plane(gt_mask.shape, (1.0, 1.0))
    pred, gt = Masks(pred_mask[None], ("liver",), plane), Masks(gt_mask[None], ("liver",), plane)
    pooled = evaluate(pred, gt)
    assert pooled.hd95_variant == "pooled" and pooled.score("liver").hd95_mm == pytest.approx(1.6)
    assert pooled.summary()["hd95_variant"] == "pooled" and "HD95 (" not in pooled.table()
    report = evaluate(pred, gt, hd95_variant="max-directed", min_area_mm2=0)
    assert report.score("liver").hd95_mm == pytest.approx(4.8)
    summary = report.summary()
    assert summary["hd95_variant"] == "max-directed" and summary["mean_hd95_mm"] == pytest.approx(4.8)
    assert summary["conventions"]["hd95_mm"].startswith("maximum of the two directed 95th percentiles")
    assert "HD95 (max-directed) 4.80 mm" in report.table()
    with pytest.raises(ValueError, match="hd95 variant must be one of"):
        evaluate(pred, gt, hd95_variant="max")


def test_cli_hd95_option_and_files_written_before_the_table(tmp_path, capsys, monkeypatch):
    import ts2d_xray.cli.evaluate as cli_evaluate

    pred_mask, gt_mask = _block_and_stray_pixel()
    plane = _plane(gt_mask.shape)
    write_masks(Masks(pred_mask[None], ("liver",), plane), tmp_path / "pred.seg.nrrd")
    write_masks(Masks(gt_mask[None], ("liver",), plane), tmp_path / "gt.nii.gz")
    args = ["evaluate", str(tmp_path / "pred.seg.nrrd"), str(tmp_path / "gt.nii.gz"), "--min-area", "0"]
    assert main([*args, "--hd95", "max-directed", "-o", str(tmp_path / "max")]) == 0
    assert "HD95 (max-directed) 7.20 mm" in capsys.readouterr().out  # 4.8 pixels of 1.5 mm
    rows = list(csv.DictReader(open(tmp_path / "max" / "metrics.csv")))
    assert float(rows[0]["hd95_mm"]) == pytest.approx(7.2)
    assert json.loads((tmp_path / "max" / "summary.json").read_text())["hd95_variant"] == "max-directed"
    assert main([*args, "-o", str(tmp_path / "pooled")]) == 0  # the default
    assert float(next(csv.DictReader(open(tmp_path / "pooled" / "metrics.csv")))["hd95_mm"]) == pytest.approx(2.4)
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--hd95", "mean"])
    assert exit_info.value.code == 2 and "invalid choice: 'mean'" in capsys.readouterr().err

    def broken_pipe(*_args: object, **_kwargs: object) -> None:
        raise BrokenPipeError("stdout closed")

    monkeypatch.setattr(cli_evaluate, "print", broken_pipe, raising=False)
    try:
        main([*args, "-o", str(tmp_path / "first")])
    except BrokenPipeError:
        pass
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == ["dice_boxplot.png", "metrics.csv",
                                                                     "summary.json"]


def test_boundary_includes_the_image_edge():
    full = np.ones((3, 4), bool)
    edge = boundary(full)
    assert edge.sum() == 10 and not edge[1, 1:3].any()


def test_empty_masks_conventions_and_robust_summary():
    plane = _plane((10, 10), (1.0, 1.0))
    empty, square = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    square[2:8, 2:8] = True  # 36 mm^2
    assert dice(empty, empty) == 1.0 and hd95(empty, empty, (1, 1)) == 0.0
    assert dice(empty, square) == 0.0 and math.isnan(hd95(square, empty, (1, 1)))
    pred = Masks(np.stack([square, square, empty]), ("heart", "liver", "spleen"), plane)
    gt = Masks(np.stack([square, empty, empty]), ("heart", "liver", "spleen"), plane)
    scores = {s.structure: s for s in score_masks(pred, gt, min_area_mm2=10)}
    assert scores["heart"].dice == 1.0 and scores["heart"].gt_present
    assert scores["liver"].dice == 0.0 and math.isnan(scores["liver"].hd95_mm)
    assert scores["liver"].pred_present and not scores["liver"].gt_present and not scores["liver"].presence_correct
    assert scores["spleen"].dice == 1.0 and scores["spleen"].presence_correct
    report = evaluate(pred, gt, min_area_mm2=10)
    summary = report.summary()
    assert summary["mean_dice"] == 1.0  # liver and spleen are absent in GT: not in the mean
    assert summary["structures_in_mean"] == 1
    assert summary["presence_accuracy"] == pytest.approx(2 / 3)
    assert summary["per_structure"]["liver"]["hd95_mm_mean"] is None
    # Below the default 50 mm^2 nothing is "present", but Dice is still computed.
    assert not evaluate(pred, gt).score("heart").gt_present


# --- inputs, mapping and grids -------------------------------------------------------------
def test_mapping_with_derived_structure(tmp_path):
    pred = _chest()
    write_masks(pred, tmp_path / "pred.seg.nrrd")
    gt_dir = tmp_path / "gt"
    _png(gt_dir / "lung_field_left.png", pred.mask("lung_left"))
    heart = ndimage.binary_erosion(pred.mask("heart"))
    _png(gt_dir / "heart_outline.png", heart)
    _png(gt_dir / "liver.png", pred.mask("liver"))  # a catalog name: no mapping needed
    _png(gt_dir / "annotator_notes.png", pred.mask("liver"))  # neither: skipped with a note
    mapping = tmp_path / "map.yaml"
    mapping.write_text("lung_field_left.png: lung_left\nheart_outline: heart\n")
    report = evaluate(tmp_path / "pred.seg.nrrd", gt_dir, mapping)
    assert report.structures == ("heart", "liver", "lung_left")
    assert report.score("lung_left").dice == 1.0 and report.score("lung_left").hd95_mm == 0.0
    assert report.score("heart").dice == pytest.approx(dice(pred.mask("heart"), heart))
    assert report.score("heart").hd95_mm == pytest.approx(hd95(pred.mask("heart"), heart, (1.5, 1.5)))
    assert any("annotator_notes" in n for n in report.notes)
    assert read_mapping(mapping) == {"lung_field_left.png": "lung_left", "heart_outline": "heart"}


@pytest.mark.parametrize("text, message", [
    ("lung_field_left.png: lung_leftt\n", "unknown structure 'lung_leftt'; did you mean lung_left"),
    ("lung_field_left.png: [lung_left\n", "not valid YAML at line"),
    ("- lung_left\n", "must be a non-empty set of 'mask name: structure'"),
    ("a.png: heart\nb.png: heart\n", "several masks map to heart"),
    ("missing.png: heart\n", "the mapping names masks that are not there: missing.png"),
])
def test_bad_mappings(tmp_path, text, message):
    pred = _chest()
    write_masks(pred, tmp_path / "pred.seg.nrrd")
    _png(tmp_path / "gt" / "lung_field_left.png", pred.mask("lung_left"))
    (tmp_path / "map.yaml").write_text(text)
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        evaluate(tmp_path / "pred.seg.nrrd", tmp_path / "gt", tmp_path / "map.yaml")


def test_png_masks_take_the_prediction_grid_only_when_shapes_match(tmp_path):
    pred = _chest(_plane(spacing=(2.0, 0.5)))
    write_masks(pred, tmp_path / "pred.seg.nrrd")
    _png(tmp_path / "gt" / "liver.png", np.roll(pred.mask("liver"), 1, axis=0))
    report = evaluate(tmp_path / "pred.seg.nrrd", tmp_path / "gt")
    assert report.score("liver").hd95_mm == pytest.approx(2.0)  # one row = 2 mm, from the prediction's spacing
    _png(tmp_path / "small" / "liver.png", pred.mask("liver")[:, :30])
    with pytest.raises(InputError, match=r"small: PNG/JPEG masks carry no pixel spacing.*30x40 px.*60x40 px"):
        evaluate(tmp_path / "pred.seg.nrrd", tmp_path / "small")


def test_prediction_is_flipped_and_resampled_onto_the_ground_truth_grid():
    fine = _chest()  # radiograph display, 1.5 mm
    # The same masks at 3 mm, edges kept: a 3 mm pixel centre falls in 1.5 mm pixel 2r + 1.
    coarse_plane = _plane((20, 30), (3.0, 3.0), origin=(ORIGIN[0] + 0.75, ORIGIN[1], ORIGIN[2] - 0.75))
    gt = Masks(fine.array[:, 1::2, 1::2], fine.names, coarse_plane)
    # The prediction in TS2D's display (columns toward the patient's right).
    ts2d_plane = fine.plane.flipped(rows=False, cols=True)
    pred = Masks(fine.array[:, :, ::-1], fine.names, ts2d_plane)
    report = evaluate(pred, gt)
    assert all(s.dice == 1.0 and s.hd95_mm == 0.0 for s in report.scores)
    derived = evaluate(pred, gt, structures=["lung_left"])  # the union of the lobes on both sides
    assert derived.score("lung_left").dice == 1.0
    # Without positions (radiographs), the same field of view: edges aligned.
    unplaced = Masks(fine.array, fine.names, _plane(origin=None))
    gt_unplaced = Masks(gt.array, gt.names, _plane((20, 30), (3.0, 3.0), origin=None))
    assert all(s.dice == 1.0 for s in evaluate(unplaced, gt_unplaced).scores)
    with pytest.raises(InputError, match="physical sizes differ"):
        evaluate(unplaced, Masks(gt.array, gt.names, _plane((20, 30), (2.0, 2.0), origin=None)))
    lateral = Masks(fine.array, fine.names, _plane(col=(0.0, 1.0, 0.0)))
    with pytest.raises(InputError, match="not parallel"):
        evaluate(lateral, gt)


def test_folder_vs_folder(tmp_path):
    truth = _chest()
    shifted = Masks(np.roll(truth.array, 2, axis=2), truth.names, truth.plane)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    write_masks(truth, pred_dir / "s01" / "masks.seg.nrrd")  # a result folder of `segment`
    write_masks(shifted, pred_dir / "s02.seg.nrrd")
    write_masks(truth, pred_dir / "s04.seg.nrrd")  # no ground truth: a note
    write_masks(truth, gt_dir / "s01.nii.gz")  # NIfTI + JSON sidecar
    write_masks(truth, gt_dir / "s02")  # PNG folder with structures.json
    write_masks(truth, gt_dir / "s03.seg.nrrd")  # no result: a note
    report = evaluate(pred_dir, gt_dir, structures=["heart", "lungs"])
    assert report.cases == ("s01", "s02") and report.structures == ("heart", "lungs")
    assert report.score("heart", "s01").dice == 1.0
    expected = dice(shifted.mask("heart"), truth.mask("heart"))
    assert report.score("heart", "s02").dice == pytest.approx(expected) and expected < 1
    assert any("s04" in n for n in report.notes) and any("s03" in n for n in report.notes)
    per = report.summary()["per_structure"]["heart"]
    assert per["cases"] == 2 and per["dice_mean"] == pytest.approx((1 + expected) / 2, abs=1e-6)
    paths = report.save(tmp_path / "report")
    assert [p.name for p in paths] == ["metrics.csv", "summary.json", "dice_boxplot.png"]
    rows = list(csv.DictReader(open(tmp_path / "report" / "metrics.csv")))
    assert [(r["case"], r["structure"]) for r in rows] == [("s01", "heart"), ("s01", "lungs"),
                                                           ("s02", "heart"), ("s02", "lungs")]
    assert Image.open(tmp_path / "report" / "dice_boxplot.png").size[0] > 300
    assert "GT in" in report.table()  # the several-case table
    assert not list(tmp_path.glob(".tmp-*"))


def test_segment_nifti_output_is_read_as_a_result(tmp_path):
    """segment's ``segmentations/`` (one NIfTI per structure + structures.json) in a result folder, or given alone."""
    truth = _chest(_plane(origin=None))  # a radiograph: no position
    shifted = Masks(np.roll(truth.array, 3, axis=1), truth.names, truth.plane)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    write_mask_folder(truth, pred_dir / "s01" / "segmentations", ".nii.gz")
    write_mask_folder(shifted, pred_dir / "s02" / "segmentations", ".nii.gz")
    write_mask_folder(truth, gt_dir / "s01", ".png")
    write_mask_folder(truth, gt_dir / "s02", ".png")
    report = evaluate(pred_dir, gt_dir, structures=["heart", "liver"])
    assert report.cases == ("s01", "s02") and not report.notes
    assert report.score("heart", "s01").dice == 1.0
    assert report.score("heart", "s02").dice == pytest.approx(dice(shifted.mask("heart"), truth.mask("heart")))
    single = evaluate(pred_dir / "s02" / "segmentations", gt_dir / "s02", structures=["liver"])
    assert single.cases == ("s02",)  # the case is the result folder's name
    assert single.score("liver", "s02").dice == report.score("liver", "s02").dice


# --- real data ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def projected(data):
    """TotalSegmentator v2 labels of the example CT, projected at 1.5 mm (radiograph display)."""
    from ts2d_xray.io import read_labels
    from ts2d_xray.projection import project_labels

    seg = data / "ct" / "ts_example" / "seg_v2_multilabel.nii.gz"
    return seg, project_labels(read_labels(seg, classmap="v2"), spacing=1.5)


def test_real_projection_perturbed(projected, tmp_path, capsys):
    _, masks = projected
    array = masks.array.copy()
    liver, spleen = masks.names.index("liver"), masks.names.index("spleen")
    array[liver] = ndimage.binary_erosion(array[liver], iterations=3)
    array[spleen] = np.zeros_like(array[spleen])
    array[spleen][5:, :] = masks.array[spleen][:-5, :]  # 5 rows (7.5 mm) toward the feet
    perturbed = Masks(array, masks.names, masks.plane)
    write_masks(masks, tmp_path / "pred.seg.nrrd")
    write_masks(perturbed, tmp_path / "gt.nii.gz")
    out = tmp_path / "report"
    assert main(["evaluate", str(tmp_path / "pred.seg.nrrd"), str(tmp_path / "gt.nii.gz"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "liver" in printed and "presence correct 61/61" in printed
    rows = {r["structure"]: r for r in csv.DictReader(open(out / "metrics.csv"))}
    assert len(rows) == 61
    spacing = masks.plane.spacing
    for name in ("liver", "spleen"):
        direct_dice = dice(masks.mask(name), perturbed.mask(name))
        direct_hd = hd95(masks.mask(name), perturbed.mask(name), spacing)
        assert 0 < direct_dice < 1 and direct_hd > 0
        assert float(rows[name]["dice"]) == pytest.approx(direct_dice, rel=1e-5)
        assert float(rows[name]["hd95_mm"]) == pytest.approx(direct_hd, rel=1e-5)
    assert float(rows["spleen"]["hd95_mm"]) == pytest.approx(7.5)  # every boundary pixel moved 7.5 mm or less
    others = [r for n, r in rows.items() if n not in ("liver", "spleen")]
    assert all(float(r["dice"]) == 1.0 and float(r["hd95_mm"]) == 0.0 for r in others)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["structures_in_mean"] == 61 and 0.9 < summary["mean_dice"] < 1


def test_vs_3d_projected_labels_against_themselves(projected, tmp_path, capsys):
    seg, masks = projected
    # A result folder as `segment` writes it, with one structure absent from the scan.
    pred = Masks(np.concatenate([masks.array, np.zeros((1, *masks.plane.shape), bool)]),
                 masks.names + ("brain",), masks.plane)
    write_masks(pred, tmp_path / "case" / "masks.seg.nrrd")
    code = main(["evaluate", str(tmp_path / "case"), str(seg), "--vs-3d", "--classmap", "v2",
                 "--structures", "liver,lungs,spine,brain", "-o", str(tmp_path / "r")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Dice 1.000, HD95 0.00 mm; presence correct 4/4" in printed
    report = evaluate(tmp_path / "case", seg, vs_3d=True, classmap="v2")
    assert len(report.scores) == 62
    assert all(s.dice == 1.0 and s.hd95_mm == 0.0 and s.presence_correct for s in report.scores)
    assert not report.score("brain").gt_present  # absent from the labels: empty, as in the scan


# --- command line: bad input -----------------------------------------------------------------
@pytest.mark.parametrize("case, message", [
    ("missing", "missing.seg.nrrd: no such file or folder"),
    ("unknown", "map.yaml: entry 'liver.png': unknown structure 'livr'"),
    ("grid", "small: PNG/JPEG masks carry no pixel spacing"),
    ("yaml", "map.yaml: not valid YAML"),
    ("classmap", "--classmap gives the ids of 3D labels"),
    ("3d", "this is a 3D volume"),
])
def test_cli_bad_input_exit_2_and_no_report(tmp_path, capsys, case, message, data):
    pred = _chest()
    write_masks(pred, tmp_path / "pred.seg.nrrd")
    _png(tmp_path / "gt" / "liver.png", pred.mask("liver"))
    _png(tmp_path / "small" / "liver.png", pred.mask("liver")[:20])
    (tmp_path / "map.yaml").write_text({"unknown": "liver.png: livr\n", "yaml": "liver.png: [heart\n"}.get(case, ""))
    args = {
        "missing": [str(tmp_path / "missing.seg.nrrd"), str(tmp_path / "gt")],
        "unknown": [str(tmp_path / "pred.seg.nrrd"), str(tmp_path / "gt"), "--map", str(tmp_path / "map.yaml")],
        "grid": [str(tmp_path / "pred.seg.nrrd"), str(tmp_path / "small")],
        "yaml": [str(tmp_path / "pred.seg.nrrd"), str(tmp_path / "gt"), "--map", str(tmp_path / "map.yaml")],
        "classmap": [str(tmp_path / "pred.seg.nrrd"), str(tmp_path / "gt"), "--classmap", "v2"],
        "3d": [str(tmp_path / "pred.seg.nrrd"), str(data / "ct" / "ts_example" / "seg_v2_multilabel.nii.gz")],
    }[case]
    out = tmp_path / "report"
    assert main(["evaluate", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ts2d-xray evaluate: error: ") and message in err and "\n" not in err
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))
