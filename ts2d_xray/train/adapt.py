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
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ts2d_xray.dataset import Dataset, load_dataset
from ts2d_xray.errors import InputError
from ts2d_xray.io.files import read_json
from ts2d_xray.nnunet.layout import CONFIGURATION, DATASET_FILE, PLANS_FILE, trainer_folder
from ts2d_xray.nnunet.network import SEG_LAYER, input_divisor
from ts2d_xray.train.config import PLANNING_FIELDS, TrainConfig
from ts2d_xray.train.coronal import CoronalModel, load_coronal_model, network_shapes
from ts2d_xray.train.options import TrainOptions, TrainResult
from ts2d_xray.train.plans import data_fields
from ts2d_xray.train.trainer import Trainer
from ts2d_xray.train.transforms import XrayAugmentation

__all__ = ["RESOLUTION_FIELDS", "CoronalModel", "adapt", "adapt_weights", "adaptation_trainer", "adapted_plans",
           "load_coronal_model", "resolution_overrides"]

log = logging.getLogger(__name__)

#: Planning fields an adaptation may change: pixel size and patch (the topology stays).
RESOLUTION_FIELDS = ("spacing_mm", "max_patch_size")

# --- plans and weights -------------------------------------------------------------
def adapted_plans(coronal: CoronalModel, fingerprint: Mapping[str, Any], dataset_meta: Mapping[str, Any],
                  config: TrainConfig | None = None) -> dict:
    """The plans of the adapted model: the coronal network's, the X-ray data's description.

    Args:
        coronal: The coronal model.
        fingerprint: :func:`~ts2d_xray.train.plans.dataset_fingerprint` of the X-ray data set.
        dataset_meta: The X-ray data set's ``dataset.json`` (1 channel).
        config: The adaptation's configuration; where its ``spacing_mm`` or
            ``max_patch_size`` differ from the coronal model's, the adapted network
            works at that pixel size (mm) with that patch (pixels), with the same
            topology and weights (see :func:`resolution_overrides`).
    """
    plans = copy.deepcopy(coronal.plans)
    configuration = plans["configurations"][CONFIGURATION]
    if config is not None:
        configuration.update(resolution_overrides(coronal, config))
        # What a resumed adaptation checks its configuration against (plans.check_plans).
        plans["ts2d"]["planning"] = config.planning()
    # By default the network works at the coronal model's pixel size: the anatomy has
    # the size in pixels that its filters learned.
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
                  coronal_structures: Sequence[str], structures: Sequence[str],
                  new_heads: Mapping[str, Sequence[str]] | None = None) -> dict[str, torch.Tensor]:
    """The coronal network's weights for a network with fewer inputs and other outputs.

    Args:
        weights: The coronal state dict.
        shapes: The new network's tensor shapes, by name (same architecture).
        coronal_structures: The coronal outputs, in order.
        structures: The new outputs, in order: each one of ``coronal_structures`` or a
            key of ``new_heads``.
        new_heads: Structures the coronal model lacks -> the coronal structures whose
            segmentation heads (weights and biases) are averaged to start them.

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
        >>> out = adapt_weights(w, {"conv.weight": (4, 1, 3, 3), "seg_layers.0.weight": (1, 1, 1, 1)},
        ...                     ["liver", "spleen", "heart"], ["belly"], {"belly": ["liver", "spleen"]})
        >>> out["seg_layers.0.weight"].flatten().tolist()
        [0.5]
    """
    new_heads = dict(new_heads or {})
    missing = [s for s in structures if s not in coronal_structures and s not in new_heads]
    if missing:
        raise ValueError(f"structures {missing} are not outputs of the coronal model (and have no new_heads entry)")
    rows = [_head_rows(s, coronal_structures, new_heads) for s in structures]
    out = {}
    for key, shape in shapes.items():
        if key not in weights:
            raise ValueError(f"the coronal weights have no tensor {key!r}")
        tensor = weights[key]
        if SEG_LAYER.search(key):
            # Each output keeps the head of its structure; a new one starts as the mean
            # of the heads it is made from (a lung field from its side's lobes).
            tensor = torch.stack([tensor[r].mean(dim=0) for r in rows])
        tensor = _fitted(key, tensor, tuple(shape))
        out[key] = tensor.detach().clone()
    return out


