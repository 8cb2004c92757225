"""Image formation of synthetic radiographs: material line integrals -> radiograph.

The last step of the rendering pipeline (the materials are :mod:`synth.materials`, the
ray casting :mod:`synth.render`): :func:`radiograph` turns the ``(M, H, W)`` line
integrals in g/cm² (one channel per entry of :data:`~synth.materials.MATERIALS`) into a
display image: polyenergetic Beer-Lambert attenuation with a tube spectrum
(:func:`~synth.materials.tube_spectrum`) and mass attenuation coefficients
(:func:`~synth.materials.mass_attenuation`), scatter, quantum noise, detector blur,
negative log, then clinical film processing (:mod:`synth.processing`): a continuation
of the anatomy past the CT's field of view, equalisation, detail and edge enhancement of
the log image and a film-like gradation curve.  Every step is switchable in
:class:`~synth.physics_params.PhysicsParams`;
:class:`~synth.physics_params.PhysicsRanges` samples them for domain randomisation
(both are importable from here too).

Display convention of the output: ``(H, W)`` float32 in [0, 1], "bone bright": white
is high attenuation, the unattenuated beam is black (as radiographs are displayed,
``Image2D`` convention 0 = black).
"""

from __future__ import annotations

import numpy as np
import torch

from synth import processing
from synth.materials import MATERIALS, mass_attenuation, tube_spectrum
from synth.physics_params import PhysicsParams, PhysicsRanges, as_dict
from synth.processing import gaussian, sigma_px

__all__ = [
    "PhysicsParams",
    "PhysicsRanges",
    "as_dict",
    "radiograph",
]


# --- radiograph -------------------------------------------------------------------------

#: Floor of the relative intensity before the log (a ray with no detected photons).
MIN_INTENSITY = 1e-6
#: Pixels per energy-bin batch in the Beer-Lambert sum (bounds the temporary memory).
_BEER_LAMBERT_CHUNK = 1 << 14


def radiograph(
    line_integrals: torch.Tensor | np.ndarray,
    params: PhysicsParams,
    pixel_spacing_mm: tuple[float, float],
    rng: np.random.Generator,
    fov: np.ndarray | None = None,
) -> np.ndarray:
    """A radiograph from per-material line integrals.

    Steps, in order (each but the log switchable in ``params``; 6-9 are
    :mod:`synth.processing`):

    1. Beer-Lambert.  Energy-integrating detector, ideal absorption: each photon
       contributes its energy, so the spectrum is weighted by ``E``:
       ``I = Σ_E w(E) exp(-Σ_m (μ/ρ)_m(E) L_m)`` with ``w ∝ fluence(E)·E``, ``Σ w = 1``;
       an unattenuated ray gives ``I = 1``.  Monoenergetic: one energy, ``w = 1``.
    2. Scatter: ``I += scatter_fraction · G(I)·mean(I)/mean(G(I))`` with ``G`` a
       Gaussian of ``scatter_sigma_mm`` (total scatter = fraction × total primary).
    3. Quantum noise: ``I = Poisson(I·dose)/dose``.
    4. Detector blur: Gaussian of ``blur_sigma_mm``.
    5. Negative log: ``p = -log(max(I, MIN_INTENSITY))``, the attenuation.
    6. Field of view (``fov_fill``, needs ``fov``): the anatomy is continued past the
       CT's field of view, fading with distance, so the CT's cut leaves no hard edge.
    7. Equalisation: ``q -= tone_equalization·G(q)``, the large-scale attenuation.
    8. Detail (``detail_gain``) and edge (``unsharp``) enhancement of the log image:
       ``q += gain·(q - G(q))`` for each band.
    9. Tone: a percentile window over the anatomy, then a logistic film curve between
       ``tone_black`` and ``tone_white`` (strictly increasing, never clipping).  Off:
       min-max of ``q``: with every step off, a linear function of ``p``.

    Args:
        line_integrals: ``(M, H, W)`` g/cm², channels in :data:`~synth.materials.MATERIALS` order.
        params: Physics parameters.
        pixel_spacing_mm: ``(row, column)`` detector pixel spacing in mm.
        rng: Source of the quantum noise; the continuation's noise (step 6) comes from
            ``rng.spawn(1)[0]``, which leaves ``rng``'s own stream untouched, so what
            ``rng`` gives after this call does not depend on steps 6-9.
        fov: ``(H, W)`` bool, the pixels whose ray crosses the CT
            (:func:`synth.processing.field_of_view`); None (unknown): step 6 is skipped.

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
    anatomy = processing.anatomy_mask(p)
    fill_rng = rng.spawn(1)[0] if params.fov_fill and params.noise and fov is not None else None
    q = processing.fill_outside_fov(p, fov, params, spacing, fill_rng)  # 6.
    q = processing.equalize(q, params, spacing)  # 7., 8.
    return np.clip(processing.tone(q, anatomy, params), 0.0, 1.0).astype(np.float32)  # 9.


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
    blurred = gaussian(intensity, sigma_px(params.scatter_sigma_mm, spacing))
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
    return gaussian(intensity, sigma_px(params.blur_sigma_mm, spacing))


def _attenuation(intensity: np.ndarray) -> np.ndarray:
    """5. The attenuation image ``-log I``, floored at :data:`MIN_INTENSITY` (no photons)."""
    return -np.log(np.maximum(intensity, MIN_INTENSITY))


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
