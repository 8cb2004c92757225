"""Domain randomisation of synthetic radiographs and their masks.

Two parts:

* :func:`attenuation_scales` samples per-structure attenuation factors that the
  renderer multiplies into the densities of each structure before ray casting
  (FleXray: per-structure attenuation randomisation, inversion and strong augmentation
  raised mean Dice on 8 real X-ray sets from 0.35 to 0.87).
* :func:`augment` randomises a rendered image: inversion, gamma, contrast, then an
  albumentations pipeline (affine, grid and elastic distortion, noise, blur, CLAHE,
  JPEG, downscaling), with no flips and rotations of at most ±10°.  It is
  :func:`ts2d_xray.xray_randomize.augment`, the pipeline that training applies to
  radiograph patches too; :class:`AugmentParams` adds the attenuation settings to its
  parameters, so one preset section sets both.

Images are ``(H, W)`` float32 in [0, 1] (0 = black), masks ``(K, H, W)`` bool.
Everything random comes from the ``numpy.random.Generator`` passed in: the same
generator state gives the same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ts2d_xray.xray_randomize import XrayAugmentParams, augment

__all__ = ["AugmentParams", "attenuation_scales", "augment"]


def attenuation_scales(
    names: Sequence[str],
    rng: np.random.Generator,
    low: float = 0.7,
    high: float = 1.3,
    probability: float = 0.5,
) -> dict[str, float]:
    """Per-structure attenuation factors.

    Each structure is scaled, with ``probability``, by a factor uniform in
    ``[low, high]``; otherwise by 1.0.  Two draws are taken per structure whether or
    not it is scaled, so a structure's factor depends only on the seed and its
    position in ``names``.

    Args:
        names: Structure names (unique).
        rng: Random source.
        low, high: Range of the factors (``0 < low <= high``).
        probability: Chance that a structure is scaled.

    Returns:
        ``{name: factor}`` in the order of ``names``.

    Example:
        >>> s = attenuation_scales(["rib_left_1", "heart"], np.random.default_rng(0))
        >>> all(0.7 <= v <= 1.3 for v in s.values())
        True
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError("names must be unique")
    if not 0 < low <= high:
        raise ValueError(f"attenuation range must satisfy 0 < low <= high, got low={low}, high={high}")
    if not 0 <= probability <= 1:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    draws = rng.random((len(names), 2))
    return {
        name: float(low + (high - low) * u) if c < probability else 1.0
        for name, (c, u) in zip(names, draws)
    }


@dataclass(frozen=True)
class AugmentParams(XrayAugmentParams):
    """A preset's ``"augment"`` section: the radiograph augmentation of
    :class:`~ts2d_xray.xray_randomize.XrayAugmentParams` (see there for its fields) plus
    the renderer's per-structure attenuation scaling.

    Attributes:
        attenuation_range: Per-structure attenuation factors for the renderer
            (see :func:`attenuation_scales`).
        attenuation_probability: Chance that a structure's attenuation is scaled.
    """

    attenuation_range: tuple[float, float] = (0.7, 1.3)
    attenuation_probability: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()  # checks every field's type, ranges and probabilities
        if self.attenuation_range[0] <= 0:
            raise ValueError(f"augment parameter 'attenuation_range' must be > 0, got {self.attenuation_range!r}")

    def attenuation_args(self) -> tuple[float, float, float]:
        """``(low, high, probability)``, the trailing arguments of :func:`attenuation_scales`."""
        return (*self.attenuation_range, self.attenuation_probability)
