"""Training data: read and check every case, then resample and normalise as the plans say.

Small data sets fit in memory, so every case is read once, before training starts;
a broken case (missing file, label shape, non-binary label) raises
:class:`~ts2d_xray.errors.InputError` then, not in the middle of an epoch.

Arrays follow :mod:`ts2d_xray.dataset.format`: images ``(C, H, W)`` float32 and masks
``(K, H, W)`` in the radiograph display convention.  After :func:`prepare_case` they
are at the plans' pixel size (``configurations["2d"]["spacing"]``, (row, column) mm),
normalised per channel as nnU-Net does, and have ``plans["ts2d"]["in_channels"]``
channels.

Normalisation is inference's (:mod:`ts2d_xray.nnunet.normalize`: nnU-Net's classes,
chosen by ``dataset.json["channel_names"]`` when planning): ``"CT"``: clip to the
training foreground's 0.5/99.5 percentiles, subtract its mean and divide by its
standard deviation (``plans["foreground_intensity_properties_per_channel"]``);
``"zscore"``: per image, mean 0 and standard deviation 1.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ts2d_xray.dataset import Dataset, iter_cases, validate_case
from ts2d_xray.dataset.format import CASES_FILE, sampling_weight_problem
from ts2d_xray.errors import InputError
from ts2d_xray.image import Image2D, Masks
from ts2d_xray.nnunet.layout import CONFIGURATION
from ts2d_xray.nnunet.normalize import normalize, plans_normalization

__all__ = ["RawCase", "TrainingCase", "check_channels", "prepare_case", "preprocess_image", "preprocess_masks",
           "read_cases"]

log = logging.getLogger(__name__)

#: Foreground pixel locations kept per structure and case for oversampling (nnU-Net: 10000).
MAX_LOCATIONS = 10_000


@dataclass(frozen=True, eq=False)
class RawCase:
    """One case as stored: ``image`` (C, H, W) and ``masks`` (K, H, W), with ``labelled`` (K,) bool
    and ``weight``, its relative chance of being drawn (the record's ``sampling_weight``, default 1)."""

    id: str
    image: Image2D
    masks: Masks
    labelled: np.ndarray
    weight: float = 1.0


@dataclass(frozen=True, eq=False)
class TrainingCase:
    """One case ready for patch sampling.

    Attributes:
        id: Case id.
        image: ``(C_in, H, W)`` float32, resampled and normalised.
        masks: ``(K, H, W)`` uint8 (1 = inside), resampled.
        labelled: ``(K,)`` bool: structures the case's labels cover; the others are
            ignored by the loss and the validation Dice.
        locations: Per structure, ``(n, 2)`` int32 (row, column) of up to
            :data:`MAX_LOCATIONS` of its pixels (empty if absent or unlabelled).
        weight: Relative chance of the case being drawn for a patch (> 0; 1 = as often
            as any other case of weight 1).
    """

    id: str
    image: np.ndarray
    masks: np.ndarray
    labelled: np.ndarray
    locations: tuple[np.ndarray, ...]
    weight: float = 1.0


def read_cases(dataset: Dataset, case_ids: Sequence[str] | None = None, *, validate: bool = True) -> list[RawCase]:
    """Read (and check, with :func:`ts2d_xray.dataset.validate_case`) cases of a data set.

    Raises:
        InputError: A case with missing files, a label of another shape than its image
            or than ``dataset.json`` says, label values other than 0 and 1, or a
            ``sampling_weight`` that is not a positive finite number.
    """
    case_ids = dataset.case_ids if case_ids is None else tuple(case_ids)
    records = {r["case"]: r for r in iter_cases(dataset)}
    cases = []
    for case_id in case_ids:
        if validate:
            validate_case(dataset, case_id)
        image, masks = dataset.read(case_id)
        record = records.get(case_id, {})
        unlabelled = set(record.get("unlabelled_structures", ()))
        labelled = np.array([name not in unlabelled for name in dataset.structures])
        cases.append(RawCase(case_id, image, masks, labelled, _sampling_weight(dataset, record)))
    return cases


def _sampling_weight(dataset: Dataset, record: Mapping[str, Any]) -> float:
    weight = record.get("sampling_weight", 1.0)
    problem = sampling_weight_problem(weight)
    if problem:
        raise InputError(dataset.root / CASES_FILE, f"case {record.get('case')}: {problem}")
    return float(weight)


def preprocess_image(image: Image2D, plans: Mapping[str, Any]) -> np.ndarray:
    """What the network gets for an image: resampled, normalised, channels arranged.

    Returns:
        ``(in_channels, H', W')`` float32 at the plans' spacing.
    """
    from ts2d_xray.projection import resample

    spacing = plans["configurations"][CONFIGURATION]["spacing"]
    array = normalize(resample(image, tuple(spacing)).array, plans_normalization(plans))
    return np.ascontiguousarray(array[plans["ts2d"]["channel_source"]])


def preprocess_masks(masks: Masks, plans: Mapping[str, Any]) -> np.ndarray:
    """Masks resampled to the plans' spacing: ``(K, H', W')`` uint8."""
    from ts2d_xray.projection import resample

    spacing = plans["configurations"][CONFIGURATION]["spacing"]
    return resample(masks, tuple(spacing)).array.astype(np.uint8)


def prepare_case(case: RawCase, plans: Mapping[str, Any], seed: int = 1234) -> TrainingCase:
    """A :class:`RawCase` resampled, normalised and indexed for oversampling."""
    image = preprocess_image(case.image, plans)
    masks = preprocess_masks(case.masks, plans)
    if masks.shape[1:] != image.shape[1:]:  # both come from the same plane; guard anyway
        raise ValueError(f"case {case.id}: masks {masks.shape} and image {image.shape} differ after resampling")
    rng = np.random.default_rng([seed, zlib.crc32(case.id.encode())])  # the same in every process
    locations = []
    for k in range(masks.shape[0]):
        if not case.labelled[k]:
            locations.append(np.zeros((0, 2), np.int32))
            continue
        where = np.argwhere(masks[k]).astype(np.int32)
        if len(where) > MAX_LOCATIONS:
            where = where[np.sort(rng.choice(len(where), MAX_LOCATIONS, replace=False))]
        locations.append(where)
    return TrainingCase(case.id, image, masks, case.labelled.copy(), tuple(locations), case.weight)


def check_channels(dataset: Dataset, in_channels: int | None) -> tuple[int, list[int]]:
    """``(in_channels, channel_source)`` for a data set and an ``in_channels`` override.

    A 1-channel data set (radiographs) may feed a network with more inputs (e.g. one
    trained on 2-channel projections): its channel is repeated.  Otherwise the network
    takes the data set's channels as they are.
    """
    n = len(dataset.channels)
    if in_channels is None or in_channels == n:
        return n, list(range(n))
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if n != 1:
        raise InputError(dataset.root, f"in_channels={in_channels} for a data set with {n} channels "
                                       f"{list(dataset.channels)}: only a 1-channel data set can be repeated")
    return in_channels, [0] * in_channels
