"""Real films with partial labels: their data sets, combining data sets, the partial-label loss, film augmentation.

Real data: three films of the Wingspan *training* split with their manual masks.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ts2d_xray.dataset import finalize, iter_cases, load_dataset, write_case
from ts2d_xray.dataset.films import LabelledFilm, combine_datasets, write_film_dataset
from ts2d_xray.errors import InputError
from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.train.data import read_cases
from ts2d_xray.train.loss import build_loss
from ts2d_xray.train.transforms import XRAY_TRAINING_AUGMENT
from ts2d_xray.xray_randomize import XrayAugmentParams, augment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from evaluate_wingspan import labelled_films  # noqa: E402
STRUCTURES = ("heart_silhouette", "liver", "lung_field_right", "lung_field_left")


# --- the partial-label loss ------------------------------------------------------------
def test_a_channel_without_a_label_contributes_no_gradient():
    gen = torch.Generator().manual_seed(0)
    outputs = [torch.randn(4, 3, 32, 32, generator=gen, requires_grad=True),
               torch.randn(4, 3, 16, 16, generator=gen, requires_grad=True)]
    targets = [(torch.rand(4, 3, 32, 32, generator=gen) > 0.6).float(),
               (torch.rand(4, 3, 16, 16, generator=gen) > 0.6).float()]
    valid = torch.ones(4, 3, 1, 1)
    valid[:, 1] = 0  # structure 1 unlabelled in every case
    valid[2, 2] = 0  # structure 2 unlabelled in case 2 only
    build_loss(2)(outputs, targets, [valid] * 2).backward()
    grad = outputs[0].grad
    assert torch.count_nonzero(grad[:, 1]) == 0
    assert torch.count_nonzero(grad[2, 2]) == 0
    assert torch.count_nonzero(grad[:, 0]) > 0 and torch.count_nonzero(grad[0, 2]) > 0
    # Without validity every channel learns: the masking above is what removed them.
    fresh = [o.detach().clone().requires_grad_(True) for o in outputs]
    build_loss(2)(fresh, targets, [torch.ones(4, 3, 1, 1)] * 2).backward()
    assert torch.count_nonzero(fresh[0].grad[:, 1]) > 0


# --- data sets of real films -----------------------------------------------------------
@pytest.fixture(scope="module")
def wingspan(data) -> Path:
    root = data / "xray" / "wingspan"
    if not root.is_dir():
        pytest.skip("shared Wingspan films not available")
    return root


def _films(wingspan: Path, n: int = 3) -> list[LabelledFilm]:
    """The first ``n`` training films, as the model recipe reads them, with short case ids."""
    names = json.loads((ROOT / "configs" / "wingspan_split.json").read_text())["train"][:n]
    return [replace(f, case_id=f"ws_{i}") for i, f in enumerate(labelled_films(wingspan, names))]


def test_real_films_become_a_data_set_whose_missing_structures_are_unlabelled(wingspan, tmp_path):
    films = _films(wingspan)
    ds = write_film_dataset(tmp_path / "films", films, STRUCTURES)
    assert ds.structures == STRUCTURES and ds.meta["kind"] == "xray" and len(ds.case_ids) == 3
    records = {r["case"]: r for r in iter_cases(ds)}
    for film in films:
        record = records[film.case_id]
        assert record["unlabelled_structures"] == ["liver"]
        assert record["spacing_source"] and record["wingspan_name"] == film.meta["wingspan_name"]
        image, masks = ds.read(film.case_id)
        png = np.asarray(Image.open(film.image).convert("L"), dtype=np.float32) / 255
        assert image.array.shape == (1, *png.shape)
        np.testing.assert_allclose(image.array[0], png, atol=1e-6)  # a PNG has no orientation: no flip
        for name, path in film.masks.items():
            truth = np.asarray(Image.open(path).convert("L")) > 0
            assert np.array_equal(masks.mask(name), truth) and truth.any()
        assert not masks.mask("liver").any()
    labelled = {c.id: c.labelled for c in read_cases(ds)}
    assert all(v.tolist() == [True, False, True, True] for v in labelled.values())


def test_film_data_sets_refuse_wrong_masks(wingspan, tmp_path):
    film = _films(wingspan, 1)[0]
    with pytest.raises(ValueError, match="not among the data set's structures"):
        write_film_dataset(tmp_path / "a", [film], ("heart",))
    small = tmp_path / "small.png"
    Image.new("L", (100, 100)).save(small)
    bad = replace(film, case_id="ws_bad", masks={**film.masks, "heart_silhouette": small})
    with pytest.raises(InputError, match=r"small\.png: mask of 100x100 px for the image"):
        write_film_dataset(tmp_path / "b", [film, bad], STRUCTURES)  # the first film is written, then removed
    assert not (tmp_path / "b").exists()  # no half-written data set
    with pytest.raises(ValueError, match="duplicate case ids"):
        write_film_dataset(tmp_path / "c", [film, film], STRUCTURES)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def _synthetic_xray(root: Path, structures: tuple[str, ...], ids: tuple[str, ...], kind: str = "xray") -> Path:
    plane = Plane((48, 40), (1.5, 1.5))
    rng = np.random.default_rng(0)
    channels = ("xray",) if kind == "xray" else ("mean", "max")
    for case_id in ids:
        masks = Masks(rng.random((len(structures), 48, 40)) > 0.7, structures, plane)
        write_case(root, case_id, Image2D(rng.random((len(channels), 48, 40), dtype=np.float32), plane, channels),
                   masks, {"case": case_id, "empty_structures": [], "unlabelled_structures": []})
    finalize(root, structures, ("organs",), {"kind": kind, "preset": None, "seed": 0, "spacing": None,
                                             "shape": None})
    return root


def test_combined_data_sets_keep_every_case_over_the_union_of_structures(wingspan, tmp_path):
    drr = _synthetic_xray(tmp_path / "drr", ("liver", "heart", "spleen"), ("d_000", "d_001"))
    films = write_film_dataset(tmp_path / "films", _films(wingspan, 2), STRUCTURES)
    both = combine_datasets([drr, films], tmp_path / "both")
    assert both.structures == ("liver", "heart", "spleen", "heart_silhouette", "lung_field_right", "lung_field_left")
    assert set(both.case_ids) == {"d_000", "d_001", "ws_0", "ws_1"}
    records = {r["case"]: r for r in iter_cases(both)}
    assert records["d_000"]["unlabelled_structures"] == ["heart_silhouette", "lung_field_right", "lung_field_left"]
    assert records["ws_0"]["unlabelled_structures"] == ["liver", "heart", "spleen"]
    assert records["ws_0"]["combined_from"] == str(films.root)
    for source, case_id in ((load_dataset(drr), "d_001"), (films, "ws_1")):
        image, masks = source.read(case_id)
        image2, masks2 = both.read(case_id)
        assert np.array_equal(image.array, image2.array)
        for name in masks.names:
            assert np.array_equal(masks.mask(name), masks2.mask(name))
    # Clashing ids and other kinds are refused; nothing is left half-written in a new folder.
    with pytest.raises(InputError, match="case d_000 is also in"):
        combine_datasets([drr, drr], tmp_path / "twice")
    assert not (tmp_path / "twice").exists()  # the cases written before the clash are gone
    coronal = _synthetic_xray(tmp_path / "coronal", ("liver",), ("c_000",), kind="coronal")
    with pytest.raises(InputError, match="kind 'coronal', but .* has 'xray'"):
        combine_datasets([drr, coronal], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
    with pytest.raises(InputError, match="exists and is not empty"):
        combine_datasets([drr], tmp_path / "both")


def test_a_combined_data_set_leaves_films_only_structures_unlabelled_on_the_drrs(wingspan, tmp_path):
    drr = _synthetic_xray(tmp_path / "drr", ("liver", "heart", "lung_field_right"), ("d_000",))
    films = write_film_dataset(tmp_path / "films", _films(wingspan, 1), STRUCTURES)
    both = combine_datasets([drr, films], tmp_path / "both", unlabelled=[["lung_field_right"], []])
    records = {r["case"]: r for r in iter_cases(both)}
    assert "lung_field_right" in records["d_000"]["unlabelled_structures"]
    assert "lung_field_right" not in records["ws_0"]["unlabelled_structures"]
    labelled = {c.id: dict(zip(both.structures, c.labelled.tolist())) for c in read_cases(both)}
    assert not labelled["d_000"]["lung_field_right"] and labelled["d_000"]["heart"]
    assert labelled["ws_0"]["lung_field_right"] and not labelled["ws_0"]["heart"]
    assert not both.read("d_000")[1].mask("lung_field_right").any()  # its layer is emptied, not kept
    assert both.read("ws_0")[1].mask("lung_field_right").any()
    with pytest.raises(ValueError, match="not structures of"):
        combine_datasets([drr, films], tmp_path / "bad", unlabelled=[["spleen"], []])
    with pytest.raises(ValueError, match="2 sources"):
        combine_datasets([drr, films], tmp_path / "bad", unlabelled=[["heart"]])
    assert not (tmp_path / "bad").exists()


def test_a_combined_data_set_carries_sampling_weights_of_chosen_films(wingspan, tmp_path):
    drr = _synthetic_xray(tmp_path / "drr", ("liver", "heart"), ("d_000",))
    films = write_film_dataset(tmp_path / "films", _films(wingspan, 2), STRUCTURES)
    both = combine_datasets([drr, films], tmp_path / "both", weights=[None, {"ws_1": 2.5}])
    records = {r["case"]: r for r in iter_cases(both)}
    assert records["ws_1"]["sampling_weight"] == 2.5
    assert "sampling_weight" not in records["ws_0"] and "sampling_weight" not in records["d_000"]
    assert {c.id: c.weight for c in read_cases(both)} == {"d_000": 1.0, "ws_0": 1.0, "ws_1": 2.5}
    for weights, message in (([None, {"ws_9": 2.0}], r"cases \['ws_9'\] are not in"),
                             ([None, {"ws_0": 0.0}], "case ws_0 of .*: sampling_weight 0.0 is not a positive number"),
                             ([{"d_000": 2.0}], "1 entries for 2 sources")):
        with pytest.raises(ValueError, match=message):
            combine_datasets([drr, films], tmp_path / "bad", weights=weights)
        assert not (tmp_path / "bad").exists()


def test_two_builds_of_the_same_cts_combine_under_prefixed_case_ids(tmp_path):
    pa = _synthetic_xray(tmp_path / "pa", ("liver", "heart"), ("d_000", "d_001"))
    ap = _synthetic_xray(tmp_path / "ap", ("liver", "heart"), ("d_000",))
    both = combine_datasets([pa, ap], tmp_path / "both", prefixes=["", "ap_"])
    assert set(both.case_ids) == {"d_000", "d_001", "ap_d_000"}
    record = {r["case"]: r for r in iter_cases(both)}["ap_d_000"]
    assert record["source_case"] == "d_000" and record["combined_from"] == str(load_dataset(ap).root)
    assert np.array_equal(both.read("ap_d_000")[0].array, load_dataset(ap).read("d_000")[0].array)
    with pytest.raises(InputError, match="case d_000 is also in"):
        combine_datasets([pa, ap], tmp_path / "clash")
    with pytest.raises(ValueError, match="prefixes: 1 for 2 sources"):
        combine_datasets([pa, ap], tmp_path / "bad", prefixes=["ap_"])


# --- augmentation for real films -------------------------------------------------------
def test_text_markers_touch_the_image_only_and_aspect_jitter_moves_masks():
    rng = np.random.default_rng(0)
    image = (0.3 + 0.1 * rng.random((128, 128))).astype(np.float32)
    masks = np.zeros((1, 128, 128), bool)
    masks[0, 40:90, 30:100] = True
    only_markers = XrayAugmentParams(albumentations=False, gamma_probability=0, contrast_probability=0,
                                     marker_probability=1.0)
    out, out_masks = augment(image, masks, only_markers, np.random.default_rng(3))
    assert np.array_equal(out_masks, masks)
    changed = np.abs(out - image) > 0.05
    assert changed.any() and changed.mean() < 0.1  # letters, not a wash
    again, _ = augment(image, masks, only_markers, np.random.default_rng(3))
    assert np.array_equal(out, again)
    # Without markers, the results are those of the parameters before markers existed.
    plain = XrayAugmentParams(albumentations=False)
    assert np.array_equal(augment(image, None, plain, np.random.default_rng(5))[0],
                          augment(image, None, replace(plain, marker_height_range=(0.1, 0.2)),
                                  np.random.default_rng(5))[0])
    stretch = XrayAugmentParams(gamma_probability=0, contrast_probability=0, affine_probability=0,
                                grid_distortion_probability=0, elastic_probability=0, noise_probability=0,
                                blur_probability=0, clahe_probability=0, jpeg_probability=0,
                                downscale_probability=0, aspect_range=(1.25, 1.25), aspect_probability=1.0)
    _, moved = augment(image, masks, stretch, np.random.default_rng(0))
    rows = np.flatnonzero(moved[0].any(1))
    cols = np.flatnonzero(moved[0].any(0))
    assert rows[-1] - rows[0] + 1 == pytest.approx(50 * 1.25, abs=2)  # taller ...
    assert cols[-1] - cols[0] + 1 == pytest.approx(70, abs=1)  # ... not wider
    assert XRAY_TRAINING_AUGMENT.marker_probability > 0 and XRAY_TRAINING_AUGMENT.aspect_probability > 0
