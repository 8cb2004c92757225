"""synth.randomize: attenuation scales, image/mask augmentation, presets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from synth.randomize import AugmentParams, attenuation_scales, augment
from ts2d_xray.xray_randomize import _pack, _unpack

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs" / "synth").glob("*.json"))

#: Every step off: augment() must return the image unchanged.
NOTHING = AugmentParams(
    invert_probability=0.0, gamma_probability=0.0, contrast_probability=0.0, albumentations=False
)
#: Only geometric transforms, always applied.
GEOMETRIC = replace(
    NOTHING,
    albumentations=True,
    affine_probability=1.0,
    grid_distortion_probability=1.0,
    elastic_probability=1.0,
    noise_probability=0.0,
    blur_probability=0.0,
    clahe_probability=0.0,
    jpeg_probability=0.0,
    downscale_probability=0.0,
)
#: Everything, always.
EVERYTHING = replace(
    GEOMETRIC,
    invert_probability=0.5,
    gamma_probability=1.0,
    contrast_probability=1.0,
    noise_probability=1.0,
    blur_probability=1.0,
    clahe_probability=1.0,
    jpeg_probability=1.0,
    downscale_probability=1.0,
)


def scene(h: int = 128, w: int = 128):
    """A smooth background, a bright square (mask 0) and a left-only block (mask 1)."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = (0.2 + 0.1 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.float32)
    masks = np.zeros((3, h, w), bool)
    image[40:80, 50:90] = 0.9
    masks[0, 40:80, 50:90] = True
    masks[1, 20:110, 5:40] = True  # a structure on the image's left only
    masks[2] = False  # an absent structure stays absent
    return image, masks


def test_attenuation_scales():
    names = [f"s{i}" for i in range(400)]
    s = attenuation_scales(names, np.random.default_rng(0), low=0.8, high=1.2, probability=0.25)
    assert list(s) == names
    v = np.array(list(s.values()))
    scaled = v[v != 1.0]
    assert 0.18 < scaled.size / v.size < 0.32
    assert scaled.min() >= 0.8 and scaled.max() <= 1.2 and scaled.std() > 0.08
    assert attenuation_scales(names, np.random.default_rng(0), 0.8, 1.2, 0.25) == s
    # A structure's factor depends on its position, not on the others' probabilities.
    assert attenuation_scales(names, np.random.default_rng(0), 0.8, 1.2, 1.0)["s3"] == pytest.approx(
        0.8 + 0.4 * np.random.default_rng(0).random((400, 2))[3, 1]
    )
    assert set(attenuation_scales(names, np.random.default_rng(0), probability=0.0).values()) == {1.0}
    with pytest.raises(ValueError, match="0 < low <= high"):
        attenuation_scales(names, np.random.default_rng(0), low=1.3, high=0.7)
    with pytest.raises(ValueError, match="probability"):
        attenuation_scales(names, np.random.default_rng(0), probability=2)
    with pytest.raises(ValueError, match="unique"):
        attenuation_scales(["a", "a"], np.random.default_rng(0))


def test_pack_round_trip():
    m = np.random.default_rng(0).random((21, 7, 9)) > 0.5
    packed = _pack(m)
    assert packed.shape == (3, 7, 9) and packed.dtype == np.uint8
    out = _unpack(packed, 21)
    np.testing.assert_array_equal(out, m)
    assert out.view(np.uint8).max() == 1  # proper booleans


