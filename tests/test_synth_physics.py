"""synth.physics: radiograph formation from line integrals, physics parameters, presets."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from synth.materials import MATERIALS, mass_attenuation
from synth.physics import PhysicsParams, PhysicsRanges, as_dict, radiograph

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs" / "synth").glob("*.json"))
SWITCHES = [f.name for f in fields(PhysicsParams) if f.type == "bool"]


# --- radiograph ---------------------------------------------------------------------------


def phantom(h: int = 96, w: int = 96) -> np.ndarray:
    """(2, H, W) g/cm²: soft tissue rising 10 -> 30 g/cm² across columns, a bone stripe
    (rows 20-30, +2 g/cm² bone) and a lung stripe (rows 60-75, soft tissue - 8 g/cm²)."""
    L = np.zeros((2, h, w), np.float32)
    L[0] = np.linspace(10.0, 30.0, w)[None, :]
    L[1, 20:30] = 2.0
    L[0, 60:75] -= 8.0
    return L


ALL_ON = PhysicsParams(dose=2e4, scatter_sigma_mm=20.0, blur_sigma_mm=1.0, unsharp_sigma_mm=3.0)
ALL_OFF = PhysicsParams(
    polyenergetic=False, noise=False, scatter=False, detector_blur=False, tone=False, unsharp=False,
    fov_fill=False, tone_equalization=0.0, detail_gain=0.0,
)


def cut_phantom(h: int = 96, w: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """:func:`phantom` cut by a CT's field of view: zero outside columns 16-79 and rows
    0-79, and that field of view as ``(H, W)`` bool."""
    fov = np.zeros((h, w), bool)
    fov[:80, 16:80] = True
    return phantom(h, w) * fov, fov


def render(params: PhysicsParams, seed: int = 0, L=None, fov=None) -> np.ndarray:
    return radiograph(phantom() if L is None else L, params, (1.0, 1.0), np.random.default_rng(seed), fov=fov)


def test_radiograph_anatomy_order():
    for params in (ALL_ON, ALL_OFF, replace(ALL_ON, noise=False)):
        img = render(params)
        assert img.shape == (96, 96) and img.dtype == np.float32
        assert 0.0 <= img.min() and img.max() <= 1.0
        cols = slice(30, 66)
        bone, soft, lung = img[22:28, cols].mean(), img[40:55, cols].mean(), img[63:72, cols].mean()
        assert bone > soft + 0.05 and lung < soft - 0.05
        # Thicker soft tissue is brighter (columns to the right).
        assert img[40:55, 80:90].mean() > img[40:55, 5:15].mean() + 0.05


def test_radiograph_all_off_is_linear_in_attenuation():
    L = phantom()
    img = render(ALL_OFF, L=L)
    mu = np.array([mass_attenuation(m, 60.0)[0] for m in MATERIALS])
    p = np.tensordot(mu, L, axes=1)
    expected = (p - p.min()) / (p.max() - p.min())
    np.testing.assert_allclose(img, expected, atol=1e-4)


def test_radiograph_beam_hardening():
    """Polyenergetic attenuation grows less than linearly with thickness; mono is linear."""
    L = np.zeros((2, 1, 4), np.float32)
    L[0, 0] = [0.0, 10.0, 20.0, 40.0]  # g/cm² of soft tissue
    mono = radiograph(L, ALL_OFF, (1.0, 1.0), np.random.default_rng(0))[0]
    np.testing.assert_allclose(mono, [0.0, 0.25, 0.5, 1.0], atol=1e-5)
    poly = radiograph(L, replace(ALL_OFF, polyenergetic=True, kvp=80), (1.0, 1.0), np.random.default_rng(0))[0]
    assert poly[1] > 0.27 and poly[2] > 0.52  # concave: the beam hardens


def test_radiograph_noise_falls_with_dose():
    base = replace(ALL_OFF, noise=True, polyenergetic=True, dose=2e4)
    L = phantom()
    spreads = []
    for dose in (1e3, 1e4, 1e5):
        a = radiograph(L, replace(base, dose=dose), (1.0, 1.0), np.random.default_rng(1))
        b = radiograph(L, replace(base, dose=dose), (1.0, 1.0), np.random.default_rng(2))
        assert not np.array_equal(a, b)
        spreads.append(float(np.var(a - b)))
    # Poisson: variance ~ 1/dose, so ~10x per decade.
    assert spreads[0] > 5 * spreads[1] > 25 * spreads[2]


@pytest.mark.parametrize("switch", SWITCHES)
def test_radiograph_each_switch_matters(switch):
    L, fov = cut_phantom()
    on = render(ALL_ON, seed=5, L=L, fov=fov)
    off = render(replace(ALL_ON, **{switch: False}), seed=5, L=L, fov=fov)
    assert off.shape == on.shape and off.dtype == np.float32
    assert np.abs(on - off).mean() > 1e-3, f"turning {switch} off changed nothing"


def test_radiograph_tone_equalization_compresses_large_scale():
    """Equalization lowers the contrast between wide regions and keeps small details."""
    L = np.zeros((2, 128, 128), np.float32)
    L[0] = 10.0
    L[0, :, 64:] = 25.0  # a wide thick region (like the mediastinum against the lungs)
    L[1, 30:32, 20:100] = 1.0  # a thin bone line crossing both
    base = replace(ALL_OFF, tone=True, tone_contrast=1.0, tone_low_percentile=0.0, tone_high_percentile=100.0)
    plain = radiograph(L, base, (1.0, 1.0), np.random.default_rng(0))
    equal = radiograph(L, replace(base, tone_equalization=0.8, tone_equalization_sigma_mm=15.0), (1.0, 1.0),
                       np.random.default_rng(0))
    wide = lambda img: img[80:120, 90:120].mean() - img[80:120, 8:38].mean()  # noqa: E731
    line = lambda img: img[30:32, 90:100].mean() - img[36:40, 90:100].mean()  # noqa: E731
    assert wide(equal) < 0.6 * wide(plain)
    assert line(equal) > 0.9 * line(plain)
    assert line(equal) / wide(equal) > 2 * line(plain) / wide(plain)


def test_radiograph_deterministic_and_accepts_torch():
    a = render(ALL_ON, seed=7)
    b = render(ALL_ON, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, render(ALL_ON, seed=8))
    c = radiograph(torch.from_numpy(phantom()), ALL_ON, (1.0, 1.0), np.random.default_rng(7))
    np.testing.assert_allclose(c, a, atol=1e-5)


def test_radiograph_scatter_and_blur_use_spacing():
    """Sigmas are in mm: halving the pixel size doubles the blur in pixels."""
    L = np.zeros((2, 64, 64), np.float32)
    L[0] = 20.0
    L[1, :, 32:] = 3.0
    params = replace(ALL_OFF, detector_blur=True, blur_sigma_mm=2.0)
    coarse = radiograph(L, params, (1.0, 1.0), np.random.default_rng(0))[32]
    fine = radiograph(L, params, (0.5, 0.5), np.random.default_rng(0))[32]
    # 10-90 % edge width in pixels.
    width = lambda row: int(np.sum((row > 0.1) & (row < 0.9)))  # noqa: E731
    assert width(fine) >= 1.7 * width(coarse)


def test_radiograph_rejects_bad_input():
    with pytest.raises(ValueError, match="line_integrals must be"):
        radiograph(np.zeros((3, 4, 4)), ALL_ON, (1.0, 1.0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        radiograph(np.zeros((2, 4, 4)), ALL_ON, (0.0, 1.0), np.random.default_rng(0))


# --- parameters and presets -------------------------------------------------------------


def test_physics_params_validation_and_round_trip():
    p = PhysicsParams.from_dict({"kvp": 100, "noise": False})
    assert p.kvp == 100 and p.noise is False
    assert PhysicsParams.from_dict(as_dict(p)) == p
    json.dumps(as_dict(p))
    with pytest.raises(ValueError, match="unknown PhysicsParams key 'kvpp'"):
        PhysicsParams.from_dict({"kvpp": 100})
    with pytest.raises(ValueError, match="'kvp' must be within"):
        PhysicsParams(kvp=200)
    with pytest.raises(ValueError, match="'scatter_fraction' must be in"):
        PhysicsParams(scatter_fraction=1.5)
    with pytest.raises(ValueError, match="'tone_equalization' must be in"):
        PhysicsParams(tone_equalization=2.0)
    with pytest.raises(TypeError, match="'noise' must be true or false"):
        PhysicsParams(noise=1)


def test_physics_ranges_sample():
    r = PhysicsRanges.from_dict(
        {"kvp": [100, 125], "dose": {"log_uniform": [1e3, 1e5]}, "unsharp": 0.5, "tone": False, "blur_sigma_mm": 0.3}
    )
    samples = [r.sample(np.random.default_rng(s)) for s in range(200)]
    kvps = np.array([p.kvp for p in samples])
    assert kvps.min() >= 100 and kvps.max() <= 125 and kvps.std() > 5
    doses = np.log10([p.dose for p in samples])
    assert 3 <= doses.min() and doses.max() <= 5 and abs(np.median(doses) - 4) < 0.3
    assert 0.35 < np.mean([p.unsharp for p in samples]) < 0.65
    assert all(p.tone is False and p.blur_sigma_mm == 0.3 for p in samples)
    assert all(p.filtration_mm_al == PhysicsParams().filtration_mm_al for p in samples)
    # Same seed, same draw; key order does not matter.
    r2 = PhysicsRanges.from_dict({"blur_sigma_mm": 0.3, "tone": False, "unsharp": 0.5,
                                  "dose": {"log_uniform": [1e3, 1e5]}, "kvp": [100, 125]})
    assert r2.sample(np.random.default_rng(3)) == r.sample(np.random.default_rng(3))


@pytest.mark.parametrize(
    "section, message",
    [
        ({"kvpp": 100}, "unknown PhysicsParams key 'kvpp'"),
        ({"kvp": [130, 160]}, "'kvp' must be within"),
        ({"kvp": [125, 100]}, "physics range 'kvp'"),
        ({"kvp": "high"}, "physics range 'kvp'"),
        ({"noise": 1.5}, "probability must be in"),
        ({"noise": [0, 1]}, "physics range 'noise'"),
        ({"dose": {"log_uniform": [0, 10]}}, "physics range 'dose'"),
        ({"dose": {"loguniform": [1, 10]}}, "physics range 'dose'"),
    ],
)
def test_physics_ranges_reject(section, message):
    with pytest.raises(ValueError, match=message):
        PhysicsRanges.from_dict(section)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_presets_physics_section(path):
    section = json.loads(path.read_text())["physics"]
    ranges = PhysicsRanges.from_dict(section)
    rng = np.random.default_rng(0)
    params = [ranges.sample(rng) for _ in range(20)]
    lo, hi = section["kvp"]
    assert all(lo <= p.kvp <= hi for p in params)
    img = radiograph(phantom(48, 48), params[0], (0.7, 0.7), rng)
    assert img.shape == (48, 48) and 0 <= img.min() and img.max() <= 1


# --- film processing (synth.processing) ------------------------------------------------------


def tone_only(**changes) -> PhysicsParams:
    """Only the gradation curve on (no noise, scatter, blur, equalisation, enhancement)."""
    return replace(ALL_OFF, tone=True, **changes)


@pytest.mark.parametrize("contrast, midpoint, high", [(2.5, 0.55, 99.0), (5.0, 0.8, 99.9), (3.5, 0.65, 99.5)])
def test_tone_curve_is_strictly_monotone_and_never_clips(contrast, midpoint, high):
    """Soft tissue from 2 to 45 g/cm² (a thin edge to a thick abdomen): every step of
    thickness stays a distinct, strictly brighter grey inside (tone_black, tone_white),
    even beyond the window's high percentile."""
    L = np.zeros((2, 4, 400), np.float32)
    L[0] = np.linspace(2.0, 45.0, 400)[None, :]
    params = tone_only(tone_contrast=contrast, tone_midpoint=midpoint, tone_high_percentile=high,
                       tone_black=0.03, tone_white=0.9)
    y = radiograph(L, params, (1.0, 1.0), np.random.default_rng(0))[0]
    assert np.all(np.diff(y.astype(np.float64)) > 0)
    assert 0.03 < y.min() and y.max() < 0.9
    # The thickest 10 % of the ramp still spans a visible range (no white plateau).
    assert y[-40:].max() - y[-40:].min() > 0.01


