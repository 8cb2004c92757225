"""``ts2d-xray train``, ``adapt`` and ``export-regions``: thin layers over
:func:`ts2d_xray.train.train`, :func:`ts2d_xray.train.adapt` and
:func:`ts2d_xray.dataset.regions.export_regions`.

``train`` and ``adapt`` also run under ``torchrun --nproc_per_node N`` (distributed
data-parallel, :mod:`ts2d_xray.train.distributed`); process 0 prints the result.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ts2d_xray.cli.argtypes import SubParsers, fold, non_negative_int, positive_int

if TYPE_CHECKING:
    from ts2d_xray.train import TrainOptions, TrainResult

__all__ = ["add_parsers", "run_adapt", "run_export_regions", "run_train"]


def add_parsers(sub: SubParsers) -> None:
    """Register ``train``, ``adapt`` and ``export-regions``."""
    _add_train_parser(sub)
    _add_adapt_parser(sub)
    x = sub.add_parser("export-regions", help="write a data set in upstream nnU-Net's region format "
                                              "(one integer code per combination of structures; 2D files with "
                                              "nnU-Net's 999 mm singleton axis) for nnUNetv2_plan_and_preprocess "
                                              "and nnUNetv2_train")
    x.add_argument("dataset", type=Path, metavar="DATASET", help="data set of `ts2d-xray synth build`")
    x.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="new folder, e.g. $nnUNet_raw/Dataset501_Organs")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """How a training runs: the options ``train`` and ``adapt`` share (see TrainOptions)."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA if available (default)")
    p.add_argument("--fold", type=fold, default=0, metavar="F|all",
                   help="fold of the data set's cross-validation split, or 'all' (train and validate on every case)")
    p.add_argument("--folds", type=positive_int, default=5, metavar="N", help="folds of a new split (default 5)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the initialisation and the batches (default 0)")
    p.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                   help="data-loader processes (default: 0 on the CPU, up to 8 with CUDA)")
    p.add_argument("--resume", action="store_true", help="continue from the fold's last checkpoint")


def _add_train_parser(sub: SubParsers) -> None:
    p = sub.add_parser("train", help="train a multi-label model on a data set (nnU-Net v2 folders and checkpoints)")
    p.add_argument("dataset", type=Path, help="data set folder written by `ts2d-xray synth build` (one group)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL_DIR",
                   help="model folder; results go to MODEL_DIR/<trainer>__<plans>__2d/fold_F")
    p.add_argument("--config", choices=("tiny", "default"), default="default",
                   help="default: nnU-Net's 2D configuration; tiny: minutes on a CPU, for tests and demos")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N", help="epochs (default: the config's)")
    p.add_argument("--iterations-per-epoch", type=positive_int, default=None, metavar="N",
                   help="training iterations per epoch (default: the config's)")
    _add_run_options(p)


def _add_adapt_parser(sub: SubParsers) -> None:
    p = sub.add_parser("adapt", help="fine-tune a coronal model on a radiograph data set into an X-ray model")
    p.add_argument("coronal_model", type=Path, metavar="CORONAL_MODEL",
                   help="model folder of `ts2d-xray train` on coronal projections (MODEL_DIR or its "
                        "<trainer>__<plans>__2d folder)")
    p.add_argument("dataset", type=Path, metavar="XRAY_DATASET",
                   help="1-channel data set of `ts2d-xray synth build --kind xray`; its structures must be the "
                        "coronal model's or a subset")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="model folder of the X-ray model; results go to OUT/<trainer>__<plans>__2d/fold_F")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help="epochs (default: the coronal model's configuration's)")
    p.add_argument("--iterations-per-epoch", type=positive_int, default=None, metavar="N",
                   help="training iterations per epoch (default: the coronal model's configuration's)")
    p.add_argument("--freeze-encoder-epochs", type=non_negative_int, default=None, metavar="N",
                   help="train only the decoder for the first N epochs (default: the coronal model's "
                        "configuration's, usually 0)")
    p.add_argument("--coronal-fold", type=fold, default=None, metavar="F|all",
                   help="fold of the coronal model to start from (default: its only finished fold)")
    _add_run_options(p)


def _train_options(args: argparse.Namespace) -> TrainOptions:
    """The flags of :func:`_add_run_options` as :class:`~ts2d_xray.train.TrainOptions`."""
    from ts2d_xray.train import TrainOptions

    return TrainOptions(device=args.device, fold=args.fold, num_folds=args.folds, seed=args.seed,
                        resume=args.resume, num_workers=args.workers, progress=True)


def _overrides(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The configuration fields among ``names`` given on the command line (not None)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _finished(result: TrainResult, what: str, started: float) -> str:
    """The line printed after a training: checkpoint, ``what``, last validation Dice, time, log."""
    dice = result.history[-1].get("mean_dice") if result.history else None
    return (f"{result.final_checkpoint}: {what}"
            + (f", last validation mean Dice {dice:.3f}" if dice is not None else "")
            + f" ({time.perf_counter() - started:.0f} s); per-epoch log in {result.fold_dir / 'training_log.jsonl'}")


def run_train(args: argparse.Namespace) -> int:
    """Run ``train``."""
    from dataclasses import replace

    from ts2d_xray.train import get_config, train

    config = replace(get_config(args.config), **_overrides(args, "epochs", "iterations_per_epoch"))
    options = _train_options(args)
    started = time.perf_counter()
    result = train(args.dataset, args.output, config, options)
    if result.rank == 0:  # under torchrun: once
        print(_finished(result, f"{result.epochs} epochs of config {config.name}", started))
    return 0


def run_adapt(args: argparse.Namespace) -> int:
    """Run ``adapt``."""
    from ts2d_xray.train import adapt

    overrides = _overrides(args, "epochs", "iterations_per_epoch", "freeze_encoder_epochs")
    options = _train_options(args)
    started = time.perf_counter()
    result = adapt(args.coronal_model, args.dataset, args.output, options, coronal_fold=args.coronal_fold,
                   **overrides)
    if result.rank == 0:  # under torchrun: once
        print(_finished(result, f"X-ray model adapted from {args.coronal_model}, {result.epochs} epochs", started))
    return 0


def run_export_regions(args: argparse.Namespace) -> int:
    """Run ``export-regions``."""
    from ts2d_xray.dataset import export_regions

    out = export_regions(args.dataset, args.output)
    meta = json.loads((out / "dataset.json").read_text())
    print(f"{out}: {meta['numTraining']} cases, {len(meta['regions_class_order'])} regions (structures), "
          f"{meta['ts2d_export']['codes']} codes; train with nnUNetv2_plan_and_preprocess and nnUNetv2_train")
    return 0
