"""Training configurations: the presets ``tiny`` and ``default``, as read-only dataclasses.

A configuration says how to plan (pixel size, patch size cap, network width, batch
size) and how to train (epochs, learning rate, augmentation ranges).  The planner
(:mod:`ts2d_xray.train.plans`) turns it, with a data set, into nnU-Net plans; the
trainer reads the rest.  Defaults are nnU-Net v2's (``nnUNetTrainer`` and
``ExperimentPlanner``), except where a field's comment says otherwise.

Example:
    >>> from dataclasses import replace
    >>> from ts2d_xray.train import get_config
    >>> cfg = replace(get_config("tiny"), epochs=3)
    >>> cfg.name, cfg.epochs, cfg.plans_name
    ('tiny', 3, 'ts2dPlansTiny')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from ts2d_xray.records import record_from_dict, record_to_dict

__all__ = ["CONFIGS", "TrainConfig", "config_from_dict", "get_config"]


@dataclass(frozen=True)
class TrainConfig:
    """How to plan and train one model.

    Planning (fixed once ``plans.json`` is written):
        name: Preset name; it also names the plans (``plans_name``).
        spacing_mm: Pixel size the network works at, in mm (square pixels); ``None``
            keeps the data set's (the median of its cases' pixel sizes), as nnU-Net does.
        max_patch_size: Largest patch ``(H, W)`` in pixels; ``None``: nnU-Net's rule only
            (the median image shape, reduced until the memory estimate fits).
        base_features: Feature maps of the first stage; they double per stage ...
        max_features: ... up to this cap (nnU-Net 2D: 32 and 512).
        min_feature_map: Stop adding stages when the feature map would get below
            ``2 * min_feature_map`` pixels (nnU-Net: 4).
        n_conv_per_stage: Convolutions per encoder and decoder stage (nnU-Net: 2).
        batch_size: Patches per iteration; ``None``: nnU-Net's rule (GPU memory
            estimate for ``vram_target_gb``, at least 2, at most 5% of the data set).
        vram_target_gb: GPU memory target of that rule, in GB (nnU-Net: 8).

    Training (may change when a training resumes):
        epochs, iterations_per_epoch: Length of training (nnU-Net: 1000 x 250).
        initial_lr, weight_decay, momentum: SGD with Nesterov momentum and a poly
            learning rate, ``lr = initial_lr * (1 - epoch / epochs) ** 0.9``.
        grad_clip: Gradient norm clip (nnU-Net: 12).
        oversample_foreground: Share of each batch centred on a structure's pixel
            (the last ``round(B * share)`` patches, nnU-Net: 0.33).
        rotation_deg: Rotation range of the augmentation, ±degrees (nnU-Net 2D uses
            ±15° or ±180°; radiographs are upright, so ±10°).  No mirroring: it would
            swap left and right structures.
        scaling: Range of the augmentation's zoom factor (nnU-Net: 0.7-1.4).
        save_every: Write ``checkpoint_latest.pth`` every this many epochs.
        val_max_cases: Validate on at most this many validation cases per epoch (the
            first ones in case-id order); ``None``: all.
        freeze_encoder_epochs: Train only the decoder and the segmentation heads for
            this many first epochs (the encoder's parameters get no gradient), then
            everything.  For fine-tuning from ``initial_weights``: the new heads and
            decoder settle before their gradients reach the pretrained features.
            0 (nnU-Net): never frozen.
    """

    name: str
    spacing_mm: float | None = None
    max_patch_size: tuple[int, int] | None = None
    base_features: int = 32
    max_features: int = 512
    min_feature_map: int = 4
    n_conv_per_stage: int = 2
    batch_size: int | None = None
    vram_target_gb: float = 8.0
    epochs: int = 1000
    iterations_per_epoch: int = 250
    initial_lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99
    grad_clip: float = 12.0
    oversample_foreground: float = 0.33
    rotation_deg: float = 10.0
    scaling: tuple[float, float] = (0.7, 1.4)
    save_every: int = 1
    val_max_cases: int | None = None
    freeze_encoder_epochs: int = 0

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"name must be letters, digits or '_', got {self.name!r}")
        if self.spacing_mm is not None and not (math.isfinite(self.spacing_mm) and self.spacing_mm > 0):
            raise ValueError(f"spacing_mm must be > 0 mm or None, got {self.spacing_mm}")
        if self.max_patch_size is not None and (len(self.max_patch_size) != 2 or min(self.max_patch_size) < 8):
            raise ValueError(f"max_patch_size must be (H, W) with both >= 8 px, got {self.max_patch_size}")
        for key in ("base_features", "max_features", "min_feature_map", "n_conv_per_stage", "epochs",
                    "iterations_per_epoch", "save_every"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {getattr(self, key)!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1 or None, got {self.batch_size!r}")
        if not isinstance(self.freeze_encoder_epochs, int) or self.freeze_encoder_epochs < 0:
            raise ValueError(f"freeze_encoder_epochs must be an integer >= 0, got {self.freeze_encoder_epochs!r}")
        if self.val_max_cases is not None and self.val_max_cases < 1:
            raise ValueError(f"val_max_cases must be >= 1 or None, got {self.val_max_cases}")
        if not 0 <= self.oversample_foreground <= 1:
            raise ValueError(f"oversample_foreground must be in [0, 1], got {self.oversample_foreground}")
        if not 0 <= self.rotation_deg <= 180:
            raise ValueError(f"rotation_deg must be in [0, 180] degrees, got {self.rotation_deg}")
        if len(self.scaling) != 2 or not 0 < self.scaling[0] <= self.scaling[1]:
            raise ValueError(f"scaling must be (low, high) with 0 < low <= high, got {self.scaling}")
        if not self.initial_lr > 0:
            raise ValueError(f"initial_lr must be > 0, got {self.initial_lr}")

    @property
    def plans_name(self) -> str:
        """nnU-Net plans identifier: ``ts2dPlans`` (default) or ``ts2dPlans<Name>``."""
        return "ts2dPlans" if self.name == "default" else "ts2dPlans" + "".join(
            p.capitalize() for p in self.name.split("_"))

    def to_dict(self) -> dict:
        """Plain values (for JSON and checkpoints that load with ``weights_only=True``)."""
        return record_to_dict(self)

    def planning(self) -> dict:
        """The planning fields' plain values: what ``plans["ts2d"]["planning"]`` records."""
        values = self.to_dict()
        return {k: values[k] for k in PLANNING_FIELDS}


#: Fields that the plans depend on: a training may resume with other values of the rest.
PLANNING_FIELDS = ("name", "spacing_mm", "max_patch_size", "base_features", "max_features", "min_feature_map",
                   "n_conv_per_stage", "batch_size", "vram_target_gb")


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """The inverse of :meth:`TrainConfig.to_dict` (:func:`ts2d_xray.records.record_from_dict`).

    Raises:
        ValueError: An unknown key, or an invalid value.
    """
    return record_from_dict(TrainConfig, values)


#: The presets.  ``tiny`` trains in minutes on 2 CPU cores (tests, demos): 6 mm pixels
#: (a 1.5 mm coronal projection shrinks 4x per axis), patches of at most 64 x 64,
#: 8 to 64 feature maps, batch 8, 20 epochs of 50 iterations.  ``default`` is nnU-Net's
#: 2D configuration (1000 epochs of 250 iterations).
CONFIGS: Mapping[str, TrainConfig] = MappingProxyType({
    # tiny takes 10x nnU-Net's learning rate: at 1e-2 it predicts nothing for the first
    # ~1000 iterations (the all-background plateau); at 0.1 it segments large organs
    # after a few hundred.
    "tiny": TrainConfig(
        name="tiny", spacing_mm=6.0, max_patch_size=(64, 64), base_features=8, max_features=64, batch_size=8,
        epochs=20, iterations_per_epoch=50, initial_lr=0.1,
    ),
    "default": TrainConfig(name="default", val_max_cases=50),
})


def get_config(name: str) -> TrainConfig:
    """A preset by name (``tiny`` or ``default``)."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown training config {name!r}; choose one of {list(CONFIGS)}") from None