def test_processing_keeps_thick_soft_tissue_below_white():
    """With every step on (defaults), a 40 g/cm² abdomen next to 8 g/cm² lung is not burnt out."""
    L = np.zeros((2, 128, 128), np.float32)
    L[0] = 40.0
    L[0, 10:60, 20:108] = 8.0  # lungs
    L[1, 30:33, 10:118] = 1.5  # a rib crossing lung and abdomen
    img = radiograph(L, ALL_ON, (1.0, 1.0), np.random.default_rng(0))
    assert img.max() < ALL_ON.tone_white + 0.02 and (img >= 0.98).mean() == 0
    abdomen, lung = img[80:120, 30:100], img[15:28, 30:100]
    assert 0.25 < abdomen.mean() < 0.8 and lung.mean() < abdomen.mean() - 0.1
    # The rib is visible over the lung: brighter than the lung beside it.
    assert img[30:33, 40:90].mean() > lung.mean() + 0.05


def border_jump(img: np.ndarray, fov: np.ndarray) -> float:
    """Mean absolute step across the field of view's border: between each pixel just
    inside and its neighbour just outside (rows and columns)."""
    steps = []
    for axis in (0, 1):
        a, b = np.moveaxis(fov, axis, 0), np.moveaxis(img.astype(np.float64), axis, 0)
        cross = a[1:] != a[:-1]
        steps.append(np.abs(b[1:] - b[:-1])[cross])
    return float(np.concatenate(steps).mean())


