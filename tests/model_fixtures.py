"""Test models in nnU-Net's results layout: deterministic (thresholds) or random, ours or TS2D's fork.

Used only by the tests, never as a default model.

The *deterministic* networks are PlainConvUNets without normalisation layers whose
weights pass one image channel straight through the first encoder stage, the skip
connection and the last decoder stage (3x3 kernels with only the centre set), zero
everywhere else: every output logit is ``gain * (x - t_k)`` for the normalised input
``x > 0`` of that pixel.  A structure is therefore "normalised intensity above t_k",
a fixed pointwise function of the input: exactly what a geometric round trip needs.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

#: Logit slope of the deterministic networks: probabilities saturate one 1/20 unit from t.
GAIN = 40.0
#: CT normalisation of the deterministic coronal models: x = HU / 100 (no clipping in practice).
CT_PROPERTIES = {"mean": 0.0, "std": 100.0, "percentile_00_5": -5000.0, "percentile_99_5": 5000.0,
                 "median": 0.0, "min": -5000.0, "max": 5000.0}
OUR_TRAINER = "Ts2dMultiLabelTrainer"
FORK_TRAINER = "nnUNetTrainer_4000epochs_Batch2_NoMirroring"


def architecture(features: Sequence[int], norm: bool) -> dict:
    n = len(features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": [[3, 3]] * n, "strides": [[1, 1]] + [[2, 2]] * (n - 1),
            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d" if norm else None,
            "norm_op_kwargs": {"eps": 1e-05, "affine": True} if norm else None,
            "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def plans(kind: str, structures: Sequence[str], spacing: float, patch: Sequence[int], features: Sequence[int],
          norm: bool = False, ours: bool = True, display: str = "radiograph") -> dict:
    channels = 2 if kind == "coronal" else 1
    scheme = "CTNormalization" if kind == "coronal" else "ZScoreNormalization"
    p = {
        "dataset_name": f"Dataset900_{kind}", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, spacing, spacing],
        "original_median_shape_after_transp": [1, *patch], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"2d": {
            "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": [spacing, spacing],
            "normalization_schemes": [scheme] * channels, "use_mask_for_norm": [False] * channels,
            "architecture": architecture(features, norm), "batch_dice": True,
        }},
        "experiment_planner_used": "tests", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(c): dict(CT_PROPERTIES) for c in range(channels)},
    }
    if ours:
        p["ts2d"] = {"structures": list(structures), "kind": kind, "display": display,
                     "in_channels": channels, "channel_source": list(range(channels))}
    return p


def dataset_json(kind: str, structures: Sequence[str], ours: bool = True, name: str = "Dataset900_test") -> dict:
    names = ("CT", "CT") if kind == "coronal" else ("zscore",)
    d = {"channel_names": {str(c): n for c, n in enumerate(names)},
         "labels": {"background": 0, **{s: k + 1 for k, s in enumerate(structures)}},
         "numTraining": 3, "file_ending": ".nii.gz", "name": name, "multilabel": True}
    if ours:
        d.update(structures=list(structures), kind=kind, display="radiograph",
                 channels=["mean", "max"] if kind == "coronal" else ["xray"])
    return d


def build(p: dict, n_out: int):
    from ts2d_xray.nnunet.network import build_network

    n_in = len(p["configurations"]["2d"]["normalization_schemes"])
    return build_network(p, n_in, n_out)


def deterministic_weights(network, source: int, thresholds: Sequence[float], background: bool = False) -> dict:
    """State dict of the pass-through network (see module docstring); optional background output 0."""
    with torch.no_grad():
        for param in network.parameters():
            param.zero_()
        enc = network.encoder.stages[0][0].convs
        enc[0].conv.weight[0, source, 1, 1] = 1.0
        enc[1].conv.weight[0, 0, 1, 1] = 1.0
        last = network.decoder.stages[-1].convs
        n_up = network.decoder.transpconvs[-1].weight.shape[1]  # upsampled channels come first in the concat
        last[0].conv.weight[0, n_up, 1, 1] = 1.0
        last[1].conv.weight[0, 0, 1, 1] = 1.0
        seg = network.decoder.seg_layers[-1]
        offset = 1 if background else 0
        for k, t in enumerate(thresholds):
            seg.weight[k + offset, 0, 0, 0] = GAIN
            seg.bias[k + offset] = -GAIN * t
        if background:
            seg.bias[0] = 3.0  # a background logit that must be dropped
    return {k: v.clone() for k, v in network.state_dict().items()}


def checkpoint(weights: dict, p: dict, ds: dict, trainer: str) -> dict:
    """A checkpoint with nnU-Net's keys, numpy scalars in its log as nnU-Net writes them."""
    return {
        "network_weights": weights,
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99}]},
        "grad_scaler_state": None,
        "logging": {"ema_fg_dice": [np.float64(0.5), np.float64(0.6)], "epoch_end_timestamps": [1.0, 2.0]},
        "_best_ema": np.float64(0.6), "current_epoch": 2,
        "init_args": {"plans": p, "configuration": "2d", "fold": 0, "dataset_json": ds, "device": torch.device("cpu")},
        "trainer_name": trainer, "inference_allowed_mirroring_axes": None,
    }


