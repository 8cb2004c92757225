"""Image formation of synthetic radiographs: material line integrals -> radiograph.

The last step of the rendering pipeline (the materials are :mod:`synth.materials`, the
ray casting :mod:`synth.render`): :func:`radiograph` turns the ``(M, H, W)`` line
integrals in g/cm² (one channel per entry of :data:`~synth.materials.MATERIALS`) into a
display image: polyenergetic Beer-Lambert attenuation with a tube spectrum
(:func:`~synth.materials.tube_spectrum`) and mass attenuation coefficients
(:func:`~synth.materials.mass_attenuation`), scatter, quantum noise, detector blur,
negative log, a vendor-style tone curve and unsharp masking.  Every step is
switchable in :class:`~synth.physics_params.PhysicsParams`;
:class:`~synth.physics_params.PhysicsRanges` samples them for domain randomisation
(both are importable from here too).

Display convention of the output: ``(H, W)`` float32 in [0, 1], "bone bright": white
is high attenuation, the unattenuated beam is black (as radiographs are displayed,
``Image2D`` convention 0 = black).
"""

from __future__ import annotations

import numpy as np
import torch

from synth.materials import MATERIALS, mass_attenuation, tube_spectrum
from synth.physics_params import PhysicsParams, PhysicsRanges, as_dict

__all__ = [
    "PhysicsParams",
    "PhysicsRanges",
    "as_dict",
    "radiograph",
]


# --- radiograph -------------------------------------------------------------------------

#: Floor of the relative intensity before the log (a ray with no detected photons).
MIN_INTENSITY = 1e-6
#: Pixels attenuated less than this (``-log I``; ~5 mm of soft tissue at 60 keV) are
#: direct beam, left out of the tone curve's percentile window.
DIRECT_EXPOSURE_MAX_ATTENUATION = 0.1
#: Below this fraction of anatomy pixels the window uses every pixel.
MIN_ANATOMY_FRACTION = 0.01
#: Narrowest attenuation window (``-log I`` units) the tone step stretches; a flat
#: image maps to 0.
_MIN_WINDOW = 1e-6
#: Gaussian blurs wider than this many pixels are computed on a block-averaged image.
_PYRAMID_MIN_SIGMA_PX = 6.0
#: Pixels per energy-bin batch in the Beer-Lambert sum (bounds the temporary memory).
_BEER_LAMBERT_CHUNK = 1 << 14