def test_nothing_is_identity():
    image, masks = scene()
    out, out_masks = augment(image, masks, NOTHING, np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(out_masks, masks)
    assert out_masks is not masks


@pytest.mark.parametrize("params", [AugmentParams(), GEOMETRIC, EVERYTHING], ids=["default", "geometric", "all"])
def test_deterministic_shapes_dtypes(params):
    image, masks = scene()
    a = augment(image, masks, params, np.random.default_rng(42))
    b = augment(image, masks, params, np.random.default_rng(42))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == image.shape and a[0].dtype == np.float32
    assert a[1].shape == masks.shape and a[1].dtype == bool
    assert 0.0 <= a[0].min() and a[0].max() <= 1.0
    assert not a[1][2].any()
    if params is not NOTHING:
        c = augment(image, masks, params, np.random.default_rng(43))
        assert not np.array_equal(a[0], c[0])


def test_masks_follow_geometry():
    image, masks = scene()
    moved = 0
    for seed in range(8):
        out, out_masks = augment(image, masks, GEOMETRIC, np.random.default_rng(seed))
        inside, outside = out[out_masks[0]], out[~out_masks[0]]
        assert inside.size > 0.5 * masks[0].sum()
        assert inside.mean() > 0.8 and outside.mean() < 0.4
        # Most of the mask is on the bright square and vice versa.
        bright = out > 0.6
        assert (bright & out_masks[0]).sum() > 0.85 * out_masks[0].sum()
        assert (bright & out_masks[0]).sum() > 0.85 * bright.sum()
        moved += not np.array_equal(out_masks[0], masks[0])
    assert moved >= 6


def test_packed_masks_move_like_separate_masks():
    """Bit-packing many masks into channels gives the same result as one mask at a time."""
    image, _ = scene()
    rng = np.random.default_rng(1)
    masks = np.zeros((11, *image.shape), bool)
    for k in range(11):
        r, c = rng.integers(10, 100, size=2)
        masks[k, r:r + 20, c:c + 15] = True
    _, together = augment(image, masks, GEOMETRIC, np.random.default_rng(9))
    for k in (0, 7, 10):
        _, alone = augment(image, masks[k:k + 1], GEOMETRIC, np.random.default_rng(9))
        np.testing.assert_array_equal(alone[0], together[k])


def test_no_flips_left_stays_left():
    image, masks = scene()
    params = replace(EVERYTHING, invert_probability=0.0)
    w = image.shape[1]
    for seed in range(10):
        _, out_masks = augment(image, masks, params, np.random.default_rng(seed))
        cols = np.nonzero(out_masks[1])[1]
        assert cols.size > 0 and np.mean(cols < w / 2) > 0.95


def test_inversion():
    image, masks = scene()
    params = replace(NOTHING, invert_probability=1.0)
    out, out_masks = augment(image, masks, params, np.random.default_rng(0))
    np.testing.assert_allclose(out, 1.0 - image, atol=1e-6)
    np.testing.assert_array_equal(out_masks, masks)
    # Half the time with probability 0.5.
    flips = [augment(image, None, replace(NOTHING, invert_probability=0.5), np.random.default_rng(s))[0][60, 60] < 0.5
             for s in range(200)]
    assert 0.35 < np.mean(flips) < 0.65


def test_gamma_and_contrast():
    image, _ = scene()
    g, _ = augment(image, None, replace(NOTHING, gamma_probability=1.0, gamma_range=(2.0, 2.0)),
                   np.random.default_rng(0))
    np.testing.assert_allclose(g, image**2, rtol=1e-5)
    c, _ = augment(image, None, replace(NOTHING, contrast_probability=1.0, contrast_range=(0.5, 0.5)),
                   np.random.default_rng(0))
    assert c.std() == pytest.approx(0.5 * image.std(), rel=1e-3)
    assert c.mean() == pytest.approx(image.mean(), rel=1e-3)


def test_intensity_only_leaves_masks():
    image, masks = scene()
    params = replace(EVERYTHING, affine_probability=0.0, grid_distortion_probability=0.0, elastic_probability=0.0)
    out, out_masks = augment(image, masks, params, np.random.default_rng(3))
    np.testing.assert_array_equal(out_masks, masks)
    assert not np.allclose(out, image, atol=1e-3)


def test_rejects_bad_input():
    image, masks = scene()
    with pytest.raises(ValueError, match="image must be"):
        augment(image[None], masks, NOTHING, np.random.default_rng(0))
    with pytest.raises(ValueError, match="masks must be"):
        augment(image, masks.astype(np.uint8), NOTHING, np.random.default_rng(0))
    with pytest.raises(ValueError, match="masks must be"):
        augment(image, masks[:, :10], NOTHING, np.random.default_rng(0))


@pytest.mark.parametrize(
    "section, error, message",
    [
        ({"flip_probability": 0.5}, ValueError, "unknown AugmentParams key 'flip_probability'"),
        ({"rotate_deg": 30}, ValueError, "'rotate_deg' must be within"),
        ({"gamma_range": [1.5, 0.7]}, ValueError, "'gamma_range' must be"),
        ({"gamma_range": 1.2}, ValueError, "'gamma_range' must be"),
        ({"invert_probability": 1.5}, ValueError, "'invert_probability' must be in"),
        ({"albumentations": "yes"}, TypeError, "'albumentations' must be true or false"),
        ({"jpeg_quality_range": [0, 90]}, ValueError, "'jpeg_quality_range' must be within"),
    ],
)
def test_params_reject(section, error, message):
    with pytest.raises(error, match=message):
        AugmentParams.from_dict(section)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_presets_augment_section(path):
    section = json.loads(path.read_text())["augment"]
    params = AugmentParams.from_dict(section)
    assert params.rotate_deg <= 10
    low, high, p = params.attenuation_args()
    scales = attenuation_scales(["heart", "spine"], np.random.default_rng(0), low, high, p)
    assert all(low <= v <= high or v == 1.0 for v in scales.values())
    image, masks = scene(96, 96)
    out, out_masks = augment(image, masks, params, np.random.default_rng(0))
    assert out.shape == image.shape and out_masks.shape == masks.shape and out_masks.dtype == bool
