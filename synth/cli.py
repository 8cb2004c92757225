"""``ts2d-xray synth`` subcommands: a thin argparse layer over :mod:`synth.build`.

``synth build`` writes nnU-Net v2 raw data sets (see ``docs/dataset_format.md``);
``synth drr`` writes a few synthetic radiographs of one CT with previews.  Heavy modules
are imported only when a command runs.  Exit codes follow ``ts2d-xray``: 0 success,
1 some cases failed, 2 bad input (one-line message, nothing written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ts2d_xray.cli.argtypes import non_negative_int, pixel_shape, positive_int, spacing_mm

__all__ = ["add_parser", "run"]


def _groups(text: str) -> tuple[str, ...]:
    return tuple(g.strip() for g in text.split(",") if g.strip())


def add_parser(sub: Any) -> None:
    """Register ``synth`` and its subcommands on the ``ts2d-xray`` subparsers (``add_subparsers()``'s action)."""
    synth = sub.add_parser("synth", help="synthetic training data: nnU-Net data sets and DRRs")
    commands = synth.add_subparsers(dest="synth_command", required=True, metavar="SYNTH_COMMAND")

    b = commands.add_parser("build", help="build an nnU-Net v2 raw data set from labelled CTs")
    b.add_argument("source", type=Path, metavar="SOURCE",
                   help="folder of subjects (<subject>/ct.nii.gz + segmentations/) or a list file "
                        "with lines ct_path,labels_path[,classmap]")
    b.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="data set folder (one data set per group in OUT/<group>/ unless --groups all)")
    b.add_argument("--kind", choices=("coronal", "xray"), required=True,
                   help="coronal: TS2D projection [mean, max] in HU; xray: synthetic radiograph in [0, 1]")
    b.add_argument("--preset", default=None, metavar="P", help="X-ray preset (--kind xray)")
    b.add_argument("--per-ct", type=positive_int, default=1, metavar="N",
                   help="cases per CT (default 1; coronal allows more only with --deform)")
    b.add_argument("--deform", action="store_true",
                   help="warp each CT and its labels with a random 3D affine + elastic deformation before "
                        "projecting or rendering (case 0 of each CT stays the original scan)")
    b.add_argument("--groups", type=_groups, default=("all",), metavar="G,G,...|all",
                   help="TS2D groups (organs, vertebrae, cardiac, muscles, ribs), one data set each, "
                        "or 'all' for one data set with every structure (default)")
    b.add_argument("--workers", type=positive_int, default=1, metavar="W",
                   help="worker processes (default 1: build in this process)")
    b.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="base random seed (default 0)")
    b.add_argument("--scheduler", default=None, metavar="ADDRESS|local[:N]",
                   help="dask.distributed scheduler address (e.g. tcp://host:8786), or local[:N] for a local "
                        "cluster of N worker processes (default: one per CPU); overrides --workers")
    b.add_argument("--spacing", type=spacing_mm, default=None, metavar="MM",
                   help="pixel size of coronal projections in mm (default 1.5)")
    b.add_argument("--shape", type=pixel_shape, default=None, metavar="H,W",
                   help="detector size in pixels of X-ray cases (default: the preset's)")

    d = commands.add_parser("drr", help="write synthetic radiographs of one CT, with previews")
    d.add_argument("ct", type=Path, metavar="CT", help="CT: NIfTI, NRRD, MHA file or DICOM series folder")
    d.add_argument("--labels", type=Path, default=None, metavar="L",
                   help="TotalSegmentator subject folder / folder of masks, or a multilabel map")
    d.add_argument("--classmap", default=None, metavar="v1|v2|FILE", help="ids of a multilabel map")
    d.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR", help="new output folder")
    d.add_argument("--preset", required=True, metavar="P", help="X-ray preset")
    d.add_argument("-n", type=positive_int, default=1, metavar="N", help="number of radiographs (default 1)")
    d.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="random seed (default 0)")
    d.add_argument("--shape", type=pixel_shape, default=None, metavar="H,W", help="detector size in pixels")


def run(args: argparse.Namespace) -> int:
    """Run the ``synth`` subcommand parsed by :func:`add_parser`; returns the exit code."""
    return {"build": _run_build, "drr": _run_drr}[args.synth_command](args)


def _run_build(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from synth.build import BuildOptions, SampleSpec, build
    from synth.deform import DeformSpec
    from ts2d_xray.projection import DEFAULT_SPACING_MM

    if args.kind == "xray" and args.spacing is not None:
        raise ValueError("--spacing is for --kind coronal; an X-ray preset sets its own detector spacing")
    spec = SampleSpec(kind=args.kind, preset=args.preset, seed=args.seed, shape=args.shape,
                      spacing=DEFAULT_SPACING_MM if args.spacing is None else args.spacing,
                      deform=DeformSpec() if args.deform else None)
    options = BuildOptions(spec=spec, groups=args.groups, per_ct=args.per_ct, workers=args.workers,
                           scheduler=args.scheduler, progress=True)
    with logging_redirect_tqdm():  # failure messages above the bar, not through it
        report = build(args.source, args.output, options)
    folders = ", ".join(str(p) for p in report.datasets)
    print(f"synth build: {len(report.done)} done, {len(report.skipped)} skipped (already there), "
          f"{len(report.failed)} failed -> {folders}")
    for case_id, message in report.failed:
        print(f"failed: {case_id}: {message}", file=sys.stderr)
    return 0 if report.ok else 1


def _run_drr(args: argparse.Namespace) -> int:
    from synth.presets import load_preset

    load_preset(args.preset)  # an unknown name raises, listing the presets
    out = args.output
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not an empty folder; choose a new output folder")
    if args.classmap is not None and args.labels is None:
        raise ValueError("--classmap needs --labels")
    written = _write_drrs(args)
    print(f"synth drr: {args.n} radiographs of {args.ct} (preset {args.preset}) -> {out} ({written} files)")
    return 0


def _write_drrs(args: argparse.Namespace) -> int:
    """Render ``args.n`` radiographs into a new output folder, filled whole or not at all.

    Radiograph ``i`` draws from ``case_rng(seed, "drr_<i:03d>")``, as a data set case
    would.  Returns the number of files written.
    """
    from synth.case import case_rng
    from synth.drr import prepare, save_sample, synthesize
    from ts2d_xray.io import read_ct, read_labels
    from ts2d_xray.io.files import new_folder, write_json

    ct = read_ct(args.ct)
    labels = None if args.labels is None else read_labels(args.labels, classmap=args.classmap, reference=ct)
    prepared = prepare(ct, labels)  # once for all N radiographs
    with new_folder(args.output) as temp:  # an empty existing folder is replaced
        params = []
        for i in range(args.n):
            name = f"drr_{i:03d}"
            sample = synthesize(prepared, preset=args.preset, rng=case_rng(args.seed, name), shape=args.shape)
            save_sample(sample, temp, name)
            params.append({"image": f"{name}.nii.gz", "params": sample.params})
        write_json(temp / "params.json",
                   {"ct": str(args.ct), "labels": None if args.labels is None else str(args.labels),
                    "preset": args.preset, "seed": args.seed, "samples": params})
    return sum(1 for _ in args.output.iterdir())