def test_fov_fill_leaves_no_hard_edge():
    """A body cut by the CT's field of view: with the fill, the step across the cut is no
    larger than the image's own pixel-to-pixel variation inside; without, it is a wall."""
    L, fov = cut_phantom(128, 128)
    params = replace(ALL_ON, noise=False)
    filled = radiograph(L, params, (1.0, 1.0), np.random.default_rng(0), fov=fov)
    cut = radiograph(L, replace(params, fov_fill=False), (1.0, 1.0), np.random.default_rng(0), fov=fov)
    inner = np.abs(np.diff(filled[20:70, 40:90].astype(np.float64), axis=1)).mean()
    assert border_jump(cut, fov) > 0.1
    assert border_jump(filled, fov) < max(3 * inner, 0.02)
    # Inside, away from the border, the fill changes nothing but the window.
    assert filled[fov].std() > 0.05
    # Outside it fades with distance: the far corner is darker than next to the cut.
    assert filled[100:, 100:].mean() < filled[82:86, 40:60].mean()


def test_processing_does_not_move_the_callers_random_stream():
    """radiograph draws the continuation's noise from a child generator: the caller's
    generator (whose next draws make the augmentation, hence the masks) ends where it
    would with any processing settings."""
    L, fov = cut_phantom()
    after = []
    for changes in ({}, {"fov_fill": False}, {"detail_gain": 0.0, "tone_midpoint": 0.3, "fov_fill_decay_mm": 10.0}):
        rng = np.random.default_rng(11)
        radiograph(L, replace(ALL_ON, **changes), (1.0, 1.0), rng, fov=fov)
        after.append(rng.random(4))
    np.testing.assert_array_equal(after[0], after[1])
    np.testing.assert_array_equal(after[0], after[2])