def write_nnunet_folder(folder: Path, p: dict, ds: dict, weights: dict, trainer: str) -> Path:
    results = folder / f"{trainer}__{p['plans_name']}__2d"
    (results / "fold_0").mkdir(parents=True)
    (results / "plans.json").write_text(json.dumps(p, indent=1))
    (results / "dataset.json").write_text(json.dumps(ds, indent=1))
    torch.save(checkpoint(weights, p, ds, trainer), results / "fold_0" / "checkpoint_final.pth")
    return results


#: Deterministic coronal groups: structure -> threshold on the max channel in units of 100 HU.
CORONAL_GROUPS = {"bones": {"bone": 3.0, "dense": 10.0}, "soft": {"dense_soft": 10.0}}
#: Deterministic xray group: structure -> threshold in standard deviations above the image mean.
XRAY_GROUPS = {"bright": {"bright": 1.0}}


def deterministic_bundle(root: Path, kind: str = "coronal", spacing: float = 3.0, patch=(64, 64),
                         features=(4, 8, 16), name: str | None = None, groups: dict | None = None,
                         manifest: bool = True) -> Path:
    """A bundle folder with deterministic group models; with our manifest unless ``manifest=False``."""
    from ts2d_xray.segment.manifest import infer_manifest, write_manifest

    groups = groups or (CORONAL_GROUPS if kind == "coronal" else XRAY_GROUPS)
    source = 1 if kind == "coronal" else 0  # the max channel / the radiograph
    root.mkdir(parents=True)
    for group, thresholds in groups.items():
        structures = list(thresholds)
        p = plans(kind, structures, spacing, patch, features)
        ds = dataset_json(kind, structures, name=f"Dataset900_{group}")
        ds["groups"] = [group]
        weights = deterministic_weights(build(p, len(structures)), source, list(thresholds.values()))
        write_nnunet_folder(root / group, p, ds, weights, OUR_TRAINER)
    if manifest:
        m = infer_manifest(root, name=name or root.name)
        from dataclasses import replace

        from ts2d_xray.segment.manifest import hash_weights

        m = replace(m, inferred=False, sha256=hash_weights(root, m), description="deterministic test model",
                    training={"note": "test fixture, not trained"})
        write_manifest(root, m)
    return root


def random_pair(tmp: Path, kind: str = "coronal", structures=("liver", "spleen", "heart"), spacing: float = 3.0,
                patch=(64, 64), features=(4, 8, 16), seed: int = 0) -> tuple[Path, Path]:
    """The same random InstanceNorm network twice: our bundle folder, and a TS2D-fork zip (K + 1 outputs)."""
    torch.manual_seed(seed)
    p_ours = plans(kind, structures, spacing, patch, features, norm=True)
    net = build(p_ours, len(structures))
    for param in net.parameters():
        torch.nn.init.normal_(param, std=0.3)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    ours = tmp / "ours"
    write_nnunet_folder(ours / "organs", p_ours, {**dataset_json(kind, structures), "groups": ["organs"]},
                        weights, OUR_TRAINER)
    # The fork: no "ts2d" block, no "structures"; background is output 0 of K + 1.
    fork_weights = {}
    for k, v in weights.items():
        if ".seg_layers." in k:
            v = torch.cat([torch.full_like(v[:1], 0.7), v])
        fork_weights[k] = v
    p_fork = plans(kind, structures, spacing, patch, features, norm=True, ours=False)
    fork = tmp / "fork_src" / "Dataset291_TS2D_organs"
    write_nnunet_folder(fork, p_fork, dataset_json(kind, structures, ours=False, name="Dataset291_TS2D_organs"),
                        fork_weights, FORK_TRAINER)
    archive = tmp / "ts2d_organs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((tmp / "fork_src").rglob("*")):
            zf.write(f, f.relative_to(tmp / "fork_src").as_posix())
    shutil.rmtree(tmp / "fork_src")
    return ours, archive
