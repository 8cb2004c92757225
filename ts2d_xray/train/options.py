"""How a training runs (device, fold, seed, resume, workers) and what it leaves.

The configuration (:mod:`.config`) says what to train; :class:`TrainOptions` says how
to run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ts2d_xray.device import resolve_device
from ts2d_xray.nnunet.layout import FINAL

__all__ = ["TrainOptions", "TrainResult", "resolve_device"]


@dataclass(frozen=True)
class TrainOptions:
    """How to run a training (the configuration says what to train).

    Attributes:
        device: ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"auto"`` (CUDA if available);
            under ``torchrun`` each process takes ``cuda:LOCAL_RANK`` (:mod:`.distributed`).
        fold: Fold of the split (``0 .. num_folds - 1``) or ``"all"``.
        num_folds: Folds of a new split (nnU-Net: 5).
        seed: Seeds the network's initialisation and every batch.  On the CPU a seed
            gives the same model bit for bit (also after resuming, and whatever
            ``num_workers``); CUDA kernels are not deterministic.
        resume: Continue from the fold's last checkpoint (start afresh if none).
        num_workers: Data-loader worker processes (per training process); ``None``: 0 on
            the CPU (batches are made between steps), up to 8 with CUDA (the machine's
            cores shared by its training processes).
        progress: Show a progress bar per epoch (loss, and Dice after validation).
    """

    device: str = "auto"
    fold: int | str = 0
    num_folds: int = 5
    seed: int = 0
    resume: bool = False
    num_workers: int | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class TrainResult:
    """What a training left: the folders, the epochs done and the per-epoch records.

    In a distributed training (:mod:`.distributed`) only process 0 (``rank``) validates
    and logs: the other processes' results have no ``history``.
    """

    trainer_dir: Path
    fold_dir: Path
    epochs: int
    history: tuple[dict, ...]
    skipped_weights: tuple[str, ...] = field(default=())
    rank: int = 0

    @property
    def final_checkpoint(self) -> Path:
        """``fold_N/checkpoint_final.pth``."""
        return self.fold_dir / FINAL
