"""Imaging-physics parameters of synthetic radiographs, and the ranges they are drawn from.

:class:`PhysicsParams` is one fixed set of parameters for :func:`synth.physics.radiograph`
(each step's switch and strength, with units); :class:`PhysicsRanges` is a preset's
``"physics"`` section, the distributions those parameters are sampled from for domain
randomisation.  Dict conversion goes through :mod:`ts2d_xray.records`.

Example:
    >>> p = PhysicsParams.from_dict({"kvp": 100, "noise": False})
    >>> as_dict(p)["kvp"], as_dict(p)["noise"]
    (100.0, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import numpy as np

from ts2d_xray.records import check_keys, field_types, is_bool_field, record_from_dict, record_to_dict

from synth.materials import KVP_RANGE

__all__ = ["CHILD_STREAM_FIELDS", "PhysicsParams", "PhysicsRanges", "as_dict"]

#: What each bounded parameter must be (the words of its error message).
_EXPECTED = {
    "kvp": f"within {KVP_RANGE} kVp", "filtration_mm_al": ">= 0 mm", "energy_bin_kev": "in (0, 10] keV",
    "mono_energy_kev": "in [10, 200] keV", "dose": "> 0 photons", "scatter_fraction": "in [0, 1]",
    "scatter_sigma_mm": "> 0 mm", "blur_sigma_mm": ">= 0 mm", "tone_contrast": "> 0",
    "tone_low_percentile": "in [0, tone_high_percentile)",
    "tone_high_percentile": "in (tone_low_percentile, 100]",
    "tone_equalization": "in [0, 1]", "tone_equalization_sigma_mm": "> 0 mm",
    "unsharp_sigma_mm": "> 0 mm", "unsharp_amount": ">= 0",
    "fov_fill_decay_mm": "> 0 mm", "detail_gain": ">= 0", "detail_sigma_mm": "> 0 mm",
    "tone_midpoint": "in [0, 1]", "tone_black": "in [0, tone_white)", "tone_white": "in (tone_black, 1]",
}

#: Fields added with the film processing of issue 12.  :meth:`PhysicsRanges.sample` draws
#: them from a child generator (``rng.spawn``), which leaves the parent's stream where it
#: was: the draws that follow the physics (augmentation, and with it the masks) are the
#: same for a seed as before these fields existed, whatever their ranges.
CHILD_STREAM_FIELDS = ("fov_fill", "fov_fill_decay_mm", "detail_gain", "detail_sigma_mm",
                       "tone_midpoint", "tone_black", "tone_white")


@dataclass(frozen=True)
class PhysicsParams:
    """One fixed set of imaging-physics parameters for :func:`radiograph`.

    Each ``bool`` switches its step; off skips exactly that step.  Lengths are in mm on
    the detector (the plane of ``pixel_spacing_mm``).

    Attributes:
        polyenergetic: Integrate over the tube spectrum; False: monoenergetic beam at
            ``mono_energy_kev``.
        kvp: Tube voltage in kVp (:data:`~synth.materials.KVP_RANGE`).
        filtration_mm_al: Total aluminium filtration in mm.
        energy_bin_kev: Spectrum bin width in keV.  2 keV (~55 bins at 120 kVp) changes
            the attenuation ``-log I`` by < 0.002 against 0.5 keV bins and halves the time.
        mono_energy_kev: Beam energy in keV when not polyenergetic.
        noise: Quantum (Poisson) noise.
        dose: Mean detected photons per pixel for an unattenuated ray.
        scatter: Add scatter: a broad blur of the primary.
        scatter_fraction: Total scatter as a fraction of the total primary (0-1).
        scatter_sigma_mm: Gaussian sigma of the scatter kernel in mm.
        detector_blur: Gaussian blur of the detector (scintillator light spread).
        blur_sigma_mm: Its sigma in mm.
        tone: Vendor-style gradation: percentile window over the anatomy, then a
            logistic "film" curve between ``tone_black`` and ``tone_white``; False:
            min-max normalisation of the processed log image.
        tone_contrast: Slope of the logistic per window width (> 0; ~0 is linear, 10 is harsh).
        tone_low_percentile: Percentile of the anatomy's log image at window position 0.
        tone_high_percentile: Percentile at window position 1.
        tone_equalization: Dynamic-range compression of the log image, as vendors'
            multiscale processing does: this fraction (0-1) of the large-scale
            attenuation ``G(p)`` is removed, so e.g. the spine stays visible behind the
            heart and the abdomen does not burn out; 0 = none.
        tone_equalization_sigma_mm: Sigma in mm of ``G``.
        unsharp: Edge enhancement (unsharp masking) of the log image.
        unsharp_sigma_mm: Sigma in mm of the blur subtracted.
        unsharp_amount: Gain of the detail added back (0 = none).
        fov_fill: Continue the anatomy past the CT's field of view (see
            :func:`synth.processing.fill_outside_fov`) instead of the hard edge the cut
            leaves.
        fov_fill_decay_mm: Distance in mm over which the continuation of a cut through
            thick tissue fades (``exp(-d/λ)``).
        detail_gain: Gain of the mid-frequency band of the log image (ribs, clavicles,
            vessels), as multiscale processing amplifies it; 0 = none.
        detail_sigma_mm: Sigma in mm of the blur that bounds that band.
        tone_midpoint: Window position (0-1) at the film curve's midpoint; lower is brighter.
        tone_black: Display value the film curve tends to for the thinnest parts (its toe).
        tone_white: Display value it tends to for the thickest (its shoulder), > ``tone_black``.
    """

    polyenergetic: bool = True
    kvp: float = 120.0
    filtration_mm_al: float = 2.5
    energy_bin_kev: float = 2.0
    mono_energy_kev: float = 60.0
    noise: bool = True
    dose: float = 3.0e4
    scatter: bool = True
    scatter_fraction: float = 0.3
    scatter_sigma_mm: float = 40.0
    detector_blur: bool = True
    blur_sigma_mm: float = 0.2
    tone: bool = True
    tone_contrast: float = 3.5
    tone_low_percentile: float = 1.0
    tone_high_percentile: float = 99.5
    tone_equalization: float = 0.8
    tone_equalization_sigma_mm: float = 40.0
    unsharp: bool = True
    unsharp_sigma_mm: float = 1.5
    unsharp_amount: float = 1.0
    fov_fill: bool = True
    fov_fill_decay_mm: float = 80.0
    detail_gain: float = 1.5
    detail_sigma_mm: float = 8.0
    tone_midpoint: float = 0.65
    tone_black: float = 0.02
    tone_white: float = 0.85

    def __post_init__(self) -> None:
        for name in field_types(PhysicsParams):
            value = getattr(self, name)
            if is_bool_field(PhysicsParams, name):
                if not isinstance(value, (bool, np.bool_)):
                    raise TypeError(f"physics parameter {name!r} must be true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                raise TypeError(f"physics parameter {name!r} must be a finite number, got {value!r}")
        for name, ok in self._within_bounds().items():
            if not ok:
                raise ValueError(f"physics parameter {name!r} must be {_EXPECTED[name]}, got {getattr(self, name)!r}")

    def _within_bounds(self) -> dict[str, bool]:
        """``{parameter: whether it is within its bounds}`` for every bounded parameter (see ``_EXPECTED``)."""
        return {
            "kvp": KVP_RANGE[0] <= self.kvp <= KVP_RANGE[1],
            "filtration_mm_al": self.filtration_mm_al >= 0,
            "energy_bin_kev": 0 < self.energy_bin_kev <= 10,
            "mono_energy_kev": 10 <= self.mono_energy_kev <= 200,
            "dose": self.dose > 0,
            "scatter_fraction": 0 <= self.scatter_fraction <= 1,
            "scatter_sigma_mm": self.scatter_sigma_mm > 0,
            "blur_sigma_mm": self.blur_sigma_mm >= 0,
            "tone_contrast": self.tone_contrast > 0,
            "tone_low_percentile": 0 <= self.tone_low_percentile < self.tone_high_percentile,
            "tone_high_percentile": self.tone_low_percentile < self.tone_high_percentile <= 100,
            "tone_equalization": 0 <= self.tone_equalization <= 1,
            "tone_equalization_sigma_mm": self.tone_equalization_sigma_mm > 0,
            "unsharp_sigma_mm": self.unsharp_sigma_mm > 0,
            "unsharp_amount": self.unsharp_amount >= 0,
            "fov_fill_decay_mm": self.fov_fill_decay_mm > 0,
            "detail_gain": self.detail_gain >= 0,
            "detail_sigma_mm": self.detail_sigma_mm > 0,
            "tone_midpoint": 0 <= self.tone_midpoint <= 1,
            "tone_black": 0 <= self.tone_black < self.tone_white,
            "tone_white": self.tone_black < self.tone_white <= 1,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PhysicsParams:
        """Parameters from a mapping of field -> value; missing fields keep their defaults."""
        return record_from_dict(cls, d)


def as_dict(params: PhysicsParams) -> dict[str, float | bool]:
    """JSON-serialisable ``{field: value}`` of ``params``; :meth:`PhysicsParams.from_dict` inverts it."""
    return {name: (bool if is_bool_field(PhysicsParams, name) else float)(value)
            for name, value in record_to_dict(params).items()}


#: How one parameter is drawn (see :class:`PhysicsRanges`).
RangeKind = Literal["fixed", "uniform", "log_uniform", "bernoulli"]


@dataclass(frozen=True)
class PhysicsRanges:
    """Distributions of :class:`PhysicsParams` for domain randomisation.

    Built from a preset's ``"physics"`` section with :meth:`from_dict`, where each key
    is a :class:`PhysicsParams` field and its value is one of

    * a number or bool: fixed;
    * ``[low, high]``: uniform in [low, high];
    * ``{"log_uniform": [low, high]}``: log-uniform (for ``dose``-like scales);
    * for a switch (bool field), a number ``p`` in [0, 1]: on with probability ``p``.

    Fields not given keep :class:`PhysicsParams`' defaults.  Draws happen in field
    order, so the JSON key order does not change what a seed gives; the fields of
    :data:`CHILD_STREAM_FIELDS` are drawn from ``rng.spawn(1)[0]`` (only when one of
    them varies), so they never move ``rng`` itself.

    Attributes:
        spec: ``(field, kind, values)`` triples, kind one of ``"fixed"``,
            ``"uniform"``, ``"log_uniform"``, ``"bernoulli"``.

    Example:
        >>> r = PhysicsRanges.from_dict({"kvp": [100, 125], "dose": {"log_uniform": [1e4, 1e5]}, "unsharp": 0.5})
        >>> p = r.sample(np.random.default_rng(0))
        >>> 100 <= p.kvp <= 125
        True
    """

    spec: tuple[tuple[str, RangeKind, tuple[float | bool, ...]], ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PhysicsRanges:
        check_keys(PhysicsParams, d)
        spec = [(name, *_parse_range(name, d[name])) for name in field_types(PhysicsParams) if name in d]
        ranges = cls(tuple(spec))
        # Both ends of every range must make valid parameters.
        ranges._build(lambda name, kind, values: values[0] if kind != "bernoulli" else True)
        ranges._build(lambda name, kind, values: values[-1] if kind != "bernoulli" else False)
        return ranges

    def sample(self, rng: np.random.Generator) -> PhysicsParams:
        """Draw one :class:`PhysicsParams` (the :data:`CHILD_STREAM_FIELDS` from a child of ``rng``)."""
        varies = any(kind != "fixed" for name, kind, _ in self.spec if name in CHILD_STREAM_FIELDS)
        child = rng.spawn(1)[0] if varies else rng

        def draw(name: str, kind: RangeKind, values: tuple[float | bool, ...]) -> float | bool:
            source = child if name in CHILD_STREAM_FIELDS else rng
            if kind == "fixed":
                return values[0]
            if kind == "uniform":
                return float(source.uniform(values[0], values[1]))
            if kind == "log_uniform":
                return float(math.exp(source.uniform(math.log(values[0]), math.log(values[1]))))
            return bool(source.random() < values[0])

        return self._build(draw)

    def _build(self, value_of: Callable[[str, RangeKind, tuple[float | bool, ...]], float | bool]) -> PhysicsParams:
        return PhysicsParams(**{name: value_of(name, kind, values) for name, kind, values in self.spec})


def _parse_range(name: str, value: Any) -> tuple[RangeKind, tuple[float | bool, ...]]:
    """``(kind, values)`` of one entry of a ``"physics"`` section (see :class:`PhysicsRanges`)."""
    switch = is_bool_field(PhysicsParams, name)
    if isinstance(value, (bool, np.bool_)):
        return "fixed", (bool(value),)
    if isinstance(value, (int, float)) and not switch:
        return "fixed", (float(value),)
    if isinstance(value, (int, float)) and switch:
        if not 0 <= value <= 1:
            raise ValueError(f"physics range {name!r}: a probability must be in [0, 1], got {value!r}")
        return "bernoulli", (float(value),)
    if switch:
        raise ValueError(f"physics range {name!r} must be true, false or a probability, got {value!r}")
    kind: RangeKind = "uniform"
    if isinstance(value, Mapping):
        if set(value) != {"log_uniform"}:
            raise ValueError(f"physics range {name!r}: expected {{'log_uniform': [low, high]}}, got {value!r}")
        kind, value = "log_uniform", value["log_uniform"]
    if (
        not isinstance(value, (list, tuple)) or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"physics range {name!r} must be a number or [low, high], got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not low <= high or (kind == "log_uniform" and low <= 0):
        raise ValueError(f"physics range {name!r} must have 0 < low <= high (log) or low <= high, got {value!r}")
    return kind, (low, high)