def test_radiograph_with_fov_is_deterministic():
    L, fov = cut_phantom()
    a = radiograph(L, ALL_ON, (1.0, 1.0), np.random.default_rng(3), fov=fov)
    b = radiograph(L, ALL_ON, (1.0, 1.0), np.random.default_rng(3), fov=fov)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, radiograph(L, ALL_ON, (1.0, 1.0), np.random.default_rng(4), fov=fov))


def test_new_processing_ranges_leave_the_main_stream_alone():
    """Adding the processing fields' ranges changes neither the other fields' draws nor
    where the generator ends (so masks of a seed stay as they were)."""
    from synth.physics_params import CHILD_STREAM_FIELDS

    section = json.loads(PRESETS[[p.stem for p in PRESETS].index("chest-pa")].read_text())["physics"]
    without = {k: v for k, v in section.items() if k not in CHILD_STREAM_FIELDS}
    assert len(without) < len(section)
    r_with, r_without = np.random.default_rng(5), np.random.default_rng(5)
    p_with = PhysicsRanges.from_dict(section).sample(r_with)
    p_without = PhysicsRanges.from_dict(without).sample(r_without)
    assert {k: v for k, v in as_dict(p_with).items() if k not in CHILD_STREAM_FIELDS} == \
        {k: v for k, v in as_dict(p_without).items() if k not in CHILD_STREAM_FIELDS}
    np.testing.assert_array_equal(r_with.random(3), r_without.random(3))
    # The processing fields themselves vary with the seed and stay in their ranges.
    draws = [PhysicsRanges.from_dict(section).sample(np.random.default_rng(s)) for s in range(30)]
    mids = [d.tone_midpoint for d in draws]
    assert min(mids) >= section["tone_midpoint"][0] and max(mids) <= section["tone_midpoint"][1]
    assert np.std(mids) > 0.03


def test_field_of_view_matches_the_rays_that_cross_the_volume():
    """field_of_view's slab test against the renderer: a ray crosses the CT exactly where
    a volume of ones gives a positive line integral."""
    from synth.geometry import View, detector_rays
    from synth.processing import field_of_view
    from synth.render import render as cast
    from ts2d_xray.image import Grid

    grid = Grid(shape=(20, 16, 24), spacing=(10.0, 10.0, 10.0), origin=(-115.0, -75.0, -95.0),
                direction=tuple(np.eye(3).ravel()))
    view = View("AP", (48, 48), (12.0, 12.0), sdd=1500.0, sid=1300.0, isocenter=(0.0, 0.0, 0.0),
                rotation=(0.0, 0.0, 7.0))
    sources, targets = detector_rays(view)
    fov = field_of_view(sources, targets, grid)
    integrals = cast(torch.ones((1, *grid.shape)), grid, sources, targets).integrals[0].numpy()
    assert 0.2 < fov.mean() < 0.9
    # Equal but for rays grazing an edge (partial samples), a pixel wide at most.
    assert np.mean(fov != (integrals > 1.0)) < 0.05
    from scipy.ndimage import binary_dilation

    assert np.all(integrals[~binary_dilation(fov, iterations=2)] == 0)
