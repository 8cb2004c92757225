"""Adaptation: fine-tune a coronal model on synthetic radiographs, into an X-ray model.

A coronal model of :mod:`ts2d_xray.train` reads 2-channel [mean, max] CT projections;
an X-ray model reads 1-channel radiographs in [0, 1].  :func:`adapt` turns the first
into the second by fine-tuning on an X-ray data set (``ts2d-xray synth build --kind
xray``):

1. **Plans**: the coronal model's, so that every weight fits: pixel size, patch,
   topology, batch size.  What describes the data is the X-ray data set's
   (:func:`~ts2d_xray.train.plans.data_fields`): one input channel, normalised as its
   ``dataset.json["channel_names"]`` says (``"zscore"``: nnU-Net's
   ``ZScoreNormalization``, per image, which inference applies to radiographs as well),
   its intensity statistics and sizes.  ``plans["ts2d"]["adapted_from"]`` records the
   coronal model (folder, fold, SHA-256 of its checkpoint).
2. **Weights** (:func:`adapt_weights`): the first convolution's kernels are summed over
   their input channels (2 -> 1); every other tensor is copied.  The outputs keep the
   coronal segmentation heads: the X-ray data set's structures must be the coronal
   model's or a subset of them, and each output takes the head of the structure of the
   same name, in the X-ray data set's order.
3. **Training**: :class:`~ts2d_xray.train.trainer.Trainer` with the coronal model's
   configuration (its training fields may be overridden: ``epochs``,
   ``iterations_per_epoch``, ``initial_lr``, ``freeze_encoder_epochs``, ...), the
   radiograph augmentation :class:`~ts2d_xray.train.transforms.XrayAugmentation`, and,
   with ``freeze_encoder_epochs``, only the decoder training for the first epochs.

The result is an nnU-Net results folder like any trained model,
``OUT/Ts2dMultiLabelTrainer__<plans>__2d/{plans.json, dataset.json, fold_N/...}``, whose
plans say ``kind: "xray"`` and ``in_channels: 1``: :class:`ts2d_xray.Segmenter` and
:func:`ts2d_xray.segment.manifest.infer_manifest` read it as an ``xray`` model.

Example:
    >>> from ts2d_xray.train import TrainOptions, adapt
    >>> result = adapt("models/coronal", "Dataset601_Xray/organs", "models/xray", TrainOptions(device="cuda"),
    ...                epochs=100, freeze_encoder_epochs=10)  # doctest: +SKIP
    >>> result.final_checkpoint  # doctest: +SKIP
    PosixPath('models/xray/Ts2dMultiLabelTrainer__ts2dPlans__2d/fold_0/checkpoint_final.pth')
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ts2d_xray.dataset import Dataset, load_dataset
from ts2d_xray.errors import InputError
from ts2d_xray.io.files import read_json
from ts2d_xray.nnunet.checkpoint import network_weights
from ts2d_xray.nnunet.layout import (CONFIGURATION, DATASET_FILE, FINAL, PLANS_FILE, TRAINER_NAME, fold_folder,
                                     trainer_folder)
from ts2d_xray.nnunet.network import SEG_LAYER, build_network
from ts2d_xray.train.checkpoint import load_checkpoint
from ts2d_xray.train.config import PLANNING_FIELDS, TrainConfig, config_from_dict
from ts2d_xray.train.options import TrainOptions, TrainResult
from ts2d_xray.train.plans import data_fields
from ts2d_xray.train.trainer import Trainer
from ts2d_xray.train.transforms import XrayAugmentation

__all__ = ["CoronalModel", "adapt", "adapt_weights", "adaptation_trainer", "adapted_plans", "load_coronal_model"]

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
    """``path`` itself if it holds ``plans.json``, else its only ``<trainer>__*__2d`` folder."""
    if not path.is_dir():
        raise InputError(path, "no such model folder" if not path.exists() else
                               "a model is a folder (MODEL_DIR or its <trainer>__<plans>__2d folder), not a file")
    if (path / PLANS_FILE).is_file():
        return path
    found = sorted(p for p in path.glob(f"{TRAINER_NAME}__*__{CONFIGURATION}") if (p / PLANS_FILE).is_file())
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
    if ours.get("kind") != "coronal":
        raise InputError(plans_path, f"the model's kind is {ours.get('kind')!r}; adaptation starts from a coronal "
                                     "model (2 channels: mean and max projection)")
    fold = _fold(trainer_dir, fold)
    path = fold_folder(trainer_dir, fold) / FINAL
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict):
        raise InputError(path, "no training configuration ('config'): not a checkpoint of ts2d_xray.train")
    try:
        config = config_from_dict(state["config"])
    except (TypeError, ValueError) as err:
        raise InputError(path, f"its training configuration is invalid ({err})") from None
    weights = network_weights(state, path)
    expected = _shapes(plans, ours["in_channels"], ours["structures"])
    wrong = sorted(k for k in set(expected) | set(weights)
                   if k not in weights or k not in expected or tuple(weights[k].shape) != expected[k])
    if wrong:
        raise InputError(path, f"its weights do not fit {plans_path.name} ({len(wrong)} tensors differ, e.g. "
                               f"{wrong[0]})")
    return CoronalModel(trainer_dir, fold, path, plans, dataset_json, config, weights)


def _shapes(plans: Mapping[str, Any], in_channels: int, structures: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the (deep-supervision) network of ``plans`` for other inputs and outputs."""
    # Shapes only: on the meta device, without memory or initialisation.
    network = build_network(plans, int(in_channels), len(structures), deep_supervision=True, device="meta")
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


