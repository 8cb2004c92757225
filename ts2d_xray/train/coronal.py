"""A trained model read for adaptation (:mod:`ts2d_xray.train.adapt`): plans, configuration, weights.

Adaptation starts from a coronal model (2-channel projections -> radiographs), or from
an X-ray model to fine-tune further (e.g. on real films); both are read here.
:func:`load_coronal_model` finds the model's results folder and fold, reads its plans
and its final checkpoint with the safe reader (:mod:`ts2d_xray.nnunet.checkpoint`), and
checks that the weights fit the plans, so that an adaptation fails before it trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import read_json
from ts2d_xray.nnunet.checkpoint import network_weights
from ts2d_xray.nnunet.layout import CONFIGURATION, DATASET_FILE, FINAL, PLANS_FILE, TRAINER_NAME, fold_folder
from ts2d_xray.nnunet.network import build_network
from ts2d_xray.train.checkpoint import load_checkpoint
from ts2d_xray.train.config import TrainConfig, config_from_dict

__all__ = ["CoronalModel", "load_coronal_model", "network_shapes"]

log = logging.getLogger(__name__)

@dataclass(frozen=True, eq=False)
class CoronalModel:
    """A trained coronal model, read for adaptation.

    Attributes:
        trainer_dir: Its nnU-Net results folder (``<trainer>__<plans>__2d``).
        fold: The fold whose ``checkpoint_final.pth`` is used.
        checkpoint: That file.
        plans: Its ``plans.json``.
        dataset_json: Its ``dataset.json``.
        config: The configuration it was trained with.
        weights: Its network's state dict (CPU tensors).
    """

    trainer_dir: Path
    fold: str
    checkpoint: Path
    plans: dict
    dataset_json: dict
    config: TrainConfig
    weights: dict[str, torch.Tensor]

    @property
    def structures(self) -> tuple[str, ...]:
        """Its outputs, in order."""
        return tuple(self.plans["ts2d"]["structures"])

    @cached_property
    def sha256(self) -> str:
        """SHA-256 (hex) of the checkpoint file: which coronal model an adaptation started from."""
        from ts2d_xray.segment.manifest import sha256_file

        return sha256_file(self.checkpoint)

    def provenance(self) -> dict:
        """What ``plans["ts2d"]["adapted_from"]`` records of it."""
        return {"model": str(self.trainer_dir), "fold": self.fold, "checkpoint": self.checkpoint.name,
                "sha256": self.sha256, "dataset": self.dataset_json.get("name"),
                "in_channels": self.plans["ts2d"]["in_channels"],
                "channels": list(self.plans["ts2d"].get("dataset_channels", ())),
                "structures": list(self.structures)}


# --- the coronal model -------------------------------------------------------------
def _trainer_dir(path: Path) -> Path:
    """``path`` itself if it holds ``plans.json``, else its only ``<trainer>__*__2d`` folder, also one
    level down (an exported bundle keeps it in its group's folder, e.g. ``all/``)."""
    if not path.is_dir():
        raise InputError(path, "no such model folder" if not path.exists() else
                               "a model is a folder (MODEL_DIR or its <trainer>__<plans>__2d folder), not a file")
    if (path / PLANS_FILE).is_file():
        return path
    pattern = f"{TRAINER_NAME}__*__{CONFIGURATION}"
    found = sorted(p for p in path.glob(pattern) if (p / PLANS_FILE).is_file()) or \
        sorted(p for p in path.glob(f"*/{pattern}") if (p / PLANS_FILE).is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(path, f"no trained model in it: expected {PLANS_FILE} or a "
                               f"{TRAINER_NAME}__<plans>__{CONFIGURATION} folder (written by `ts2d-xray train`)")
    raise InputError(path, f"holds {len(found)} models ({', '.join(p.name for p in found)}); pass one of them")


def _fold(trainer_dir: Path, fold: int | str | None) -> str:
    """The fold to read: the one asked for, else the only fold with a final checkpoint."""
    done = sorted(p.parent.name[len("fold_"):] for p in trainer_dir.glob(f"fold_*/{FINAL}"))
    if fold is not None:
        if str(fold) not in done:
            raise InputError(fold_folder(trainer_dir, fold) / FINAL,
                             f"no such checkpoint; folds with a final checkpoint: {done or 'none'}")
        return str(fold)
    if len(done) == 1:
        return done[0]
    if not done:
        raise InputError(trainer_dir, f"no fold_N/{FINAL}: the model has not finished training")
    raise InputError(trainer_dir, f"{len(done)} folds have a final checkpoint ({', '.join(done)}); "
                                  "choose one (coronal_fold=, --coronal-fold)")


def load_coronal_model(path: str | PathLike, fold: int | str | None = None) -> CoronalModel:
    """Read a coronal model trained by :mod:`ts2d_xray.train`, for :func:`adapt`.

    Args:
        path: ``MODEL_DIR`` (holding one ``<trainer>__<plans>__2d`` folder) or that folder.
        fold: Fold to read; default: the only fold with a ``checkpoint_final.pth``.

    Raises:
        InputError: Naming the file: no model there, plans or checkpoint unreadable, not
            a coronal model of ours, weights that do not fit its plans.
    """
    trainer_dir = _trainer_dir(Path(path))
    plans_path = trainer_dir / PLANS_FILE
    plans, dataset_json = read_json(plans_path), read_json(trainer_dir / DATASET_FILE)
    ours = plans.get("ts2d")
    if not isinstance(ours, dict) or "structures" not in ours:
        raise InputError(plans_path, "no 'ts2d' block: not a model trained by ts2d_xray.train")
    if ours.get("kind") not in ("coronal", "xray"):
        raise InputError(plans_path, f"the model's kind is {ours.get('kind')!r}; adaptation starts from a coronal "
                                     "model (2 channels: mean and max projection) or an X-ray model")
    fold = _fold(trainer_dir, fold)
    path = fold_folder(trainer_dir, fold) / FINAL
    state = load_checkpoint(path)
    config = _training_config(state, ours, path)
    weights = network_weights(state, path)
    expected = network_shapes(plans, ours["in_channels"], ours["structures"])
    wrong = sorted(k for k in set(expected) | set(weights)
                   if k not in weights or k not in expected or tuple(weights[k].shape) != expected[k])
    if wrong:
        raise InputError(path, f"its weights do not fit {plans_path.name} ({len(wrong)} tensors differ, e.g. "
                               f"{wrong[0]})")
    return CoronalModel(trainer_dir, fold, path, plans, dataset_json, config, weights)


def network_shapes(plans: Mapping[str, Any], in_channels: int, structures: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the (deep-supervision) network of ``plans`` for other inputs and outputs."""
    # Shapes only: on the meta device, without memory or initialisation.
    network = build_network(plans, int(in_channels), len(structures), deep_supervision=True, device="meta")
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


def _training_config(state: Mapping[str, Any], ours: Mapping[str, Any], path: Path) -> TrainConfig:
    """The configuration a coronal model was trained with.

    A training checkpoint holds it (``state["config"]``).  An exported bundle
    (:func:`ts2d_xray.train.export_bundle`) keeps only the weights, so its plans'
    planning fields (``plans["ts2d"]["planning"]``) give the network's configuration,
    and the training fields take their defaults, which an adaptation sets anyway
    (epochs, learning rate, ...); a log line says so.
    """
    values = state.get("config")
    if not isinstance(values, dict):
        values = ours.get("planning")
        if not isinstance(values, dict):
            raise InputError(path, "no training configuration ('config') and no planning fields in its plans: "
                                   "not a model of ts2d_xray.train")
        log.info("%s: an exported model (weights only): its configuration comes from its plans' planning fields, "
                 "training fields take their defaults", path)
    try:
        return config_from_dict(values)
    except (TypeError, ValueError) as err:
        raise InputError(path, f"its training configuration is invalid ({err})") from None
