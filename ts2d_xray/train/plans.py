"""Planning: from a data set and a configuration to nnU-Net v2 ``plans.json``.

nnU-Net's planner (``ExperimentPlanner``) needs nnU-Net's preprocessed folders and
label maps; our labels are multi-label, so this module follows its rules instead,
using its own topology function:

1. Target pixel size: the configuration's, else the median of the cases' (nnU-Net).
2. Median image shape at that pixel size; the first patch is that shape, capped by the
   configuration's ``max_patch_size``.
3. Topology (``get_pool_and_conv_props``, nnU-Net's): stride-2 stages until the
   feature map would get below ``2 * min_feature_map`` px, 3x3 kernels, features
   doubling from ``base_features`` up to ``max_features``; the patch is padded to a
   multiple of ``2 ** pools``.
4. Batch size: the configuration's, else nnU-Net's memory rule (shrink the patch until
   a batch of 2 fits ``vram_target_gb``, then fill the memory, at least 2, at most 5% of
   the data set's pixels per batch).

The plans hold nnU-Net's keys (``configurations["2d"]`` with its ``architecture``
block, which :func:`ts2d_xray.nnunet.network.build_network` builds as nnU-Net's
``get_network_from_plans`` does), plus a ``"ts2d"`` block with what nnU-Net has no field for: the structures
(one sigmoid output each), which data set channel feeds each network input, and how
images are resampled.

Axis order follows nnU-Net's for 2D NIfTI files read by SimpleITK: 3D values are
``(z, rows, columns)`` with ``z`` the 1 mm thick singleton axis; 2D values are
``(rows, columns)`` = ``(H, W)``.  Spacings are in mm.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.io.slice3d import NNUNET_NORMAL_SPACING_MM
from ts2d_xray.nnunet.layout import CONFIGURATION, RESAMPLING_2D
from ts2d_xray.nnunet.network import network_from_architecture
from ts2d_xray.train.config import TrainConfig

__all__ = ["check_plans", "data_fields", "dataset_fingerprint", "network_topology", "plan"]

log = logging.getLogger(__name__)

#: Spacing of the singleton z axis in the fingerprint and plans, in mm: nnU-Net's 2D convention, as the
#: data set files have it (see docs/dataset_format.md) and TS2D's published plans show.
SLICE_THICKNESS_MM = NNUNET_NORMAL_SPACING_MM
#: Foreground pixels sampled per channel for the intensity statistics (nnU-Net: 10e7 in all).
_FOREGROUND_SAMPLES = 10_000_000
_NETWORK_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
# nnU-Net's reference for its 2D memory rule (ExperimentPlanner): a feature-map sum of
# 85e6 at batch 12 fits 8 GB.
_REFERENCE_2D = 85_000_000
_REFERENCE_BATCH_2D = 12
_REFERENCE_GB = 8
_MIN_BATCH = 2
_MAX_DATASET_COVERED = 0.05
_INITIAL_PATCH_PIXELS = 2048 ** 2


# --- the data set's fingerprint ---------------------------------------------------
def dataset_fingerprint(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], spacings: Sequence[Sequence[float]],
                        labelled: Sequence[np.ndarray]) -> dict:
    """nnU-Net's ``dataset_fingerprint.json`` of the training cases.

    Args:
        images: Per case ``(C, H, W)`` float32, as stored (coronal: HU).
        masks: Per case ``(K, H, W)`` bool.
        spacings: Per case ``(row, column)`` spacing in mm.
        labelled: Per case ``(K,)`` bool: the structures its labels cover.

    Foreground is the union of the labelled structures' pixels, sampled with a fixed
    seed as nnU-Net does (``collect_foreground_intensities``).

    Raises:
        InputError: No case has a single labelled structure pixel.
    """
    rng = np.random.default_rng(1234)
    per_case = max(1, _FOREGROUND_SAMPLES // max(1, len(images)))
    n_channels = images[0].shape[0]
    collected: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    for image, mask, valid in zip(images, masks, labelled):
        foreground = mask[valid].any(axis=0) if valid.any() else np.zeros(mask.shape[1:], bool)
        for c in range(n_channels):
            values = image[c][foreground]
            if values.size > per_case:
                values = rng.choice(values, per_case, replace=False)
            collected[c].append(values)
    properties = {}
    for c in range(n_channels):
        values = np.concatenate(collected[c]).astype(np.float64)
        if values.size == 0:
            raise InputError(None, "no case has any labelled structure pixel: nothing to train on")
        p005, median, p995 = np.percentile(values, (0.5, 50.0, 99.5))
        properties[str(c)] = {"max": float(values.max()), "mean": float(values.mean()), "median": float(median),
                              "min": float(values.min()), "percentile_00_5": float(p005),
                              "percentile_99_5": float(p995), "std": float(values.std())}
    return {
        "foreground_intensity_properties_per_channel": properties,
        "median_relative_size_after_cropping": 1.0,
        "shapes_after_crop": [[1, int(m.shape[1]), int(m.shape[2])] for m in masks],
        "spacings": [[SLICE_THICKNESS_MM, float(s[0]), float(s[1])] for s in spacings],
    }


# --- topology ---------------------------------------------------------------------
def network_topology(spacing: Sequence[float], patch_size: Sequence[int], config: TrainConfig) -> dict:
    """``n_stages``, ``strides``, ``kernel_sizes``, ``features_per_stage`` and the padded patch.

    Uses nnU-Net's ``get_pool_and_conv_props`` (stride-2 pooling per axis while its
    feature map stays >= ``2 * min_feature_map`` px and its spacing is within 2x of the
    finest; 3x3 kernels), then doubles features per stage up to ``max_features``.
    """
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, strides, kernels, patch, divisible = get_pool_and_conv_props(
        list(spacing), list(patch_size), config.min_feature_map, 999999)
    n_stages = len(strides)
    return {
        "n_stages": n_stages,
        "strides": [list(map(int, s)) for s in strides],
        "kernel_sizes": [list(map(int, k)) for k in kernels],
        "features_per_stage": [min(config.max_features, config.base_features * 2 ** i) for i in range(n_stages)],
        "patch_size": [int(p) for p in patch],
        "divisible_by": [int(d) for d in divisible],
    }


def _architecture(topology: Mapping[str, Any], config: TrainConfig) -> dict:
    """nnU-Net's ``architecture`` block for a PlainConvUNet (``ExperimentPlanner`` layout)."""
    n = topology["n_stages"]
    return {
        "network_class_name": _NETWORK_CLASS,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(topology["features_per_stage"]),
            "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": topology["kernel_sizes"],
            "strides": topology["strides"],
            "n_conv_per_stage": [config.n_conv_per_stage] * n,
            "n_conv_per_stage_decoder": [config.n_conv_per_stage] * (n - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _feature_map_size(architecture: Mapping[str, Any], patch: Sequence[int], in_channels: int, n_out: int) -> float:
    """nnU-Net's memory proxy: the summed feature-map sizes of one forward pass."""
    net = network_from_architecture(architecture, in_channels, n_out, device="meta")  # sizes only
    return float(net.compute_conv_feature_map_size(tuple(patch)))


# --- planning ---------------------------------------------------------------------
def data_fields(fingerprint: Mapping[str, Any], dataset_meta: Mapping[str, Any], spacing: Sequence[float]) -> dict:
    """The plan values that describe the data rather than the network.

    Adapting a model to another data set (:mod:`.adapt`) keeps the network's plan and
    replaces these.

    Args:
        fingerprint: :func:`dataset_fingerprint` of the data set's cases.
        dataset_meta: The data set's ``dataset.json``.
        spacing: ``(row, column)`` pixel size the network works at, in mm.

    Returns:
        ``{"configuration": {...}, "plans": {...}}``: the keys of ``configurations["2d"]``
        (median image size at ``spacing``, nnU-Net's normalisation scheme per channel,
        named by ``channel_names``) and of the plans' top level (data set name, original
        median spacing and shape, foreground intensity statistics).
    """
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

    channel_names = [dataset_meta["channel_names"][str(c)] for c in range(len(dataset_meta["channel_names"]))]
    spacings = np.asarray(fingerprint["spacings"], dtype=float)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=float)
    median_shape = np.median(shapes[:, 1:] * spacings[:, 1:] / np.asarray(spacing, dtype=float), axis=0)
    return {
        "configuration": {
            "median_image_size_in_voxels": [float(v) for v in median_shape],
            "normalization_schemes": [get_normalization_scheme(n).__name__ for n in channel_names],
            "use_mask_for_norm": [False] * len(channel_names),
        },
        "plans": {
            "dataset_name": str(dataset_meta.get("name", "dataset")),
            "original_median_spacing_after_transp": [float(v) for v in np.median(spacings, axis=0)],
            "original_median_shape_after_transp": [int(round(v)) for v in np.median(shapes, axis=0)],
            "foreground_intensity_properties_per_channel": fingerprint["foreground_intensity_properties_per_channel"],
        },
    }


def plan(fingerprint: Mapping[str, Any], dataset_meta: Mapping[str, Any], config: TrainConfig, *,
         in_channels: int | None = None, channel_source: Sequence[int] | None = None) -> dict:
    """nnU-Net v2 plans (one ``"2d"`` configuration) for a data set and a configuration.

    Args:
        fingerprint: :func:`dataset_fingerprint` of the data set's cases.
        dataset_meta: The data set's ``dataset.json`` (channel names, structures, name).
        config: The configuration.
        in_channels: Network inputs (default: the data set's channels).
        channel_source: For each network input, the data set channel it reads
            (default: ``0, 1, ...``).  A 1-channel data set may feed several inputs.
    """
    n_channels = len(dataset_meta["channel_names"])
    n_structures = len(dataset_meta["structures"])
    in_channels = n_channels if in_channels is None else int(in_channels)
    channel_source = list(range(in_channels)) if channel_source is None else [int(c) for c in channel_source]
    spacings = np.asarray(fingerprint["spacings"], dtype=float)[:, 1:]
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=float)[:, 1:]
    # 1. Target spacing (row, column) in mm.
    target = (np.array([config.spacing_mm] * 2) if config.spacing_mm is not None
              else np.median(spacings, axis=0))
    # 2. Median shape at the target spacing; the first patch: nnU-Net's 2048^2-pixel start, clipped.
    data = data_fields(fingerprint, dataset_meta, target)
    median_shape = np.asarray(data["configuration"]["median_image_size_in_voxels"])
    start = 1 / target * (_INITIAL_PATCH_PIXELS / np.prod(1 / target)) ** 0.5
    patch = np.minimum(np.round(start), np.maximum(np.round(median_shape), 1))
    if config.max_patch_size is not None:
        patch = np.minimum(patch, config.max_patch_size)
    # 3. Topology.
    topology = network_topology(target, patch.astype(int), config)
    # 4. Batch size: nnU-Net's rule, shrinking the patch first if a batch of 2 does not fit.
    if config.batch_size is not None:
        batch_size = config.batch_size
    else:
        batch_size, topology = _memory_rule(topology, target, median_shape, config, n_channels, n_structures,
                                            n_cases=len(shapes))
    configuration = _configuration(config, data["configuration"], target, topology, batch_size)
    return {
        "dataset_name": data["plans"]["dataset_name"],
        "plans_name": config.plans_name,
        "original_median_spacing_after_transp": data["plans"]["original_median_spacing_after_transp"],
        "original_median_shape_after_transp": data["plans"]["original_median_shape_after_transp"],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": "ts2d_xray.train.plans",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": data["plans"]["foreground_intensity_properties_per_channel"],
        "ts2d": _ts2d_block(config, dataset_meta, in_channels, channel_source),
    }