# --- plans and weights -------------------------------------------------------------
def adapted_plans(coronal: CoronalModel, fingerprint: Mapping[str, Any], dataset_meta: Mapping[str, Any]) -> dict:
    """The plans of the adapted model: the coronal network's, the X-ray data's description.

    Args:
        coronal: The coronal model.
        fingerprint: :func:`~ts2d_xray.train.plans.dataset_fingerprint` of the X-ray data set.
        dataset_meta: The X-ray data set's ``dataset.json`` (1 channel).
    """
    plans = copy.deepcopy(coronal.plans)
    configuration = plans["configurations"][CONFIGURATION]
    # The network works at the coronal model's pixel size: the anatomy has the size in
    # pixels that its filters learned.
    data = data_fields(fingerprint, dataset_meta, configuration["spacing"])
    configuration.update(data["configuration"])
    plans.update(data["plans"])
    plans["experiment_planner_used"] = "ts2d_xray.train.adapt"
    n_channels = len(dataset_meta["channel_names"])
    plans["ts2d"].update(
        structures=list(dataset_meta["structures"]), kind=dataset_meta.get("kind"),
        display=dataset_meta.get("display"), dataset_channels=list(dataset_meta.get("channels", ())),
        in_channels=n_channels, channel_source=list(range(n_channels)), adapted_from=coronal.provenance(),
    )
    return plans