def _fitted(key: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``tensor`` for a network whose tensor ``key`` has ``shape``: itself, or the input convolution summed."""
    if tuple(tensor.shape) == shape:
        return tensor
    if tensor.ndim == 4 and shape[1] == 1 and (tensor.shape[0], *tensor.shape[2:]) == (shape[0], *shape[2:]):
        # The input convolution, (F, C_in, k, k) -> (F, 1, k, k): summing over the input
        # channels makes the 1-channel network compute exactly what the coronal one
        # computed with the radiograph copied into every channel (conv(x, W0) +
        # conv(x, W1) = conv(x, W0 + W1)).  The radiograph looks like both the mean and
        # the maximum projection (bright bone, dark lung), so the pretrained filters
        # respond to it as they learned to, at the activation scale they were trained at
        # (timm's adapt_input_conv does the same for 1-channel inputs).
        return tensor.sum(dim=1, keepdim=True)
    raise ValueError(f"tensor {key!r}: coronal shape {tuple(tensor.shape)} cannot become {shape}")


def _head_rows(name: str, coronal_structures: Sequence[str], new_heads: Mapping[str, Sequence[str]]) -> list[int]:
    """Rows of the coronal heads that start output ``name``."""
    if name in coronal_structures:
        return [list(coronal_structures).index(name)]
    sources = list(new_heads[name])
    unknown = [s for s in sources if s not in coronal_structures]
    if not sources or unknown:
        raise ValueError(f"new_heads[{name!r}] must name outputs of the coronal model; {unknown or 'none'} are not")
    return [list(coronal_structures).index(s) for s in sources]


def resolution_overrides(coronal: CoronalModel, config: TrainConfig) -> dict[str, Any]:
    """Plans fields for an adaptation at another pixel size or patch than the coronal model's.

    The network keeps its topology (stages, features, strides), so every weight fits;
    filters see the anatomy at ``config.spacing_mm`` (a finer pixel size sees smaller
    structures, with a receptive field that covers less of the body).  The patch must
    be a multiple of the network's total stride.

    Returns:
        ``{"spacing": [s, s], "patch_size": [h, w]}``, only the fields that change.

    Raises:
        ValueError: A patch that is not a multiple of the total stride.
    """
    changed: dict[str, Any] = {}
    if config.spacing_mm is not None and config.spacing_mm != coronal.config.spacing_mm:
        changed["spacing"] = [float(config.spacing_mm)] * 2
    if config.max_patch_size is not None and config.max_patch_size != coronal.config.max_patch_size:
        total = list(input_divisor(coronal.plans))
        patch = [int(p) for p in config.max_patch_size]
        if any(p % t for p, t in zip(patch, total)):
            raise ValueError(f"max_patch_size {patch} must be a multiple of the network's total stride {total}")
        changed["patch_size"] = patch
    return changed


# --- checks ------------------------------------------------------------------------
def _check_dataset(dataset: Dataset, coronal: CoronalModel, new_heads: Mapping[str, Sequence[str]]) -> None:
    path = dataset.root / DATASET_FILE
    if len(dataset.channels) != 1:
        raise InputError(path, f"{len(dataset.channels)} channels {list(dataset.channels)}: adaptation needs a "
                               "1-channel radiograph data set (`ts2d-xray synth build --kind xray`)")
    unknown = [s for s in dataset.structures if s not in coronal.structures and s not in new_heads]
    if unknown:
        raise InputError(path, f"structures {unknown[:8]}{' ...' if len(unknown) > 8 else ''} are not outputs of "
                               f"the coronal model {coronal.trainer_dir} ({len(coronal.structures)} structures); "
                               "the X-ray data set's structures must be the model's, a subset of them, "
                               "or new ones started from them (new_heads)")
    display = (coronal.plans["ts2d"].get("display"), dataset.meta.get("display"))
    if display[0] != display[1]:
        raise InputError(path, f"display convention {display[1]!r}, but the coronal model was trained on "
                               f"{display[0]!r} images: left and right would swap")


def _config(coronal: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    fixed = sorted(set(overrides) & set(PLANNING_FIELDS) - set(RESOLUTION_FIELDS))
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
                       new_heads: Mapping[str, Sequence[str]] | None = None, **config_overrides: Any) -> Trainer:
    """The :class:`Trainer` of an adaptation, checked but not started (see :func:`adapt`).

    ``trainer.prepare()`` builds the 1-channel network with the adapted weights
    (``trainer.network``), ``trainer.fit()`` trains it.
    """
    coronal = coronal_model if isinstance(coronal_model, CoronalModel) else load_coronal_model(coronal_model,
                                                                                                coronal_fold)
    dataset = xray_dataset if isinstance(xray_dataset, Dataset) else load_dataset(xray_dataset)
    new_heads = dict(new_heads or {})
    _check_dataset(dataset, coronal, new_heads)
    config = _config(coronal.config, config_overrides)
    _check_output(trainer_folder(out_dir, config), coronal)
    structures = tuple(dataset.structures)
    weights = adapt_weights(coronal.weights, network_shapes(coronal.plans, len(dataset.channels), structures),
                            coronal.structures, structures, new_heads)
    patch = resolution_overrides(coronal, config).get(
        "patch_size", coronal.plans["configurations"][CONFIGURATION]["patch_size"])

    def planner(fingerprint: Mapping[str, Any], dataset_meta: Mapping[str, Any], config: TrainConfig, *,
                in_channels: int, channel_source: Sequence[int]) -> dict:
        return adapted_plans(coronal, fingerprint, dataset_meta, config)

    log.info("adapting %s (fold %s, %d structures) to %s (%d structures)", coronal.trainer_dir, coronal.fold,
             len(coronal.structures), dataset.root, len(structures))
    return Trainer(out_dir, dataset, config, options, initial_weights=weights, planner=planner,
                   augmentation=augmentation if augmentation is not None else XrayAugmentation(patch))


def adapt(coronal_model: str | PathLike | CoronalModel, xray_dataset: Dataset | str | PathLike,
          out_dir: str | PathLike, options: TrainOptions = TrainOptions(), *,
          coronal_fold: int | str | None = None, augmentation: Callable | None = None,
          new_heads: Mapping[str, Sequence[str]] | None = None, **config_overrides: Any) -> TrainResult:
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
        new_heads: Structures of the X-ray data set that the coronal model lacks ->
            the coronal structures whose heads start them (averaged), e.g.
            ``{"lung_field_right": [the right lung lobes]}``.
        **config_overrides: Training fields of :class:`TrainConfig` (``epochs``,
            ``iterations_per_epoch``, ``initial_lr``, ``freeze_encoder_epochs``, ...),
            and ``spacing_mm`` / ``max_patch_size`` to work at another pixel size (mm)
            or patch (pixels) with the same network (:func:`resolution_overrides`);
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
                                 augmentation=augmentation, new_heads=new_heads, **config_overrides)
    return trainer.fit()

