"""``ts2d-xray segment`` and ``ts2d-xray models``: thin layers over
:class:`ts2d_xray.Segmenter` and :mod:`ts2d_xray.segment.models`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ts2d_xray.cli.argtypes import SubParsers, name_list, spacing_mm, spacing_pair_mm
from ts2d_xray.cli.outputs import check_folder, check_outputs

from ts2d_xray.errors import InputError

if TYPE_CHECKING:
    from ts2d_xray.segment import Result
    from ts2d_xray.segment.batch import SegmentJob

__all__ = ["add_parser", "run_models", "run_segment", "segment_summary"]

#: ``--invert`` -> :attr:`ts2d_xray.segment.segmenter.SegmentOptions.invert`.
_INVERT = {"auto": None, "yes": True, "no": False}


def add_parser(sub: SubParsers) -> None:
    """Register ``segment`` and ``models``."""
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
                   help="outputs among seg.nrrd, dicom-seg, nifti, png, overlay, json (default seg.nrrd,overlay,json, "
                        "plus dicom-seg for DICOM radiographs; dicom-seg: DICOM radiographs only; nifti: one "
                        ".nii.gz per structure in segmentations/)")
    s.add_argument("--structures", type=name_list, default=None, metavar="A,B,...",
                   help="compute and write only these structures: catalog classes or derived names such as lungs "
                        "(its lobes), ribs; only the group models that predict them run (default: all)")
    s.add_argument("--groups", type=name_list, default=None, metavar="G,...",
                   help="run only these group models of the bundle (default: all; `models info` lists them)")
    s.add_argument("--spacing", type=spacing_pair_mm, default=None, metavar="MM|ROW,COL",
                   help="pixel spacing of 2D radiographs at the patient in mm, replacing the file's (or the "
                        "430 mm field-of-view guess of files without one)")
    s.add_argument("--fast", action="store_true",
                   help="published TS2D models: pad only to the network's stride, not the full patch (faster; "
                        "not TS2D's exact masks)")
    s.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="what runs the networks: onnx (ONNX Runtime on the CPU, pip install 'ts2d-xray[onnx]'), "
                        "torch, or auto (default: onnx on a CPU when installed)")
    s.add_argument("--tta", action="store_true", help="test-time augmentation (slower; off by default)")
    s.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="sigmoid threshold for every structure (default: the model's, usually 0.5)")
    s.add_argument("--invert", choices=tuple(_INVERT), default="auto",
                   help="radiographs: invert as the DICOM header says (auto), always, or never "
                        "(for a MONOCHROME1 file whose pixels are not inverted)")
    s.add_argument("--trust-checkpoint", action="store_true",
                   help="load checkpoints that torch.load(weights_only=True) refuses (can run code "
                        "from the file: only for models from a trusted source)")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS|local[:N]",
                   help="segment on a dask.distributed cluster: a scheduler address (tcp://host:8786; its "
                        "workers must see the same paths and models) or local[:N] for N local worker "
                        "processes (default: one per CPU); same outputs as without it")
    _add_models_parser(sub)


def _add_models_parser(sub: SubParsers) -> None:
    m = sub.add_parser("models", help="list, install, describe or remove segmentation models")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    msub.add_parser("list", help="list the installed and bundled models")
    i = msub.add_parser("install", help="install a model bundle (folder or .zip, ours or a TS2D/TSXR zip)")
    i.add_argument("source", type=Path, metavar="ZIP_OR_DIR")
    i.add_argument("--name", default=None, help="installed name (default: the manifest's, else the file name)")
    i.add_argument("--force", action="store_true", help="replace an installed model of the same name")
    i.add_argument("--display", choices=("radiograph", "ts2d"), default=None,
                   help="display convention of a model without a manifest (default: inferred)")
    i.add_argument("--trust-checkpoint", action="store_true",
                   help="accept checkpoints holding Python objects (only for a model you trust: loading it can "
                        "run code from the file)")
    n = msub.add_parser("info", help="describe a model (installed name or path)")
    n.add_argument("name", metavar="NAME_OR_PATH")
    r = msub.add_parser("remove", help="remove an installed model")
    r.add_argument("name", metavar="NAME")


# --- segment ------------------------------------------------------------------------
def run_segment(args: argparse.Namespace) -> int:
    """Run ``segment``: 0 all done, 1 some inputs failed, 2 all failed (or bad input, raised)."""
    from ts2d_xray.kinds import INPUT_MODEL_KIND
    from ts2d_xray.segment import SegmentOptions, default_model
    from ts2d_xray.segment.batch import SegmentJob, cached_segmenter, forget_segmenters, model_specs
    from ts2d_xray.segment.inputs import expand_inputs, inspect_input, output_stems
    from ts2d_xray.segment.result import check_formats
    from ts2d_xray.segment.segmenter import model_checksum

    formats = check_formats(args.format) if args.format else None  # None: each result's default_formats
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise ValueError(f"--threshold must be in (0, 1), got {args.threshold}")
    paths = expand_inputs(args.inputs)
    stems = output_stems(paths)
    check_outputs(paths, [args.output / s for s in stems])
    check_folder(args.output)
    # Every header is read and every model loaded before the first output is written.
    infos = [inspect_input(p) for p in paths]
    if args.spacing is not None:
        for info in infos:
            if info.kind != "radiograph":
                raise InputError(info.path, f"--spacing is for radiographs; this {info.kind} carries its own spacing")
    specs = model_specs([args.model if args.model else default_model(INPUT_MODEL_KIND[i.kind]) for i in infos])
    options = SegmentOptions(device=args.device, groups=args.groups, structures=args.structures, tta=args.tta,
                             threshold=args.threshold, invert=_INVERT[args.invert],
                             trust_checkpoint=args.trust_checkpoint, exact=not args.fast, backend=args.backend)
    try:
        # Loaded in this process, which is also the worker of a local run (the cache serves both).
        segmenters = {spec: cached_segmenter(spec, options) for spec in dict.fromkeys(specs)}
        for path, spec in zip(paths, specs):
            segmenters[spec].check(path)
        out = args.output.absolute()
        jobs = [SegmentJob(p, out / stem, spec, options, formats, args.spacing,
                           model_checksum(segmenters[spec].manifest)) for p, stem, spec in zip(paths, stems, specs)]
        failed = _segment_all(jobs, [args.output / s for s in stems], [len(segmenters[s].groups) for s in specs],
                              args.scheduler)
    finally:
        forget_segmenters()
    if failed:
        return 2 if failed == len(paths) else 1
    return 0


def _segment_all(jobs: Sequence[SegmentJob], outs: Sequence[Path], models: Sequence[int],
                 scheduler: str | None) -> int:
    """Run the jobs here or on ``scheduler``'s cluster, one line per input in input order; returns how many failed.

    ``outs``: the output folders as the user named them (for the lines); ``models``: the
    group models each job runs (the bar's steps).  With several inputs a bad one is
    reported and skipped; a single bad input raises, as does an output that cannot be written.
    """
    from tqdm import tqdm

    from ts2d_xray.parallel import open_runner
    from ts2d_xray.segment.batch import forget_segmenters, segment_job

    failed = 0
    with open_runner(scheduler, cleanup=forget_segmenters) as run, \
            tqdm(total=sum(models), unit="model", desc="segment", disable=None, leave=False) as bar:
        outcomes = run(segment_job, jobs, labels=[p.name for p in outs], ordered=True)
        try:
            for done in outcomes:
                job = jobs[done.index]
                bar.update(models[done.index])
                if not done.ok:
                    if not done.lost:
                        raise done.error  # a bug, as in a local run
                    message = f"{job.path}: {done.describe()}"
                elif done.value.report is None:
                    if done.value.output_error is not None or len(jobs) == 1:
                        done.value.raise_error()
                    message = f"{InputError(*done.value.error)}"
                else:
                    tqdm.write(segment_summary(job.path, done.value.report, done.value.seconds, outs[done.index]))
                    continue
                failed += 1
                tqdm.write(f"ts2d-xray segment: error: {message}", file=sys.stderr)
        finally:
            outcomes.close()  # the runner cancels the inputs not yet started
    return failed


def segment_summary(path: Path, result: Result | Mapping[str, Any], seconds: float, out: Path) -> str:
    """One line per input: size, kind, structures present, body regions, CTR, time, output folder.

    ``result``: the Result, or its :meth:`~ts2d_xray.segment.result.Result.report` (what a
    worker sends back).  A guessed pixel spacing reads ``mm (assumed)``; a flagged result
    ends in ``NOT TRUSTED (no CTR): <reasons>`` instead of a CTR (:mod:`ts2d_xray.segment.trust`).
    """
    report = result if isinstance(result, Mapping) else result.report()
    h, w = report["image"]["shape_hw"]
    row, col = report["image"]["spacing_mm"]
    assumed = " (assumed)" if report["trust"]["spacing_assumed"] else ""
    line = (f"{path}: {w}x{h} px at {col:.3g}x{row:.3g} mm{assumed}, {report['input_kind']}, "
            f"model {report['model']}, {len(report['present'])}/{len(report['structures'])} structures")
    if report["body_regions"]:
        line += ", regions " + "+".join(report["body_regions"])
    if report["cardiothoracic_ratio"]:
        line += f", CTR {report['cardiothoracic_ratio']['ctr']:.2f}"
    if report["trust"]["flagged"]:
        line += ", NOT TRUSTED (no CTR): " + "; ".join(report["trust"]["reasons"])
    return line + f" ({seconds:.1f} s) -> {out}"


# --- models -------------------------------------------------------------------------
def run_models(args: argparse.Namespace) -> int:
    """Run ``models list|install|info|remove``."""
    if args.models_command == "list":
        _list_models()
    elif args.models_command == "install":
        from ts2d_xray.segment.models import install_model, model_home

        m = install_model(args.source, args.name, force=args.force, display=args.display, trust=args.trust_checkpoint)
        print(f"installed {m.name}: {m.kind}, {len(m.groups)} group(s), {len(m.structures)} structures "
              f"-> {model_home() / 'models' / m.name}")
    elif args.models_command == "info":
        _describe_model(args.name)
    else:
        from ts2d_xray.segment.models import remove_model

        remove_model(args.name)
        print(f"removed {args.name}")
    return 0


def _list_models() -> None:
    from ts2d_xray.segment.models import bundled_models, installed_summary, list_models

    models = list_models()
    if not models:
        print(installed_summary())
    installed = {m.name for m in models}
    shipped = [m for m in bundled_models() if m.name not in installed]
    for m, where in [(m, "") for m in models] + [(m, " (bundled)") for m in shipped]:
        print(f"{m.name}{where}: {m.kind}, {len(m.groups)} group(s) ({', '.join(m.group_names)}), "
              f"{len(m.structures)} structures, {m.spacing_mm[0]:g}x{m.spacing_mm[1]:g} mm, {m.display} display"
              + (f" - {m.description}" if m.description else ""))


def _describe_model(name: str) -> None:
    from ts2d_xray.segment.models import open_model

    with open_model(name) as bundle:
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
