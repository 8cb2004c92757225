"""Clinical film processing of a synthetic radiograph's attenuation image.

Digital radiography systems do not display the detector signal as it is: they take its
log, equalise the large-scale attenuation (so the mediastinum and the abdomen do not
burn out white next to the lungs), amplify detail at the scale of ribs and vessels,
sharpen edges, and map the result through an S-shaped gradation ("film") curve.  This
module does the same to the attenuation image ``p = -log I`` of
:func:`synth.physics.radiograph` (its steps 6 to 9), after it fills what lies outside
the CT's field of view.  Every step is set by :class:`~synth.physics_params.PhysicsParams`.

Conventions: images are ``(H, W)`` float64 in attenuation units (``-log I``, 0 = direct
beam) until the tone curve, whose output is float64 in (0, 1), bone bright.  Lengths
are in mm on the detector; ``spacing`` is the ``(row, column)`` pixel size in mm.
"""

from __future__ import annotations

import numpy as np
import torch

from ts2d_xray.image import Grid

from synth.physics_params import PhysicsParams

__all__ = ["anatomy_mask", "equalize", "field_of_view", "fill_outside_fov", "gaussian", "sigma_px", "tone"]

#: Pixels attenuated less than this (``-log I``; ~5 mm of soft tissue at 60 keV) are
#: direct beam (outside the patient), left out of the tone curve's window.
DIRECT_EXPOSURE_MAX_ATTENUATION = 0.1
#: Below this fraction of anatomy pixels the window uses every pixel.
MIN_ANATOMY_FRACTION = 0.01
#: Attenuation (``-log I``) of a body about 10 cm thick: a field-of-view border at least
#: this attenuating is continued over the whole ``fov_fill_decay_mm``; a thinner one (a
#: skin edge) over a proportionally shorter distance.
FULL_THICKNESS_ATTENUATION = 2.0
#: Width in mm of the field of view's outer ring that is replaced too: there rays graze
#: the volume's edge (partial volume, and a cone beam enters a thick volume's end face
#: obliquely), and the ramp they leave would stay as a dark seam.
BORDER_RING_MM = 8.0
#: Gaussian sigma in mm of the local mean of the anatomy along the border that is
#: continued outwards, and of the smoothing near the border: small, so the continuation
#: starts at the border's own value (no seam).
BORDER_MEAN_SIGMA_MM = 1.5
#: Distance in mm over which the smoothing of the continuation widens from
#: ``BORDER_MEAN_SIGMA_MM`` to ``FILL_SMOOTH_SIGMA_MM`` (weight ``exp(-d/SEAM_MM)``).
SEAM_MM = 10.0
#: Inside, the image goes from the continuation to ``p`` with weight ``1 - exp(-d/BLEND_MM)``.
BLEND_MM = 3.0
#: Gaussian sigma in mm that smooths the continuation away from the border (no streaks
#: from single border pixels).
FILL_SMOOTH_SIGMA_MM = 15.0
#: Narrowest attenuation window (``-log I`` units) the tone step stretches; a flat
#: image maps to its lower end.
MIN_WINDOW = 1e-6
#: Gaussian blurs wider than this many pixels are computed on a block-averaged image.
_PYRAMID_MIN_SIGMA_PX = 6.0


def anatomy_mask(p: np.ndarray) -> np.ndarray:
    """Pixels of the patient in the CT's field of view: ``p > DIRECT_EXPOSURE_MAX_ATTENUATION``.

    All pixels when fewer than :data:`MIN_ANATOMY_FRACTION` qualify (no patient: the
    window then spans the whole image and nothing is filled).
    """
    anatomy = p > DIRECT_EXPOSURE_MAX_ATTENUATION
    if anatomy.sum() < MIN_ANATOMY_FRACTION * p.size:
        anatomy[:] = True
    return anatomy


def field_of_view(sources: np.ndarray, targets: np.ndarray, grid: Grid) -> np.ndarray:
    """Detector pixels whose ray crosses the CT volume: ``(H, W)`` bool.

    The volume is the box of ``grid``'s voxels (index ``-0.5`` to ``n - 0.5`` on each
    axis); a ray is the segment from its source to its detector pixel (LPS mm, as
    :func:`synth.geometry.detector_rays` gives them).  Slab test in index space.
    """
    from synth.render import world_to_index

    shape = sources.shape[:2]
    src = world_to_index(sources.reshape(-1, 3), grid)
    direction = world_to_index(targets.reshape(-1, 3), grid) - src
    upper = np.asarray(grid.shape[::-1], float) - 0.5  # (I, J, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (-0.5 - src) / direction
        t1 = (upper - src) / direction
    flat = np.abs(direction) < 1e-12  # parallel to a slab: inside it or never
    within = (src >= -0.5) & (src <= upper)
    t_low = np.where(flat, np.where(within, -np.inf, np.inf), np.minimum(t0, t1))
    t_high = np.where(flat, np.where(within, np.inf, -np.inf), np.maximum(t0, t1))
    enter, leave = np.maximum(t_low.max(axis=1), 0.0), np.minimum(t_high.min(axis=1), 1.0)
    return (enter < leave).reshape(shape)