def radiograph(
    line_integrals: torch.Tensor | np.ndarray,
    params: PhysicsParams,
    pixel_spacing_mm: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """A radiograph from per-material line integrals.

    Steps, in order (each but the log switchable in ``params``):

    1. Beer-Lambert.  Energy-integrating detector, ideal absorption: each photon
       contributes its energy, so the spectrum is weighted by ``E``:
       ``I = Σ_E w(E) exp(-Σ_m (μ/ρ)_m(E) L_m)`` with ``w ∝ fluence(E)·E``, ``Σ w = 1``;
       an unattenuated ray gives ``I = 1``.  Monoenergetic: one energy, ``w = 1``.
    2. Scatter: ``I += scatter_fraction · G(I)·mean(I)/mean(G(I))`` with ``G`` a
       Gaussian of ``scatter_sigma_mm`` (total scatter = fraction × total primary).
    3. Quantum noise: ``I = Poisson(I·dose)/dose``.
    4. Detector blur: Gaussian of ``blur_sigma_mm``.
    5. Negative log: ``p = -log(max(I, MIN_INTENSITY))``, the attenuation.
    6. Tone: optional dynamic-range compression ``p -= a·G(p)``, a percentile window
       over the anatomy (pixels with ``p > DIRECT_EXPOSURE_MAX_ATTENUATION`` before
       compression) to [0, 1], then a sigmoid of slope
       ``tone_contrast`` rescaled to map 0 -> 0 and 1 -> 1.  Off: min-max of ``p``, so
       with every step off the result is a monotone (linear) function of ``p``.
    7. Unsharp mask: ``y + amount·(y - G(y))`` with ``G`` of ``unsharp_sigma_mm``.

    Args:
        line_integrals: ``(M, H, W)`` g/cm², channels in :data:`~synth.materials.MATERIALS` order.
        params: Physics parameters.
        pixel_spacing_mm: ``(row, column)`` detector pixel spacing in mm.
        rng: Source of the quantum noise (the only random step).

    Returns:
        ``(H, W)`` float32 in [0, 1], bone bright (white = high attenuation).

    Example:
        >>> L = np.zeros((2, 8, 8), np.float32); L[0, :, 4:] = 20.0
        >>> img = radiograph(L, PhysicsParams(noise=False), (1.0, 1.0), np.random.default_rng(0))
        >>> bool(img[:, 4:].mean() > img[:, :4].mean())
        True
    """
    L, spacing = _checked(line_integrals, pixel_spacing_mm)
    intensity = _primary(L, params)  # 1. (H, W) float64, 1 = unattenuated
    intensity = _scatter(intensity, params, spacing)  # 2.
    intensity = _quantum_noise(intensity, params, rng)  # 3.
    intensity = _detector_blur(intensity, params, spacing)  # 4.
    p = _attenuation(intensity)  # 5.
    y = _tone(p, params, spacing)  # 6.
    return _unsharp(y, params, spacing).astype(np.float32)  # 7.


def _checked(line_integrals: torch.Tensor | np.ndarray, pixel_spacing_mm: tuple[float, float]
             ) -> tuple[torch.Tensor, tuple[float, float]]:
    """The line integrals as a tensor and the spacing as floats, refused unless ``(M, H, W)`` and two mm > 0."""
    L = torch.as_tensor(line_integrals)
    if L.ndim != 3 or L.shape[0] != len(MATERIALS):
        raise ValueError(f"line_integrals must be ({len(MATERIALS)}, H, W), got shape {tuple(L.shape)}")
    spacing = tuple(float(s) for s in pixel_spacing_mm)
    if len(spacing) != 2 or not all(s > 0 for s in spacing):
        raise ValueError(f"pixel_spacing_mm must be two positive (row, column) mm, got {pixel_spacing_mm!r}")
    return L, spacing


def _primary(L: torch.Tensor, params: PhysicsParams) -> np.ndarray:
    """1. Polyenergetic (or mono) Beer-Lambert, energy-weighted: relative intensity, 1 = unattenuated."""
    if params.polyenergetic:
        energies, fluence = tube_spectrum(params.kvp, params.filtration_mm_al, params.energy_bin_kev)
        weights = fluence * energies
        weights /= weights.sum()
    else:
        energies, weights = np.array([params.mono_energy_kev]), np.array([1.0])
    mu = np.stack([mass_attenuation(m, energies) for m in MATERIALS], axis=1)  # (E, M) cm²/g
    return _beer_lambert(L, mu, weights)


def _scatter(intensity: np.ndarray, params: PhysicsParams, spacing: tuple[float, float]) -> np.ndarray:
    """2. Scatter: a broad, mass-preserving blur of the primary, ``scatter_fraction`` of it in total."""
    if not (params.scatter and params.scatter_fraction > 0):
        return intensity
    blurred = _gaussian(intensity, _sigma_px(params.scatter_sigma_mm, spacing))
    return intensity + params.scatter_fraction * blurred * (intensity.mean() / max(blurred.mean(), 1e-12))


def _quantum_noise(intensity: np.ndarray, params: PhysicsParams, rng: np.random.Generator) -> np.ndarray:
    """3. Quantum noise: ``Poisson(I·dose)/dose``."""
    if not params.noise:
        return intensity
    return rng.poisson(intensity * params.dose) / params.dose


def _detector_blur(intensity: np.ndarray, params: PhysicsParams, spacing: tuple[float, float]) -> np.ndarray:
    """4. Detector blur: a Gaussian of ``blur_sigma_mm``."""
    if not (params.detector_blur and params.blur_sigma_mm > 0):
        return intensity
    return _gaussian(intensity, _sigma_px(params.blur_sigma_mm, spacing))


def _attenuation(intensity: np.ndarray) -> np.ndarray:
    """5. The attenuation image ``-log I``, floored at :data:`MIN_INTENSITY` (no photons)."""
    return -np.log(np.maximum(intensity, MIN_INTENSITY))


def _tone(p: np.ndarray, params: PhysicsParams, spacing: tuple[float, float]) -> np.ndarray:
    """6. The tone curve (or plain min-max) of the attenuation image, clipped to [0, 1]."""
    if params.tone:
        y = _film_curve(p, params, spacing)
    else:
        lo, hi = p.min(), p.max()
        y = (p - lo) / (hi - lo) if hi - lo > _MIN_WINDOW else np.zeros_like(p)
    return np.clip(y, 0.0, 1.0)


def _film_curve(p: np.ndarray, params: PhysicsParams, spacing: tuple[float, float]) -> np.ndarray:
    """Step 6 with ``tone`` on: compression, percentile window over the anatomy, rescaled sigmoid."""
    # Window from the anatomy's histogram: pixels of the direct beam (outside the
    # patient) are left out, as vendors' exposure analysis does.
    anatomy = p > DIRECT_EXPOSURE_MAX_ATTENUATION
    if anatomy.sum() < MIN_ANATOMY_FRACTION * p.size:
        anatomy[:] = True
    if params.tone_equalization > 0:
        p = p - params.tone_equalization * _gaussian(p, _sigma_px(params.tone_equalization_sigma_mm, spacing))
    lo, hi = np.percentile(p[anatomy], [params.tone_low_percentile, params.tone_high_percentile])
    if not hi - lo > _MIN_WINDOW:  # uniform anatomy: window the whole image instead
        lo, hi = p.min(), p.max()
    x = (p - lo) / (hi - lo) if hi - lo > _MIN_WINDOW else np.zeros_like(p)
    c = params.tone_contrast
    s0, s1 = _sigmoid(-c / 2), _sigmoid(c / 2)
    return (_sigmoid(c * (x - 0.5)) - s0) / (s1 - s0)


def _unsharp(y: np.ndarray, params: PhysicsParams, spacing: tuple[float, float]) -> np.ndarray:
    """7. Unsharp mask: ``y + amount·(y - G(y))``, clipped to [0, 1]."""
    if not (params.unsharp and params.unsharp_amount > 0):
        return y
    detail = y - _gaussian(y, _sigma_px(params.unsharp_sigma_mm, spacing))
    return np.clip(y + params.unsharp_amount * detail, 0.0, 1.0)


def _beer_lambert(L: torch.Tensor, mu: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``Σ_E w(E) exp(-Σ_m μ[E, m] L[m])`` per pixel of ``(M, H, W)`` line integrals."""
    M, H, W = L.shape
    flat = L.reshape(M, -1).to(torch.float32)
    neg_mu = -torch.as_tensor(mu, dtype=torch.float32, device=flat.device)  # (E, M)
    w_t = torch.as_tensor(weights, dtype=torch.float32, device=flat.device)
    out = torch.empty(flat.shape[1], dtype=torch.float32, device=flat.device)
    chunk = _BEER_LAMBERT_CHUNK if flat.device.type == "cpu" else max(flat.shape[1], 1)
    for start in range(0, flat.shape[1], chunk):
        x = flat[:, start:start + chunk]
        # -sum_m mu_m(E) L_m as rank-1 updates (a K=2 matmul is slower), then exp, then sum_E w.
        exponent = torch.outer(neg_mu[:, 0], x[0])  # (E, n)
        for m in range(1, M):
            exponent.addr_(neg_mu[:, m], x[m])
        torch.mv(exponent.exp_().T, w_t, out=out[start:start + chunk])
    return out.reshape(H, W).cpu().numpy().astype(np.float64)


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    from scipy.special import expit

    return expit(x)


def _sigma_px(sigma_mm: float, spacing: tuple[float, float]) -> tuple[float, float]:
    return sigma_mm / spacing[0], sigma_mm / spacing[1]


def _gaussian(image: np.ndarray, sigma_px: tuple[float, float]) -> np.ndarray:
    """Gaussian blur with reflecting edges; wide ones via a block-averaged image.

    For sigma >= 6 px the image is block-averaged by ``f = floor(sigma/3)``, blurred
    with ``sigma/f`` and bilinearly upsampled: the extra blur of averaging and
    upsampling (variance ~ f²/4 px²) is under 3 % of sigma² and the cost drops by f².
    """
    from scipy.ndimage import gaussian_filter

    factor = int(min(sigma_px) // 3) if min(sigma_px) >= _PYRAMID_MIN_SIGMA_PX else 1
    if factor < 2:
        return gaussian_filter(image, sigma_px, mode="reflect", truncate=3.0)
    H, W = image.shape
    small = torch.nn.functional.avg_pool2d(
        torch.from_numpy(np.ascontiguousarray(image))[None, None], factor, ceil_mode=True, count_include_pad=False
    )[0, 0].numpy()
    small = gaussian_filter(small, (sigma_px[0] / factor, sigma_px[1] / factor), mode="reflect", truncate=3.0)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(small)[None, None], scale_factor=factor, mode="bilinear", align_corners=False
    )[0, 0, :H, :W]
    return up.numpy()