def _configuration(config: TrainConfig, data: Mapping[str, Any], spacing: np.ndarray, topology: Mapping[str, Any],
                   batch_size: int) -> dict:
    """``configurations["2d"]``: the data's fields (:func:`data_fields`), spacing, patch, network, batch."""
    return {
        "data_identifier": f"{config.plans_name}_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(batch_size),
        "patch_size": topology["patch_size"],
        "median_image_size_in_voxels": data["median_image_size_in_voxels"],
        "spacing": [float(v) for v in spacing],
        "normalization_schemes": data["normalization_schemes"],
        "use_mask_for_norm": data["use_mask_for_norm"],
        **copy.deepcopy(dict(RESAMPLING_2D)),
        "architecture": _architecture(topology, config),
        "batch_dice": True,
    }


def _ts2d_block(config: TrainConfig, dataset_meta: Mapping[str, Any], in_channels: int,
                channel_source: Sequence[int]) -> dict:
    """``plans["ts2d"]``: what nnU-Net has no field for (structures, inputs, resampling)."""
    channel_names = [dataset_meta["channel_names"][str(c)] for c in range(len(dataset_meta["channel_names"]))]
    return {
        "config": config.name,
        "planning": config.planning(),
        "structures": list(dataset_meta["structures"]),
        "outputs": "one logit per structure, in 'structures' order; sigmoid > 0.5 = inside (masks may overlap)",
        "kind": dataset_meta.get("kind"),
        "display": dataset_meta.get("display"),
        "dataset_channels": list(dataset_meta.get("channels", channel_names)),
        "in_channels": in_channels,
        "channel_source": list(channel_source),
        "resampling": "ts2d_xray.projection.resample: antialiased bilinear to 'spacing' (row, column) mm; "
                      "masks as fractions, >= 0.5",
    }


