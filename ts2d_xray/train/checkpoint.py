"""Checkpoints in nnU-Net's layout, loadable with ``torch.load(weights_only=True)``.

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
is a tensor or a plain Python value, so they load with ``weights_only=True``.

Example:
    >>> from ts2d_xray.train import load_trained_network
    >>> net, plans, dataset_json = load_trained_network("model/Ts2dMultiLabelTrainer__ts2dPlansTiny__2d")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import uuid
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

import torch

from ts2d_xray.errors import InputError
from ts2d_xray.train.plans import DATASET_FILE, PLANS_FILE, build_network

__all__ = ["BEST", "FINAL", "LATEST", "load_checkpoint", "load_trained_network", "load_weights", "save_checkpoint"]

FINAL = "checkpoint_final.pth"
LATEST = "checkpoint_latest.pth"
BEST = "checkpoint_best.pth"


def save_checkpoint(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """Write a checkpoint atomically (a killed writer leaves the previous file intact)."""
    temp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        torch.save(dict(checkpoint), temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def load_checkpoint(path: str | PathLike, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(path, weights_only=True)``; InputError if it is missing or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise InputError(path, f"not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise InputError(path, "not a training checkpoint (no 'network_weights')")
    return checkpoint


def load_weights(network: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> list[str]:
    """Load the tensors of ``weights`` whose name and shape match ``network``'s; return the others.

    ``weights`` is a state dict or a checkpoint (its ``network_weights``).  Tensors of
    another shape (e.g. the first convolution for another channel count, or the
    segmentation heads for other structures) keep their initialisation.

    Raises:
        ValueError: Not a single tensor matches (weights of another network).
    """
    if "network_weights" in weights:
        weights = weights["network_weights"]
    own = network.state_dict()
    matched = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matched:
        raise ValueError("initial_weights: no tensor matches the network's names and shapes (another architecture?)")
    network.load_state_dict(matched, strict=False)
    return sorted(set(own) - set(matched))


def load_trained_network(trainer_dir: str | PathLike, fold: int | str = 0, checkpoint: str = FINAL,
                         device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict, dict]:
    """Rebuild a trained network from ``plans.json`` (nnU-Net's ``get_network_from_plans``).

    Args:
        trainer_dir: ``MODEL_DIR/<trainer>__<plans>__2d``.
        fold: The fold (``fold_<fold>``).
        checkpoint: File name in the fold folder.
        device: Where the network goes.

    Returns:
        ``(network in eval mode without deep supervision, plans, dataset_json)``.
    """
    trainer_dir = Path(trainer_dir)
    plans, dataset_json = (_read_json(trainer_dir / name) for name in (PLANS_FILE, DATASET_FILE))
    state = load_checkpoint(trainer_dir / f"fold_{fold}" / checkpoint, map_location=device)
    network = build_network(plans, deep_supervision=False, initialize=False)
    network.load_state_dict(state["network_weights"])
    return network.to(device).eval(), plans, dataset_json


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "missing: not a trained model folder") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"cannot read it as JSON ({err})") from None
