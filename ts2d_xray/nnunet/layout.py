"""nnU-Net v2's folder and file names, as our trainer writes them and inference reads them.

A trained model is nnU-Net's results folder of one configuration::

    MODEL_DIR/<trainer>__<plans>__2d/
      plans.json, dataset.json, dataset_fingerprint.json, splits_final.json
      fold_N/checkpoint_final.pth    after the last epoch
      fold_N/checkpoint_latest.pth   every ``save_every`` epochs (training resumes from it)
      fold_N/checkpoint_best.pth     best moving-average validation Dice

Example:
    >>> trainer_folder("models", "ts2dPlansTiny").as_posix()
    'models/Ts2dMultiLabelTrainer__ts2dPlansTiny__2d'
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Protocol

__all__ = [
    "BEST",
    "CONFIGURATION",
    "DATASET_FILE",
    "FINAL",
    "FINGERPRINT_FILE",
    "LATEST",
    "PLANS_FILE",
    "RESAMPLING_2D",
    "TRAINER_NAME",
    "fold_folder",
    "trainer_folder",
]

#: Our trainer's name in folder names and checkpoints (``<trainer>__<plans>__2d``).
TRAINER_NAME = "Ts2dMultiLabelTrainer"
#: The one nnU-Net configuration we plan, train and predict with.
CONFIGURATION = "2d"
PLANS_FILE = "plans.json"
DATASET_FILE = "dataset.json"
FINGERPRINT_FILE = "dataset_fingerprint.json"
#: Checkpoint file names in a fold folder.
FINAL = "checkpoint_final.pth"
LATEST = "checkpoint_latest.pth"
BEST = "checkpoint_best.pth"
#: The resampling keys of nnU-Net's default 2D plans (ExperimentPlanner): images by
#: order-3 splines, segmentations and probabilities by order 1.
RESAMPLING_2D: Mapping[str, Any] = MappingProxyType({
    "resampling_fn_data": "resample_data_or_seg_to_shape",
    "resampling_fn_seg": "resample_data_or_seg_to_shape",
    "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
    "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
    "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
    "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
})


class _Planned(Protocol):
    """Anything that names its plans (a training configuration)."""

    @property
    def plans_name(self) -> str: ...


def trainer_folder(model_dir: str | PathLike, plans: str | _Planned) -> Path:
    """``MODEL_DIR/<trainer>__<plans>__2d``: nnU-Net's results folder of one configuration.

    Args:
        model_dir: ``MODEL_DIR``.
        plans: The plans identifier, or a configuration with a ``plans_name``
            (:class:`ts2d_xray.train.TrainConfig`).
    """
    plans_name = plans if isinstance(plans, str) else plans.plans_name
    return Path(model_dir) / f"{TRAINER_NAME}__{plans_name}__{CONFIGURATION}"


def fold_folder(trainer_dir: str | PathLike, fold: int | str) -> Path:
    """``<trainer_dir>/fold_<fold>``: where one fold's checkpoints and log live."""
    return Path(trainer_dir) / f"fold_{fold}"