def _memory_rule(topology: dict, spacing: np.ndarray, median_shape: np.ndarray, config: TrainConfig,
                 in_channels: int, n_out: int, n_cases: int) -> tuple[int, dict]:
    """nnU-Net's ``get_plans_for_configuration`` batch-size loop for 2D: ``(batch size, topology)``."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    reference = _REFERENCE_2D * config.vram_target_gb / _REFERENCE_GB
    estimate = _feature_map_size(_architecture(topology, config), topology["patch_size"], in_channels, n_out)
    while estimate / _REFERENCE_BATCH_2D * 2 > reference:
        # Shrink the axis that is largest relative to the median shape by one step of its divisor.
        patch = list(topology["patch_size"])
        axis = int(np.argsort([p / m for p, m in zip(patch, median_shape)])[-1])
        trial = list(patch)
        trial[axis] -= topology["divisible_by"][axis]
        *_, divisible = get_pool_and_conv_props(list(spacing), trial, config.min_feature_map, 999999)
        patch[axis] -= int(divisible[axis])
        topology = network_topology(spacing, patch, config)
        estimate = _feature_map_size(_architecture(topology, config), topology["patch_size"], in_channels, n_out)
    batch = round(reference / estimate * _REFERENCE_BATCH_2D)
    dataset_pixels = float(np.prod(median_shape)) * n_cases
    cap = round(dataset_pixels * _MAX_DATASET_COVERED / float(np.prod(topology["patch_size"])))
    return max(min(batch, cap), _MIN_BATCH), topology


def check_plans(plans: Mapping[str, Any], dataset_meta: Mapping[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse existing plans made for another data set layout or configuration."""
    ts2d = plans.get("ts2d", {})
    if ts2d.get("structures") != list(dataset_meta["structures"]):
        raise InputError(path, "these plans were made for other structures than the data set's; "
                               "use another model folder")
    planning = config.planning()
    if ts2d.get("planning") != planning:
        changed = sorted(k for k in planning if ts2d.get("planning", {}).get(k) != planning[k])
        raise InputError(path, f"these plans were made with other settings of config {config.name!r} "
                               f"({', '.join(changed)}); use another model folder")
