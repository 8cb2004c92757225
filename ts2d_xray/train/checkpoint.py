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

Example:
    >>> from ts2d_xray.train import load_trained_network
    >>> net, plans, dataset_json = load_trained_network("model/Ts2dMultiLabelTrainer__ts2dPlansTiny__2d")  # doctest: +SKIP
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import torch

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import read_json
from ts2d_xray.nnunet.checkpoint import load_network, network_weights, read_checkpoint
from ts2d_xray.nnunet.layout import DATASET_FILE, FINAL, PLANS_FILE, fold_folder

__all__ = ["load_checkpoint", "load_trained_network"]


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
