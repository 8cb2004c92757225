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

import copy
import json
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ts2d_xray.nnunet.layout import RESAMPLING_2D

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
    """The same random InstanceNorm network twice: our bundle folder, and a published TS2D zip.

    The zip (``ts2d-v2-ep4000b2_organs.zip``, see :func:`write_published`) has K + 1
    outputs, background first (random too, so the fork's rule clears some pixels), and
    ZScore normalisation from its channel names.
    """
    torch.manual_seed(seed)
    p_ours = plans(kind, structures, spacing, patch, features, norm=True)
    net = build(p_ours, len(structures))
    for param in net.parameters():
        torch.nn.init.normal_(param, std=0.3)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    ours = tmp / "ours"
    write_nnunet_folder(ours / "organs", p_ours, {**dataset_json(kind, structures), "groups": ["organs"]},
                        weights, OUR_TRAINER)
    fork_weights = {}
    for k, v in weights.items():
        if ".seg_layers." in k:
            v = torch.cat([torch.randn_like(v[:1]) * 0.3, v])
        fork_weights[k] = v
    channels = ("mean", "max") if kind == "coronal" else ("xr",)
    name = "Dataset291_TS2D_organs"
    key = write_published(tmp / "fork_src", TS2D_MODEL, "organs", 291,
                          ts2d_plans(name, channels, (spacing, spacing), patch, features),
                          ts2d_dataset_json(name, channels, structures), fork_weights)
    archive = zip_published(key, tmp / f"{key.name}.zip")
    shutil.rmtree(tmp / "fork_src")
    return ours, archive


# --- TS2D's published layout ------------------------------------------------------
# What TS2D 1.2.0 downloads and unpacks (ts2d.core.inference.database.URLDataBase.copy,
# ts2d.core.inference.nnu.NNUWrapper.configure), one zip per group:
#
#   <model>_<group>.zip
#     <model>_<group>/r001/model.json                       {"param": {"nnu.*": ...}, "folds": [...]}
#     <model>_<group>/r001/Dataset<id>_<name>/<trainer>__nnUNetPlans__2d/
#       plans.json, dataset.json (the fork's "multilabel": true, file_ending ".nrrd")
#       fold_0/checkpoint_final.pth                         (the fork trainer's keys, K + 1 outputs)

#: TS2D's model names (ts2d/data/shared.json).
TS2D_MODEL = "ts2d-v2-ep4000b2"
TSXR_MODEL = "tsxr-v2-ep1000b2"
REVISION = "r001"


def ts2d_plans(dataset_name: str, channels: Sequence[str], spacing: Sequence[float], patch: Sequence[int],
               features: Sequence[int], use_mask: bool = False, properties: dict | None = None) -> dict:
    """Plans as nnU-Net 2.6's ExperimentPlanner writes them for a 2D-only data set (channel names -> ZScore)."""
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

    n = len(channels)
    arch = architecture(features, norm=True)
    arch["arch_kwargs"]["norm_op_kwargs"] = {"eps": 1e-05, "affine": True}
    return {
        "dataset_name": dataset_name, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [999.0, *map(float, spacing)],
        "original_median_shape_after_transp": [1, *patch], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"2d": {
            "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 12,
            "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": list(map(float, spacing)),
            "normalization_schemes": [get_normalization_scheme(c).__name__ for c in channels],
            "use_mask_for_norm": [use_mask] * n, **copy.deepcopy(dict(RESAMPLING_2D)), "architecture": arch, "batch_dice": True,
        }},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): dict(properties or {"max": 3000.0, "mean": 0.0, "median": 0.0, "min": -1000.0,
                                        "percentile_00_5": -1000.0, "percentile_99_5": 2000.0, "std": 300.0})
            for c in range(n)},
    }


def ts2d_dataset_json(name: str, channels: Sequence[str], structures: Sequence[str]) -> dict:
    """The fork's dataset.json: channel names are TS2D's projection modes, labels 1..K after background."""
    return {"channel_names": {str(c): n for c, n in enumerate(channels)},
            "labels": {"background": 0, **{s: k + 1 for k, s in enumerate(structures)}},
            "numTraining": 1000, "file_ending": ".nrrd", "name": name, "multilabel": True}


def ts2d_model_json(model: str, group: str) -> dict:
    """TS2D's model.json: the nnU-Net folder it names and the folds (revision and key come from the folders)."""
    return {"model": model, "group": group, "folds": [0],
            "param": {"nnu.version": 2, "nnu.trainer": FORK_TRAINER, "nnu.plans": "nnUNetPlans",
                      "nnu.configuration": "2d", "nnu.predict.checkpoint": "final"}}


def fork_checkpoint(weights: dict, p: dict, ds: dict) -> dict:
    """checkpoint_final.pth as the fork's trainer saves it (no mirroring allowed at inference)."""
    c = checkpoint(weights, p, ds, FORK_TRAINER)
    c["init_args"] = {**c["init_args"], "unpack_dataset": True}
    c["current_epoch"] = 4000
    return c


def write_published(root: Path, model: str, group: str, dataset_id: int, p: dict, ds: dict, weights: dict) -> Path:
    """``root/<model>_<group>/r001/...`` (a published zip, unpacked); returns the key folder."""
    key = root / f"{model}_{group}"
    revision = key / REVISION
    results = revision / ds["name"] / f"{FORK_TRAINER}__nnUNetPlans__2d"
    (results / "fold_0").mkdir(parents=True)
    (revision / "model.json").write_text(json.dumps(ts2d_model_json(model, group), indent=1))
    (results / "plans.json").write_text(json.dumps(p, indent=1))
    (results / "dataset.json").write_text(json.dumps(ds, indent=1))
    torch.save(fork_checkpoint(weights, p, ds), results / "fold_0" / "checkpoint_final.pth")
    assert ds["name"].startswith(f"Dataset{dataset_id:03d}_")
    return key


