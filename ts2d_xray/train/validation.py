"""Whole-image prediction and per-structure Dice, for validation during training.

Coronal projections and radiographs are small at the network's pixel size, so a whole
image goes through the network at once: padded (centred, zeros = the normalised mean)
to a multiple of the network's total stride, then cropped back.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

__all__ = ["DiceCounts", "dice_counts", "predict_logits"]


def _pad(image: torch.Tensor, divisible_by: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Centre-pad ``(C, H, W)`` with zeros to multiples of ``divisible_by``; return the crop back."""
    pads, crop = [], []
    for n, d in zip(image.shape[1:], divisible_by):
        total = -n % int(d)
        pads.append((total // 2, total - total // 2))
        crop.append(slice(total // 2, total // 2 + n))
    (top, bottom), (left, right) = pads
    return torch.nn.functional.pad(image, (left, right, top, bottom)), (crop[0], crop[1])


@torch.no_grad()
def predict_logits(network: torch.nn.Module, image: np.ndarray | torch.Tensor, divisible_by: Sequence[int],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits ``(K, H, W)`` float32 (on the CPU) for one preprocessed image ``(C, H, W)``.

    The network is put in eval mode; deep supervision, if on, is switched off for the
    call (only the full-resolution output is computed).
    """
    device = torch.device(device)
    image = torch.as_tensor(image, dtype=torch.float32)
    padded, crop = _pad(image, divisible_by)
    decoder = getattr(network, "decoder", None)
    deep = getattr(decoder, "deep_supervision", None)
    was_training = network.training
    network.eval()
    if deep:
        decoder.deep_supervision = False
    try:
        amp = torch.autocast(device.type) if device.type == "cuda" else contextlib.nullcontext()
        with amp:
            out = network(padded[None].to(device))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out[0][:, crop[0], crop[1]].float().cpu()
    finally:
        if deep:
            decoder.deep_supervision = True
        network.train(was_training)


class DiceCounts:
    """True/false positives and false negatives per structure, summed over images."""

    def __init__(self, n_structures: int):
        self.tp = np.zeros(n_structures, np.int64)
        self.fp = np.zeros(n_structures, np.int64)
        self.fn = np.zeros(n_structures, np.int64)

    def add(self, prediction: np.ndarray, reference: np.ndarray, labelled: np.ndarray | None = None) -> None:
        """Add one image: ``prediction``, ``reference`` ``(K, H, W)`` bool; unlabelled structures are skipped."""
        tp, fp, fn = dice_counts(prediction, reference)
        keep = np.ones(len(tp), bool) if labelled is None else np.asarray(labelled, bool)
        self.tp[keep] += tp[keep]
        self.fp[keep] += fp[keep]
        self.fn[keep] += fn[keep]

    def dice(self) -> np.ndarray:
        """Dice per structure, ``nan`` where a structure is neither in the references nor predicted."""
        denominator = 2 * self.tp + self.fp + self.fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, 2 * self.tp / np.maximum(denominator, 1), np.nan)


def dice_counts(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tp, fp, fn)`` per structure of two ``(K, H, W)`` boolean stacks."""
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} must have the same shape")
    axes = (1, 2)
    tp = (prediction & reference).sum(axes)
    return tp, (prediction & ~reference).sum(axes), (~prediction & reference).sum(axes)