def adapt_weights(weights: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]],
                  coronal_structures: Sequence[str], structures: Sequence[str]) -> dict[str, torch.Tensor]:
    """The coronal network's weights for a network with fewer inputs and a subset of its outputs.

    Args:
        weights: The coronal state dict.
        shapes: The new network's tensor shapes, by name (same architecture).
        coronal_structures: The coronal outputs, in order.
        structures: The new outputs, in order: each one of ``coronal_structures``.

    Returns:
        A state dict for the new network: input convolutions summed over their input
        channels, segmentation heads' rows picked by structure name, every other
        tensor copied.

    Raises:
        ValueError: A structure the coronal model lacks, or a tensor that differs in
            another way than these.

    Example:
        >>> w = {"conv.weight": torch.ones(4, 2, 3, 3), "seg_layers.0.weight": torch.arange(3.).reshape(3, 1, 1, 1)}
        >>> out = adapt_weights(w, {"conv.weight": (4, 1, 3, 3), "seg_layers.0.weight": (2, 1, 1, 1)},
        ...                     ["liver", "spleen", "heart"], ["heart", "liver"])
        >>> out["conv.weight"][0, 0, 0, 0].item(), out["seg_layers.0.weight"].flatten().tolist()
        (2.0, [2.0, 0.0])
    """
    missing = [s for s in structures if s not in coronal_structures]
    if missing:
        raise ValueError(f"structures {missing} are not outputs of the coronal model")
    rows = [list(coronal_structures).index(s) for s in structures]
    out = {}
    for key, shape in shapes.items():
        if key not in weights:
            raise ValueError(f"the coronal weights have no tensor {key!r}")
        tensor = weights[key]
        if SEG_LAYER.search(key):
            tensor = tensor[rows]  # each output keeps the head of its structure
        shape = tuple(shape)
        if tuple(tensor.shape) != shape:
            if tensor.ndim == 4 and shape[1] == 1 and (tensor.shape[0], *tensor.shape[2:]) == (shape[0], *shape[2:]):
                # The input convolution, (F, C_in, k, k) -> (F, 1, k, k): summing over the
                # input channels makes the 1-channel network compute exactly what the
                # coronal one computed with the radiograph copied into every channel
                # (conv(x, W0) + conv(x, W1) = conv(x, W0 + W1)).  The radiograph looks
                # like both the mean and the maximum projection (bright bone, dark lung),
                # so the pretrained filters respond to it as they learned to, at the
                # activation scale they were trained at (timm's adapt_input_conv does the
                # same for 1-channel inputs).
                tensor = tensor.sum(dim=1, keepdim=True)
            else:
                raise ValueError(f"tensor {key!r}: coronal shape {tuple(tensor.shape)} cannot become {shape}")
        out[key] = tensor.detach().clone()
    return out


# --- checks ------------------------------------------------------------------------
def _check_dataset(dataset: Dataset, coronal: CoronalModel) -> None:
    path = dataset.root / DATASET_FILE
    if len(dataset.channels) != 1:
        raise InputError(path, f"{len(dataset.channels)} channels {list(dataset.channels)}: adaptation needs a "
                               "1-channel radiograph data set (`ts2d-xray synth build --kind xray`)")
    unknown = [s for s in dataset.structures if s not in coronal.structures]
    if unknown:
        raise InputError(path, f"structures {unknown[:8]}{' ...' if len(unknown) > 8 else ''} are not outputs of "
                               f"the coronal model {coronal.trainer_dir} ({len(coronal.structures)} structures); "
                               "the X-ray data set's structures must be the model's or a subset of them")
    display = (coronal.plans["ts2d"].get("display"), dataset.meta.get("display"))
    if display[0] != display[1]:
        raise InputError(path, f"display convention {display[1]!r}, but the coronal model was trained on "
                               f"{display[0]!r} images: left and right would swap")