def zip_published(key: Path, archive: Path) -> Path:
    """``<model>_<group>.zip`` holding the key folder, as on Zenodo."""
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(key.rglob("*")):
            zf.write(f, f.relative_to(key.parent).as_posix())
    return archive


def random_weights(net: torch.nn.Module) -> dict:
    """Random weights under which the outputs vary across the image: He-scaled convolutions, norms near 1."""
    with torch.no_grad():
        for name, param in net.named_parameters():
            if ".norm." in name:
                param.copy_(torch.randn_like(param) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
            elif param.ndim == 4:
                param.normal_(0.0, 2.0 / np.sqrt(param[0].numel()))
            else:
                param.normal_(0.0, 0.1)
    return {k: v.clone() for k, v in net.state_dict().items()}


def random_published(root: Path, kind: str = "coronal", groups: dict | None = None, *, spacing=(2.0, 2.5),
                     patch=(96, 64), features=(4, 8, 16, 32), seed: int = 0, channels: Sequence[str] | None = None,
                     use_mask: bool = False) -> Path:
    """Published groups with random InstanceNorm networks (K + 1 outputs) under ``root``; returns ``root``.

    The background output is random too, so the fork's rule (a structure is cleared where
    p(background) > 0.5) matters.
    """
    groups = groups or ({"organs": ("liver", "spleen", "kidney_left"), "cardiac": ("heart", "aorta")}
                        if kind == "coronal" else {"ribs": ("rib_left_1", "rib_right_1", "sternum")})
    channels = channels or (("mean", "max") if kind == "coronal" else ("xr",))
    model = TS2D_MODEL if kind == "coronal" else TSXR_MODEL
    torch.manual_seed(seed)
    for i, (group, structures) in enumerate(groups.items()):
        name = f"Dataset{300 + i:03d}_{model.replace('-', '')}_{group}"
        p = ts2d_plans(name, channels, spacing, patch, features, use_mask=use_mask)
        weights = random_weights(build(p, len(structures) + 1))
        write_published(root, model, group, 300 + i, p, ts2d_dataset_json(name, channels, structures), weights)
    return root


#: Our bundled default models (ts2d_xray/weights), the source of the anatomy-like stand-ins.
BUNDLED = Path(__file__).resolve().parents[1] / "ts2d_xray" / "weights"


def _bundled_source(kind: str) -> tuple[dict, dict, dict]:
    """(plans, dataset.json, float32 weights) of our bundled default model of ``kind``."""
    (folder,) = (BUNDLED / f"ts2d-xray-{kind}" / "all").iterdir()
    state = torch.load(folder / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    weights = {k: v.float() for k, v in state["network_weights"].items()}
    return (json.loads((folder / "plans.json").read_text()), json.loads((folder / "dataset.json").read_text()),
            weights)


def _as_ts2d_display(weights: dict, plans: dict, image_stats: Sequence[tuple[float, float]]) -> dict:
    """Our radiograph-display, CT-normalised coronal network made to read TS2D's inputs (approximately).

    Every kernel is mirrored left-right (TS2D shows the patient's left on the image left),
    and the first convolution absorbs the change from CTNormalization (training
    statistics) to ZScoreNormalization (per image; ``image_stats`` are a typical
    projection's mean and standard deviation per channel).
    """
    out = {k: (v.flip(-1) if v.ndim == 4 else v.clone()) for k, v in weights.items()}
    props = plans["foreground_intensity_properties_per_channel"]
    w, b = "encoder.stages.0.0.convs.0.conv.weight", "encoder.stages.0.0.convs.0.conv.bias"
    for c, (mu, sigma) in enumerate(image_stats):
        m, s = props[str(c)]["mean"], props[str(c)]["std"]
        out[b] += out[w][:, c].sum(dim=(1, 2)) * (mu - m) / s
        out[w][:, c] *= sigma / s
    return out


def bundled_published(root: Path, kind: str = "coronal", groups: Sequence[str] | None = None) -> Path:
    """Published groups (TS2D's five, or ``groups``) cut from our bundled default model; returns ``root``.

    Each group keeps its structures' output rows and gets a background output that never
    fires (the fork's rule then clears nothing), so the masks look like anatomy.
    """
    from ts2d_xray import labels

    plans, dataset, weights = _bundled_source(kind)
    structures = dataset["structures"]
    channels = ("mean", "max") if kind == "coronal" else ("xr",)
    config = plans["configurations"]["2d"]
    if kind == "coronal":  # typical [mean, max] statistics of a projection in HU (the TotalSegmentator example CT)
        weights = _as_ts2d_display(weights, plans, [(-420.0, 330.0), (320.0, 520.0)])
    model = TS2D_MODEL if kind == "coronal" else TSXR_MODEL
    for i, group in enumerate(groups or labels.GROUPS):
        rows = [k for k, s in enumerate(structures) if labels.group_of(s) == group]
        names = [structures[k] for k in rows]
        name = f"Dataset{400 + i:03d}_{model.replace('-', '')}_{group}"
        p = ts2d_plans(name, channels, config["spacing"], config["patch_size"],
                       config["architecture"]["arch_kwargs"]["features_per_stage"])
        group_weights = {}
        for key, v in weights.items():
            if ".seg_layers." in key:
                background = torch.zeros_like(v[:1]) if key.endswith("weight") else torch.full_like(v[:1], -8.0)
                v = torch.cat([background, v[rows]])
            group_weights[key] = v
        write_published(root, model, group, 400 + i, p, ts2d_dataset_json(name, channels, names), group_weights)
    return root
