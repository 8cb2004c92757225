"""Trained models: reading their checkpoints and networks back (the layout is :mod:`ts2d_xray.nnunet.layout`).

A model folder is nnU-Net's results folder::

    MODEL_DIR/<trainer>__<plans>__2d/
      plans.json, dataset.json, dataset_fingerprint.json, splits_final.json
      fold_N/checkpoint_final.pth    after the last epoch
      fold_N/checkpoint_latest.pth   every config.save_every epochs (resume from it)
      fold_N/checkpoint_best.pth     best moving-average validation Dice
      fold_N/training_log.jsonl      one line per epoch: losses, Dice per structure

Checkpoints hold nnU-Net's keys (``network_weights``, ``optimizer_state``,
``grad_scaler_state``, ``logging``, ``_best_ema``, ``current_epoch`` = epochs done,
``init_args``, ``trainer_name``, ``inference_allowed_mirroring_axes`` = None: no
mirroring) and ours (``plans``, ``config``, ``options``, ``structures``).  Every value
is a tensor or a plain Python value, so they pass the same safe reader as inference
(:func:`ts2d_xray.nnunet.checkpoint.read_checkpoint`, ``weights_only=True``); they are
written with :func:`ts2d_xray.nnunet.checkpoint.save_checkpoint` (atomically).

:class:`TrainingState` is the trainer's side: what a checkpoint holds and how a
training resumes from it.  The weights are the plain network's (never a
DistributedDataParallel wrapper's), so a training may resume with another number of
processes (:mod:`.distributed`).

Example:
    >>> from ts2d_xray.train import load_trained_network
    >>> net, plans, dataset_json = load_trained_network("model/Ts2dMultiLabelTrainer__ts2dPlansTiny__2d")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from os import PathLike
from pathlib import Path

import torch

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import read_json
from ts2d_xray.nnunet.checkpoint import load_network, network_weights, read_checkpoint
from ts2d_xray.nnunet.layout import CONFIGURATION, DATASET_FILE, FINAL, LATEST, PLANS_FILE, TRAINER_NAME, fold_folder

__all__ = ["TrainingState", "load_checkpoint", "load_trained_network"]

log = logging.getLogger(__name__)


def load_checkpoint(path: str | PathLike, *, trust: bool = False) -> dict:
    """A checkpoint of a trained network (CPU tensors), read safely; it must hold ``network_weights``.

    Raises:
        InputError: A missing or unreadable file, one that the safe reader refuses (see
            :func:`~ts2d_xray.nnunet.checkpoint.read_checkpoint`, ``trust``), or one
            without a state dict of tensors.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, trust=trust)
    network_weights(checkpoint, path)  # checks that there is one
    return checkpoint


def load_trained_network(trainer_dir: str | PathLike, fold: int | str = 0, checkpoint: str = FINAL,
                         device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict, dict]:
    """Rebuild a trained network from ``plans.json`` and a fold's checkpoint.

    Args:
        trainer_dir: ``MODEL_DIR/<trainer>__<plans>__2d``.
        fold: The fold (``fold_<fold>``).
        checkpoint: File name in the fold folder.
        device: Where the network goes.

    Returns:
        ``(network in eval mode without deep supervision, plans, dataset_json)``.

    Raises:
        InputError: Naming the file: missing or unreadable plans, dataset.json or
            checkpoint, or weights that do not fit the plans.
    """
    trainer_dir = Path(trainer_dir)
    plans_path = trainer_dir / PLANS_FILE
    plans = read_json(plans_path)
    dataset_json = read_json(trainer_dir / DATASET_FILE)
    ours = plans.get("ts2d")
    if not isinstance(ours, dict) or not {"in_channels", "structures"} <= set(ours):
        raise InputError(plans_path, "no 'ts2d' block: not a model trained by ts2d_xray.train")
    network, _ = load_network(fold_folder(trainer_dir, fold) / checkpoint, plans, int(ours["in_channels"]),
                              len(ours["structures"]), device=device, plans_path=plans_path)
    return network, plans, dataset_json


class TrainingState:
    """Checkpoint writing and resuming, for :class:`~ts2d_xray.train.trainer.Trainer` (a mixin).

    It reads and sets the trainer's ``network`` (the plain module), ``optimizer``,
    ``grad_scaler``, ``logging``, ``best_ema``, ``current_epoch``, ``plans``,
    ``dataset_json``, ``structures``, ``config``, ``options``, ``dataset``, ``device``,
    ``fold_dir`` and ``dist``.
    """

    def checkpoint(self) -> dict:
        """The state to save: nnU-Net's keys plus ours, all loadable with ``weights_only=True``."""
        return {
            "network_weights": self.network.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": None if self.grad_scaler is None else self.grad_scaler.state_dict(),
            "logging": {k: list(v) for k, v in self.logging.items()},
            "_best_ema": self.best_ema,
            "current_epoch": self.current_epoch,
            "init_args": {"plans": self.plans, "configuration": CONFIGURATION, "fold": self.options.fold,
                          "dataset_json": self.dataset_json, "device": str(self.device)},
            "trainer_name": TRAINER_NAME,
            "inference_allowed_mirroring_axes": None,
            "plans": self.plans,
            "config": self.config.to_dict(),
            "options": {**asdict(self.options), "dataset": str(self.dataset.root),
                        "world_size": self.dist.world_size},
            "structures": list(self.structures),
        }

    def load_checkpoint(self, path: Path) -> None:
        """Restore weights, optimiser, gradient scaler, logs and the epoch counter."""
        state = load_checkpoint(path)
        if state.get("structures") != list(self.structures) or state.get("plans") != self.plans:
            raise InputError(path, "this checkpoint was trained with other plans or structures; "
                                   "use another model folder")
        self.network.load_state_dict(state["network_weights"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        if self.grad_scaler is not None and state.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(state["grad_scaler_state"])
        self.logging = {k: list(v) for k, v in state["logging"].items()}
        self.best_ema = state.get("_best_ema")
        self.current_epoch = int(state["current_epoch"])
        if self.dist.is_main:
            log.info("resumed %s at epoch %d", path, self.current_epoch)

    def _checkpoint_to_resume(self) -> Path | None:
        """The fold's checkpoint with the most epochs (final wins a tie), or None."""
        found = []
        for name in (FINAL, LATEST):
            path = self.fold_dir / name
            if path.is_file():
                found.append((load_checkpoint(path)["current_epoch"], name == FINAL, path))
        return max(found)[2] if found else None