def fill_outside_fov(p: np.ndarray, fov: np.ndarray | None, params: PhysicsParams, spacing: tuple[float, float],
                     rng: np.random.Generator | None) -> np.ndarray:
    """Step 6: continue the anatomy past the CT's field of view, fading with distance.

    A CT's field of view cuts the patient (shoulders, neck, abdomen; the arms, which a
    CT holds above the head, are missing) along straight lines where a film shows the
    body going on; a DRR shows them as hard edges.  Inside the field of view eroded by
    :data:`BORDER_RING_MM` (its border pixels are partial: rays grazing the volume's
    edge), ``e`` is the local mean of ``p`` (sigma :data:`BORDER_MEAN_SIGMA_MM`); each
    pixel at distance ``d`` (mm) outside gets ``t = e_b·exp(-d/λ)``, ``e_b`` that mean
    at its nearest inside pixel and
    ``λ = fov_fill_decay_mm · min(1, e_b / FULL_THICKNESS_ATTENUATION)``: a cut through
    thick tissue fades over ``fov_fill_decay_mm``, a border through air or skin within
    millimetres.  ``t`` is smoothed, little at the border and more (sigma
    :data:`FILL_SMOOTH_SIGMA_MM`) away from it, and those pixels become ``max(p, t)``; with ``noise``
    on they get the extra quantum noise the added attenuation ``a`` brings
    (``var = (exp(a) - 1)·exp(p)/dose``, drawn from ``rng``).  Inside, ``p`` takes over
    from ``t`` within :data:`BLEND_MM` of the border (weight ``1 - exp(-d/BLEND_MM)``);
    deeper inside nothing changes.

    Args:
        p: ``(H, W)`` attenuation image.
        fov: ``(H, W)`` bool, the rays that cross the CT (:func:`field_of_view`); None:
            unknown, nothing is filled.
        params: ``fov_fill``, ``fov_fill_decay_mm``, ``noise`` and ``dose`` are used.
        spacing: ``(row, column)`` pixel spacing in mm.
        rng: Source of the continuation's noise (only used with ``noise`` on).

    Returns:
        The filled ``(H, W)`` attenuation image (``p`` itself when there is nothing to fill).
    """
    from scipy.ndimage import binary_erosion, distance_transform_edt

    if not params.fov_fill or fov is None:
        return p
    ring_px = max(1, int(np.ceil(BORDER_RING_MM / min(spacing))))
    inside = binary_erosion(np.asarray(fov, bool), iterations=ring_px, border_value=1)
    if inside.all() or not inside.any():
        return p
    distance_mm, (rows, cols) = distance_transform_edt(~inside, sampling=spacing, return_indices=True)
    edge = np.maximum(_inside_mean(p, inside, sigma_px(BORDER_MEAN_SIGMA_MM, spacing))[rows, cols], 0.0)
    decay_mm = params.fov_fill_decay_mm * np.clip(edge / FULL_THICKNESS_ATTENUATION, 1e-3, 1.0)
    tissue = edge * np.exp(-distance_mm / decay_mm)
    near = np.exp(-distance_mm / SEAM_MM)
    tissue = (near * gaussian(tissue, sigma_px(BORDER_MEAN_SIGMA_MM, spacing))
              + (1 - near) * gaussian(tissue, sigma_px(FILL_SMOOTH_SIGMA_MM, spacing)))
    added = np.maximum(tissue - p, 0.0)
    filled = p + added
    if params.noise and rng is not None:
        # p already has the noise of intensity exp(-p); the added attenuation a brings the
        # rest: var = (e^a - 1)·e^p / dose.
        extra = np.sqrt(np.expm1(added) * np.exp(np.minimum(p, 50.0)) / params.dose)
        filled = filled + extra * rng.standard_normal(p.shape)
    # Inside, p takes over from t within a few mm of the border: no seam where they differ.
    blend = -np.expm1(-distance_transform_edt(inside, sampling=spacing) / BLEND_MM)
    return np.where(inside, blend * p + (1 - blend) * tissue, filled)


