"""``ts2d-xray project``: a CT (and its labels) projected onto the coronal plane and written.

A thin layer over :func:`ts2d_xray.projection.project` and the writers of
:mod:`ts2d_xray.io`.  ``demo`` uses :func:`check_paths` and :func:`write_projection`
with its own typed values.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ts2d_xray.cli.argtypes import SubParsers, name_list, spacing_or_native
from ts2d_xray.cli.outputs import check_outputs
from ts2d_xray.image import Display
from ts2d_xray.projection import DEFAULT_SPACING_MM, Mode

if TYPE_CHECKING:
    from ts2d_xray.image import Image2D, LabelMap, Masks, Volume

__all__ = ["ProjectOutputs", "ProjectionOptions", "add_parser", "add_projection_options", "check_paths", "run",
           "write_projection"]


@dataclass(frozen=True)
class ProjectionOptions:
    """How ``project`` projects: the flags of :func:`add_projection_options`.

    Attributes:
        mode, spacing, display, min_voxels, min_mm: As :func:`ts2d_xray.projection.project`
            (``spacing`` in mm, None keeps the CT's).
        structures: Structures to keep (catalog or derived names), default all.
        v2: Rename TotalSegmentator v1 structures to v2 classes first.
    """

    mode: Mode = "ts2d"
    spacing: float | None = DEFAULT_SPACING_MM
    display: Display = "radiograph"
    min_voxels: int = 1
    min_mm: float | None = None
    structures: Sequence[str] | None = None
    v2: bool = False


@dataclass(frozen=True)
class ProjectOutputs:
    """The files ``project`` writes.

    Attributes:
        image: The 2-channel projection (``.nrrd`` or ``.nii.gz``).
        masks: Multi-label masks (``.seg.nrrd``, ``.nii.gz`` or a PNG folder); needs labels.
        preview: Overlay preview ``.png``.
        preview_structures: Structures drawn in the preview (default: those written).
    """

    image: Path
    masks: Path | None = None
    preview: Path | None = None
    preview_structures: Sequence[str] | None = None


def add_projection_options(p: argparse.ArgumentParser) -> None:
    """The flags of :class:`ProjectionOptions`."""
    p.add_argument("--mode", choices=("ts2d", "clean"), default=ProjectionOptions.mode,
                   help="ts2d: raw HU as TS2D's published projections (default); "
                        "clean: clipped HU, body only")
    p.add_argument("--spacing", type=spacing_or_native, default=ProjectionOptions.spacing, metavar="MM",
                   help=f"output pixel size in mm, or 'native' (default {ProjectionOptions.spacing:g})")
    p.add_argument("--display", choices=("radiograph", "ts2d"), default=ProjectionOptions.display,
                   help="radiograph: patient's right on the image left (default); "
                        "ts2d: patient's left on the image left, as TS2D stores projections")
    p.add_argument("--min-voxels", type=int, default=ProjectionOptions.min_voxels, metavar="N",
                   help="a ray belongs to a structure when it crosses at least N voxels of it "
                        f"(default {ProjectionOptions.min_voxels})")
    p.add_argument("--min-mm", type=float, default=None, metavar="MM",
                   help="path-length threshold in mm instead of --min-voxels")
    p.add_argument("--structures", type=name_list, default=None, metavar="A,B,...",
                   help="structures to write (catalog or derived names such as lungs, ribs, spine); "
                        "default: all in the labels")
    p.add_argument("--v2", action="store_true",
                   help="rename TotalSegmentator v1 structures to v2 classes (heart chambers -> heart)")


def add_parser(sub: SubParsers) -> None:
    """Register ``project``."""
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
    add_projection_options(p)


def run(args: argparse.Namespace) -> int:
    """Run ``project``; returns the exit code."""
    from ts2d_xray.io import read_ct, read_labels

    outputs = ProjectOutputs(args.output, args.labels_out, args.preview, args.preview_structures)
    check_paths(args.ct, args.labels, outputs)
    started = time.perf_counter()
    ct = read_ct(args.ct)
    labels = None if args.labels is None else read_labels(args.labels, classmap=args.classmap, reference=ct)
    options = ProjectionOptions(mode=args.mode, spacing=args.spacing, display=args.display,
                                min_voxels=args.min_voxels, min_mm=args.min_mm, structures=args.structures,
                                v2=args.v2)
    write_projection(ct, labels, source=args.ct, options=options, outputs=outputs, started=started)
    return 0


def check_paths(ct: Path, labels: Path | None, outputs: ProjectOutputs) -> None:
    """Refuse outputs that cannot be written, before anything is read (ValueError, InputError)."""
    from ts2d_xray.io.image2d import image_format
    from ts2d_xray.io.masks import mask_format

    if outputs.masks is not None and labels is None:
        raise ValueError("--labels-out needs --labels")
    check_outputs([ct, labels], [outputs.image, outputs.masks, outputs.preview])
    if image_format(outputs.image) == ".png":
        raise ValueError(f"{outputs.image}: the projection is written as .nrrd or .nii.gz; use --preview for a PNG")
    if outputs.masks is not None:
        mask_format(outputs.masks)
    if outputs.preview is not None and image_format(outputs.preview) != ".png":
        raise ValueError(f"{outputs.preview}: --preview writes a .png")


def write_projection(ct: Volume, labels: LabelMap | None, *, source: Path, options: ProjectionOptions,
                     outputs: ProjectOutputs, started: float | None = None) -> list[Path]:
    """Project ``ct`` (and ``labels``), write ``outputs`` and print one summary line.

    Args:
        source: The CT's path, named in the summary.
        started: ``time.perf_counter()`` when the work began (default: now), for the summary.

    Returns:
        The paths written.
    """
    from ts2d_xray.projection import project

    started = time.perf_counter() if started is None else started
    image, masks = project(ct, labels, mode=options.mode, spacing=options.spacing, display=options.display,
                           min_voxels=options.min_voxels, min_mm=options.min_mm)
    if masks is not None:
        if options.v2:
            masks = masks.to_v2()
        if options.structures:
            masks = _select(masks, options.structures)
    shown = _select(masks, outputs.preview_structures) if masks is not None and outputs.preview_structures else masks
    written = _write(image, masks, shown, outputs)
    h, w = image.plane.shape
    n = 0 if masks is None else int(masks.array.any(axis=(1, 2)).sum())
    print(f"{source}: {w}x{h} px at {image.plane.spacing[1]:.3g}x{image.plane.spacing[0]:.3g} mm, "
          f"{options.display} display, mode {options.mode}"
          + (f", {n} structures" if masks is not None else "")
          + f" ({time.perf_counter() - started:.1f} s) -> " + ", ".join(str(p) for p in written))
    return written


def _select(masks: Masks, names: Sequence[str]) -> Masks:
    """``masks.select(names)``, a structure absent from the labels being the user's mistake (ValueError)."""
    try:
        return masks.select(names)
    except KeyError as err:  # a catalog name none of whose structures the labels hold
        raise ValueError(err.args[0]) from None


def _write(image: Image2D, masks: Masks | None, shown: Masks | None, outputs: ProjectOutputs) -> list[Path]:
    """Write the projection, the masks and the preview; on any failure remove those already written."""
    from ts2d_xray.io import write_image2d, write_masks, write_preview
    from ts2d_xray.io.files import missing_folders, remove_empty, remove_tree

    # Everything is computed before the first file is written, and a failed write
    # removes what this run wrote (folders too): bad input or a full disk leaves no
    # partial result.
    targets = [p for p in (outputs.image, outputs.masks, outputs.preview) if p is not None]
    created = sorted({f for p in targets for f in missing_folders(p)}, key=lambda f: -len(f.parts))
    written: list[Path] = []
    try:
        written.append(write_image2d(image, outputs.image))
        if masks is not None and outputs.masks is not None:
            written.append(write_masks(masks, outputs.masks))
        if outputs.preview is not None:
            written.append(write_preview(image, outputs.preview, shown))
    except BaseException:
        for path in written:
            remove_tree(path) if path.is_dir() else path.unlink(missing_ok=True)
        remove_empty(created)
        raise
    return written
