"""Intensity normalisation of network inputs, as nnU-Net does it, for training and inference alike.

Each image channel is normalised with the nnU-Net scheme that ``plans.json`` names
(``configurations["2d"]["normalization_schemes"]``, chosen from
``dataset.json["channel_names"]`` when planning):

* ``CTNormalization``: clip to the training foreground's 0.5/99.5 percentiles, subtract
  its mean and divide by its standard deviation
  (``plans["foreground_intensity_properties_per_channel"]``);
* ``ZScoreNormalization``: per image, mean 0 and standard deviation 1;
* ``RescaleTo01Normalization``: per image, to [0, 1]; ``NoNormalization``: unchanged.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ts2d_xray.nnunet.layout import CONFIGURATION

__all__ = ["NORMALIZATIONS", "Normalization", "normalize", "plans_normalization"]

#: nnU-Net's normalisation schemes that we reproduce.
NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization")
#: Per image channel: ``(scheme name, foreground intensity properties)``.
Normalization = Sequence[tuple[str, Mapping[str, float]]]
_CT_PROPERTIES = frozenset({"mean", "std", "percentile_00_5", "percentile_99_5"})


def plans_normalization(plans: Mapping[str, Any]) -> tuple[tuple[str, dict[str, float]], ...]:
    """Per data set channel, ``(scheme name, foreground intensity properties)`` of ``plans.json``.

    Raises:
        KeyError, TypeError: Plans without ``configurations["2d"]["normalization_schemes"]``.
    """
    schemes = plans["configurations"][CONFIGURATION]["normalization_schemes"]
    properties = plans.get("foreground_intensity_properties_per_channel", {})
    return tuple((str(s), dict(properties.get(str(c), {}))) for c, s in enumerate(schemes))


def normalize(array: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Normalise a ``(C, H, W)`` image channel by channel with nnU-Net's classes.

    Args:
        array: The image at the network's pixel size.
        normalization: Per channel ``(scheme name, foreground intensity properties)``
            (:func:`plans_normalization`).

    Returns:
        ``(C, H, W)`` float32.

    Raises:
        ValueError: A channel count other than the plans', a scheme not in
            :data:`NORMALIZATIONS`, or ``CTNormalization`` without its properties.

    Example:
        >>> x = normalize(np.array([[[1.0, 3.0]]]), [("ZScoreNormalization", {})])
        >>> x.round(3).tolist()
        [[[-1.0, 1.0]]]
    """
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    if array.ndim != 3 or array.shape[0] != len(normalization):
        raise ValueError(f"image must be (C, H, W) with C = {len(normalization)}, got {array.shape}")
    out = np.empty(array.shape, np.float32)
    for c, (name, properties) in enumerate(normalization):
        if name not in NORMALIZATIONS:
            raise ValueError(f"normalization scheme {name!r} is not supported; supported: {', '.join(NORMALIZATIONS)}")
        missing = _CT_PROPERTIES - set(properties) if name == "CTNormalization" else set()
        if missing:
            raise ValueError(f"CTNormalization of channel {c} needs foreground intensity properties "
                             f"{sorted(missing)} in plans.json")
        scheme = getattr(schemes, name)(use_mask_for_norm=False, intensityproperties=dict(properties))
        out[c] = scheme.run(np.array(array[c], dtype=np.float32), None)
    return out