def _inside_mean(p: np.ndarray, inside: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian-weighted mean of ``p`` over the ``inside`` pixels only (normalised convolution)."""
    weight = gaussian(inside.astype(np.float64), sigma)
    return gaussian(np.where(inside, p, 0.0), sigma) / np.maximum(weight, 1e-6)


def equalize(q: np.ndarray, params: PhysicsParams, spacing: tuple[float, float]) -> np.ndarray:
    """Steps 7-8: large-scale equalisation, then detail and edge enhancement, all on the log image.

    ``q - a·G_e(q)`` removes the fraction ``a = tone_equalization`` of the attenuation
    at scales above ``tone_equalization_sigma_mm`` (so lungs, heart and abdomen share
    one display range); then the band ``q - G_d(q)`` (``detail_sigma_mm``: ribs,
    clavicles, vessels) is added with gain ``detail_gain`` and, with ``unsharp`` on,
    the band ``q - G_u(q)`` (``unsharp_sigma_mm``: edges) with gain ``unsharp_amount``.
    Each is a linear filter: a zero gain leaves ``q`` as it is.
    """
    if params.tone_equalization > 0:
        q = q - params.tone_equalization * gaussian(q, sigma_px(params.tone_equalization_sigma_mm, spacing))
    bands = []
    if params.detail_gain > 0:
        bands.append((params.detail_gain, params.detail_sigma_mm))
    if params.unsharp and params.unsharp_amount > 0:
        bands.append((params.unsharp_amount, params.unsharp_sigma_mm))
    out = q
    for gain, sigma_mm in bands:
        out = out + gain * (q - gaussian(q, sigma_px(sigma_mm, spacing)))
    return out


def tone(q: np.ndarray, anatomy: np.ndarray, params: PhysicsParams) -> np.ndarray:
    """Step 9: the gradation curve, or with ``tone`` off a min-max of ``q`` to [0, 1].

    With ``tone`` on, a window from the ``tone_low_percentile``-th to the
    ``tone_high_percentile``-th percentile of ``q`` over the anatomy (the direct beam is
    left out, as vendors' exposure analysis does) gives ``x`` (0 and 1 at its ends,
    beyond them outside [0, 1]); then the film curve
    ``y = tone_black + (tone_white - tone_black)·σ(tone_contrast·(x - tone_midpoint))``,
    a logistic in log exposure like a film's characteristic (H&D) curve.  It is strictly
    increasing and stays inside (``tone_black``, ``tone_white``): nothing clips, however
    thick the abdomen or thin the lung.
    """
    from scipy.special import expit

    if not params.tone:
        lo, hi = q.min(), q.max()
        return (q - lo) / (hi - lo) if hi - lo > MIN_WINDOW else np.zeros_like(q)
    lo, hi = np.percentile(q[anatomy], [params.tone_low_percentile, params.tone_high_percentile])
    if not hi - lo > MIN_WINDOW:  # uniform anatomy: window the whole image instead
        lo, hi = q.min(), q.max()
    x = (q - lo) / (hi - lo) if hi - lo > MIN_WINDOW else np.zeros_like(q)
    curve = expit(params.tone_contrast * (x - params.tone_midpoint))
    return params.tone_black + (params.tone_white - params.tone_black) * curve


def sigma_px(sigma_mm: float, spacing: tuple[float, float]) -> tuple[float, float]:
    """A Gaussian sigma in mm as ``(row, column)`` pixels."""
    return sigma_mm / spacing[0], sigma_mm / spacing[1]


def gaussian(image: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian blur (sigma in ``(row, column)`` pixels) with reflecting edges; wide ones via a block-averaged image.

    For sigma >= 6 px the image is block-averaged by ``f = floor(sigma/3)``, blurred
    with ``sigma/f`` and bilinearly upsampled: the extra blur of averaging and
    upsampling (variance ~ f²/4 px²) is under 3 % of sigma² and the cost drops by f².
    """
    from scipy.ndimage import gaussian_filter

    factor = int(min(sigma) // 3) if min(sigma) >= _PYRAMID_MIN_SIGMA_PX else 1
    if factor < 2:
        return gaussian_filter(image, sigma, mode="reflect", truncate=3.0)
    H, W = image.shape
    small = torch.nn.functional.avg_pool2d(
        torch.from_numpy(np.ascontiguousarray(image))[None, None], factor, ceil_mode=True, count_include_pad=False
    )[0, 0].numpy()
    small = gaussian_filter(small, (sigma[0] / factor, sigma[1] / factor), mode="reflect", truncate=3.0)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(small)[None, None], scale_factor=factor, mode="bilinear", align_corners=False
    )[0, 0, :H, :W]
    return up.numpy()
