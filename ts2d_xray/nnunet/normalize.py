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


def normalize(array: np.ndarray, normalization: Normalization, *, use_mask: Sequence[bool] | None = None,
              nonzero: np.ndarray | None = None) -> np.ndarray:
    """Normalise a ``(C, H, W)`` image channel by channel with nnU-Net's classes.

    Args:
        array: The image at the network's pixel size; or any ``(C, ...)`` array
            (nnU-Net's ``(C, 1, H, W)`` in :mod:`ts2d_xray.nnunet.exact`).
        normalization: Per channel ``(scheme name, foreground intensity properties)``
            (:func:`plans_normalization`).
        use_mask: Per channel, the plans' ``use_mask_for_norm`` (default: off).
        nonzero: nnU-Net's crop mask, shaped like one channel: >= 0 inside the
            non-zero region, -1 outside; where ``use_mask`` is on, the statistics come
            from inside and ZScore leaves the outside at 0.

    Returns:
        ``(C, ...)`` float32.

    Raises:
        ValueError: A channel count other than the plans', a scheme not in
            :data:`NORMALIZATIONS`, or ``CTNormalization`` without its properties.

    Example:
        >>> x = normalize(np.array([[[1.0, 3.0]]]), [("ZScoreNormalization", {})])
        >>> x.round(3).tolist()
        [[[-1.0, 1.0]]]
    """
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    if array.ndim < 3 or array.shape[0] != len(normalization):
        raise ValueError(f"image must be (C, H, W) with C = {len(normalization)}, got {array.shape}")
    if use_mask is not None and any(use_mask) and nonzero is None:
        raise ValueError("use_mask_for_norm needs the non-zero mask")
    out = np.empty(array.shape, np.float32)
    for c, (name, properties) in enumerate(normalization):
        if name not in NORMALIZATIONS:
            raise ValueError(f"normalization scheme {name!r} is not supported; supported: {', '.join(NORMALIZATIONS)}")
        missing = _CT_PROPERTIES - set(properties) if name == "CTNormalization" else set()
        if missing:
            raise ValueError(f"CTNormalization of channel {c} needs foreground intensity properties "
                             f"{sorted(missing)} in plans.json")
        masked = bool(use_mask[c]) if use_mask is not None else False
        scheme = getattr(schemes, name)(use_mask_for_norm=masked, intensityproperties=dict(properties))
        out[c] = scheme.run(np.array(array[c], dtype=np.float32), nonzero)
    return out
