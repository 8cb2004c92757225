"""synth.deform: random 3D warps of real CTs move the labels with the anatomy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synth.build import BuildOptions, SampleSpec, build
from synth.deform import DeformSpec, deform, random_transform
from ts2d_xray.dataset import read_case
from ts2d_xray.examples import missing_data_message, shared_data_dir
from ts2d_xray.io import read_ct, read_labels

DATA = shared_data_dir()
TS = DATA / "ct" / "ts_example"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=missing_data_message())

STILL = dict(rotation_deg=0.0, scale=(1.0, 1.0), elastic_mm=0.0)


@pytest.fixture(scope="module")
def abdomen():
    ct = read_ct(TS / "ct.nii.gz")
    return ct, read_labels(TS / "seg_v2_multilabel.nii.gz", classmap="v2", reference=ct)


def test_identity_deformation_returns_the_input_exactly(abdomen):
    ct, labels = abdomen
    transform, params = random_transform(ct.grid, np.random.default_rng(0), DeformSpec(**STILL, spacing_mm=None))
    ct2, labels2 = deform(ct, labels, transform, spacing_mm=None)
    assert ct2.grid.matches(ct.grid) and labels2.grid.matches(ct.grid)
    np.testing.assert_array_equal(ct2.array, ct.array)
    np.testing.assert_array_equal(labels2.layers, labels.layers)
    assert params["scale"] == [1.0, 1.0, 1.0]


def test_output_grid_keeps_orientation_and_extent(abdomen):
    ct, labels = abdomen
    transform, _ = random_transform(ct.grid, np.random.default_rng(1))
    ct2, labels2 = deform(ct, labels, transform, spacing_mm=4.5)
    extent = np.asarray(ct.grid.shape) * np.asarray(ct.grid.spacing)[::-1]
    extent2 = np.asarray(ct2.grid.shape) * np.asarray(ct2.grid.spacing)[::-1]
    np.testing.assert_allclose(extent2, extent, atol=1e-6)
    np.testing.assert_allclose(ct2.grid.spacing, 4.5, rtol=0.05)
    np.testing.assert_allclose(ct2.grid.direction, ct.grid.direction)
    assert labels2.grid.matches(ct2.grid) and labels2.names == labels.names


def test_scaling_changes_volumes_by_the_drawn_factors(abdomen):
    ct, labels = abdomen
    spec = DeformSpec(rotation_deg=0.0, scale=(0.85, 1.15), elastic_mm=0.0, spacing_mm=None)
    transform, params = random_transform(ct.grid, np.random.default_rng(3), spec)
    _, labels2 = deform(ct, labels, transform, spacing_mm=None)
    # Output points map to input points scaled by s: the anatomy shrinks by 1 / prod(s).
    expected = 1 / np.prod(params["scale"])
    assert abs(expected - 1) > 0.05  # a draw that changes volumes measurably
    for name in ("spleen", "kidney_left", "kidney_right", "vertebrae_L3"):  # well inside the scan
        ratio = labels2.mask(name).sum() / labels.mask(name).sum()
        assert ratio == pytest.approx(expected, rel=0.04), name


def test_labels_follow_the_anatomy_under_a_random_warp(abdomen):
    ct, labels = abdomen
    transform, params = random_transform(ct.grid, np.random.default_rng(5), DeformSpec(elastic_mm=8.0))
    ct2, labels2 = deform(ct, labels, transform)
    assert params["elastic_rms_mm"] > 4
    for name in ("liver", "vertebrae_L3", "gluteus_maximus_left"):
        before = ct.array[labels.mask(name)].mean()
        after = ct2.array[labels2.mask(name)].mean()
        assert after == pytest.approx(before, abs=25), name  # mean HU inside the structure is kept
    bone = ct2.array[labels2.mask("vertebrae_L3")].mean()
    assert bone > 150 > ct2.array[labels2.mask("liver")].mean()


def test_same_seed_same_warp_other_seed_other_warp(abdomen):
    ct, labels = abdomen
    a = deform(ct, None, random_transform(ct.grid, np.random.default_rng(9))[0], spacing_mm=6.0)[0]
    b = deform(ct, None, random_transform(ct.grid, np.random.default_rng(9))[0], spacing_mm=6.0)[0]
    c = deform(ct, None, random_transform(ct.grid, np.random.default_rng(10))[0], spacing_mm=6.0)[0]
    np.testing.assert_array_equal(a.array, b.array)
    assert np.abs(a.array - c.array).mean() > 10


def test_spec_names_the_bad_parameter():
    with pytest.raises(ValueError, match="scale must be"):
        DeformSpec(scale=(1.2, 1.0))
    with pytest.raises(ValueError, match="elastic_mm must be >= 0"):
        DeformSpec(elastic_mm=-1)


def test_coronal_build_with_deform_keeps_case_0_and_varies_the_others(tmp_path):
    subject = tmp_path / "subjects" / "abd"
    (subject / "segmentations").mkdir(parents=True)
    (subject / "ct.nii.gz").symlink_to(TS / "ct_small.nii.gz")
    (subject / "seg.nii.gz").symlink_to(TS / "ct_small_seg_v2_multilabel.nii.gz")
    (subject / "segmentations").rmdir()
    listing = tmp_path / "list.txt"
    listing.write_text(f"{subject / 'ct.nii.gz'},{subject / 'seg.nii.gz'},v2\n")
    plain = build(listing, tmp_path / "plain", BuildOptions(SampleSpec("coronal", spacing=3.0)))
    spec = SampleSpec("coronal", spacing=3.0, deform=DeformSpec(spacing_mm=3.0))
    warped = build(listing, tmp_path / "warped", BuildOptions(spec, per_ct=3))
    assert plain.ok and warped.ok and len(warped.done) == 3
    (id0,) = plain.done
    original = read_case(tmp_path / "plain", id0)
    cases = [read_case(tmp_path / "warped", c) for c in warped.done]
    np.testing.assert_array_equal(cases[0][0].array, original[0].array)
    np.testing.assert_array_equal(cases[0][1].array, original[1].array)
    for image, masks in cases[1:]:
        assert image.plane.spacing == pytest.approx(original[0].plane.spacing)
        assert np.abs(image.array - original[0].array).mean() > 5
    assert np.abs(cases[1][0].array - cases[2][0].array).mean() > 5
    meta = json.loads((tmp_path / "warped" / "dataset.json").read_text())
    assert meta["deform"]["elastic_mm"] == spec.deform.elastic_mm