def _config(coronal: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    fixed = sorted(set(overrides) & set(PLANNING_FIELDS))
    if fixed:
        raise ValueError(f"{', '.join(fixed)}: fixed by the coronal model's plans; adaptation keeps its network")
    try:
        return replace(coronal, **overrides)
    except TypeError:
        raise ValueError(f"unknown TrainConfig fields {sorted(set(overrides) - set(coronal.to_dict()))}") from None


def _check_output(trainer_dir: Path, coronal: CoronalModel) -> None:
    """Refuse to write into the coronal model, or into a model adapted from another one."""
    if trainer_dir.resolve() == coronal.trainer_dir.resolve():
        raise InputError(trainer_dir, "the output would overwrite the coronal model; choose another output folder")
    plans_path = trainer_dir / PLANS_FILE
    if not plans_path.is_file():
        return
    before = read_json(plans_path).get("ts2d", {}).get("adapted_from")
    if not isinstance(before, dict):
        raise InputError(plans_path, "holds a model that was not adapted from a coronal model; choose another "
                                     "output folder")
    if before.get("sha256") != coronal.sha256:
        raise InputError(plans_path, f"holds a model adapted from another coronal model ({before.get('model')}, "
                                     f"fold {before.get('fold')}); choose another output folder")


# --- adaptation --------------------------------------------------------------------
def adaptation_trainer(coronal_model: str | PathLike | CoronalModel, xray_dataset: Dataset | str | PathLike,
                       out_dir: str | PathLike, options: TrainOptions = TrainOptions(), *,
                       coronal_fold: int | str | None = None, augmentation: Callable | None = None,
                       **config_overrides: Any) -> Trainer:
    """The :class:`Trainer` of an adaptation, checked but not started (see :func:`adapt`).

    ``trainer.prepare()`` builds the 1-channel network with the adapted weights
    (``trainer.network``), ``trainer.fit()`` trains it.
    """
    coronal = coronal_model if isinstance(coronal_model, CoronalModel) else load_coronal_model(coronal_model,
                                                                                                coronal_fold)
    dataset = xray_dataset if isinstance(xray_dataset, Dataset) else load_dataset(xray_dataset)
    _check_dataset(dataset, coronal)
    config = _config(coronal.config, config_overrides)
    _check_output(trainer_folder(out_dir, config), coronal)
    structures = tuple(dataset.structures)
    weights = adapt_weights(coronal.weights, _shapes(coronal.plans, len(dataset.channels), structures),
                            coronal.structures, structures)
    patch = coronal.plans["configurations"][CONFIGURATION]["patch_size"]

    def planner(fingerprint: Mapping[str, Any], dataset_meta: Mapping[str, Any], config: TrainConfig, *,
                in_channels: int, channel_source: Sequence[int]) -> dict:
        return adapted_plans(coronal, fingerprint, dataset_meta)

    log.info("adapting %s (fold %s, %d structures) to %s (%d structures)", coronal.trainer_dir, coronal.fold,
             len(coronal.structures), dataset.root, len(structures))
    return Trainer(out_dir, dataset, config, options, initial_weights=weights, planner=planner,
                   augmentation=augmentation if augmentation is not None else XrayAugmentation(patch))


def adapt(coronal_model: str | PathLike | CoronalModel, xray_dataset: Dataset | str | PathLike,
          out_dir: str | PathLike, options: TrainOptions = TrainOptions(), *,
          coronal_fold: int | str | None = None, augmentation: Callable | None = None,
          **config_overrides: Any) -> TrainResult:
    """Fine-tune a coronal model on a radiograph data set into an X-ray model.

    Args:
        coronal_model: ``MODEL_DIR`` of a coronal training (one
            ``<trainer>__<plans>__2d`` folder in it), that folder, or a
            :class:`CoronalModel`.
        xray_dataset: A 1-channel data set (folder or :class:`~ts2d_xray.dataset.Dataset`)
            whose structures are the coronal model's or a subset of them.
        out_dir: ``MODEL_DIR`` of the X-ray model; it goes to
            ``out_dir/<trainer>__<plans>__2d/fold_<options.fold>``.
        options: Device, fold (of the X-ray data set's split), seed, resume, workers,
            progress bar.
        coronal_fold: The coronal fold to start from; default: its only finished fold.
        augmentation: Default :class:`~ts2d_xray.train.transforms.XrayAugmentation`.
        **config_overrides: Training fields of :class:`TrainConfig` (``epochs``,
            ``iterations_per_epoch``, ``initial_lr``, ``freeze_encoder_epochs``, ...);
            the rest is the coronal model's configuration.

    Returns:
        The :class:`TrainResult` (``skipped_weights`` is empty: every tensor came from
        the coronal model).

    Raises:
        InputError: Naming the file: no coronal model there, an X-ray data set that is
            not 1-channel or has structures the coronal model lacks, an output folder
            that holds another model.
        FileExistsError: The output fold holds checkpoints and ``options.resume`` is off.
        ValueError: Unknown or planning fields in ``config_overrides``.
    """
    trainer = adaptation_trainer(coronal_model, xray_dataset, out_dir, options, coronal_fold=coronal_fold,
                                 augmentation=augmentation, **config_overrides)
    return trainer.fit()

