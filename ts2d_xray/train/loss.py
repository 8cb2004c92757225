"""The multi-label loss: nnU-Net's Dice + BCE on K sigmoid outputs, with deep supervision.

nnU-Net trains overlapping structures ("regions") with ``DC_and_BCE_loss``: a soft Dice
on ``sigmoid(logits)`` (``MemoryEfficientSoftDiceLoss``, batch Dice, every channel,
smooth 1e-5) plus binary cross-entropy on the logits, each target channel a binary mask.
That is exactly our case: K outputs, one per structure, no background channel.

:class:`MultiLabelDiceBCELoss` adds one thing nnU-Net's loss cannot express: a
structure that a case's labels do not cover (``unlabelled_structures`` of the case
record) is ignored for that case, rather than taken as background.  Given
``valid (B, K, 1, 1)`` (1 = labelled), the Dice and BCE leave those (case, structure)
pairs out; without it, the loss is nnU-Net's, value for value.  Under
DistributedDataParallel (the Dice's ``ddp`` flag set, :mod:`ts2d_xray.train.distributed`)
both are taken over the global batch, whatever share of it each process holds.

:func:`build_loss` wraps it in nnU-Net's ``DeepSupervisionWrapper`` with nnU-Net's
weights: 1/2^i for output i, the lowest resolution 0, normalised to sum to 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

__all__ = ["MultiLabelDiceBCELoss", "build_loss", "deep_supervision_scales", "deep_supervision_weights"]

#: nnU-Net's Dice smoothing for region training.
DICE_SMOOTH = 1e-5


class MultiLabelDiceBCELoss(DC_and_BCE_loss):
    """``DC_and_BCE_loss`` (region mode) with optional per-structure validity.

    ``forward(logits (B, K, H, W), target (B, K, H, W) 0/1, valid=None | (B, K, 1, 1))``.
    """

    def __init__(self, batch_dice: bool = True):
        super().__init__({}, {"batch_dice": batch_dice, "do_bg": True, "smooth": DICE_SMOOTH, "ddp": False},
                         use_ignore_label=False, dice_class=MemoryEfficientSoftDiceLoss)
        self.batch_dice = batch_dice
        self.bce_per_pixel = torch.nn.BCEWithLogitsLoss(reduction="none")

    def forward(self, net_output: torch.Tensor, target: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            return super().forward(net_output, target)
        valid = valid.to(net_output.dtype)
        # Several processes (DistributedDataParallel, nnU-Net's ``ddp`` batch Dice): the
        # Dice sums run over the global batch, so the counts below must too.
        world = _world_size() if getattr(self.dc, "ddp", False) else 1
        # The soft Dice of a (case, structure) pair with valid = 0 has no pixels: it is
        # exactly (0 + smooth) / (0 + smooth) = 1.  Average over the others only.
        dice_sum = -self.dc(net_output, target, loss_mask=valid)  # mean Dice over all entries
        entries = _summed(valid.sum(0).flatten(), world) if self.batch_dice else valid.flatten()
        n_all = entries.numel()
        n_valid = int((entries > 0).sum())
        if n_valid == 0:
            dc_loss = net_output.sum() * 0
        else:
            dc_loss = -(dice_sum * n_all - (n_all - n_valid)) / n_valid
        bce = self.bce_per_pixel(net_output, target.to(net_output.dtype)) * valid
        # The mean over the labelled pixels of the global batch: DistributedDataParallel
        # averages the processes' gradients, hence the factor ``world``.
        count = _summed(valid.expand_as(bce).sum().detach(), world)
        ce_loss = bce.sum() * world / torch.clip(count, min=1e-8)
        return self.weight_ce * ce_loss + self.weight_dice * dc_loss


def _world_size() -> int:
    """Processes of the default process group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _summed(value: torch.Tensor, world: int) -> torch.Tensor:
    """``value`` summed over the processes (itself for one process; no gradient flows)."""
    if world == 1:
        return value
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def deep_supervision_scales(strides: Sequence[Sequence[int]]) -> list[list[float]]:
    """Scale of each deep-supervision output relative to the input (nnU-Net's rule)."""
    return [list(map(float, s)) for s in 1 / np.cumprod(np.vstack(strides), axis=0)][:-1]


def deep_supervision_weights(n_outputs: int) -> np.ndarray:
    """nnU-Net's weights: 1/2^i, the last (coarsest) 0, normalised; a single output gets 1."""
    if n_outputs == 1:
        return np.ones(1)
    weights = np.array([1 / 2 ** i for i in range(n_outputs)])
    weights[-1] = 0
    return weights / weights.sum()


def build_loss(n_outputs: int, batch_dice: bool = True) -> DeepSupervisionWrapper:
    """The training loss: ``loss(outputs, targets, valids)`` with one list entry per output."""
    return DeepSupervisionWrapper(MultiLabelDiceBCELoss(batch_dice), deep_supervision_weights(n_outputs))
