"""``ts2d-xray evaluate``: a thin layer over :func:`ts2d_xray.evaluate.evaluate`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ts2d_xray.cli.argtypes import SubParsers, name_list
from ts2d_xray.cli.outputs import check_folder, check_outputs
from ts2d_xray.measure import MIN_PRESENT_AREA_MM2

__all__ = ["HD95_CHOICES", "add_parser", "run"]

#: ``--hd95`` values, the default first (those of ``ts2d_xray.evaluate.HD95_VARIANTS``; spelled out here so
#: that ``--help`` does not import the evaluation code).
HD95_CHOICES = ("pooled", "max-directed")


def add_parser(sub: SubParsers) -> None:
    """Register ``evaluate``."""
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
    e.add_argument("--min-area", type=float, default=MIN_PRESENT_AREA_MM2, metavar="MM2",
                   help=f"a structure is present when its mask covers at least MM2 mm^2 "
                        f"(default {MIN_PRESENT_AREA_MM2:g})")
    e.add_argument("--hd95", choices=HD95_CHOICES, default=HD95_CHOICES[0],
                   help="HD95 variant: 'pooled' (default): 95th percentile of both directed boundary distances "
                        "pooled; 'max-directed': the larger of the two directed 95th percentiles, as MONAI and "
                        "DeepMind's surface-distance compute it")


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``: with ``-o``, write the report files; then print the table (and notes)."""
    from ts2d_xray.evaluate import evaluate

    if args.classmap is not None and not args.vs_3d:
        raise ValueError("--classmap gives the ids of 3D labels: use it with --vs-3d")
    if args.map is not None and args.vs_3d:
        raise ValueError("--map renames 2D masks; 3D labels (--vs-3d) use catalog names")
    if args.output is not None:
        check_outputs([args.pred, args.gt, args.map], [args.output])
        check_folder(args.output)
    started = time.perf_counter()
    report = evaluate(args.pred, args.gt, args.map, structures=args.structures, vs_3d=args.vs_3d,
                      classmap=args.classmap, min_area_mm2=args.min_area, hd95_variant=args.hd95)
    # The files first: a closed pipe or an interrupt while printing must not lose them.
    written = report.save(args.output) if args.output is not None else None
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    if written is not None:
        print(f"({time.perf_counter() - started:.1f} s) -> " + ", ".join(str(p) for p in written))
    return 0
