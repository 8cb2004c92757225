"""Per-structure Dice of validation predictions, summed over images.

During training each validation image goes through the network whole
(:func:`ts2d_xray.nnunet.predict.whole_image_logits`); a pixel is inside a structure
where its logit is > 0 (sigmoid > 0.5).  Structures a case's labels do not cover are
skipped for that case.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DiceCounts", "dice_counts"]


class DiceCounts:
    """True/false positives and false negatives per structure, summed over images."""

    def __init__(self, n_structures: int) -> None:
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
