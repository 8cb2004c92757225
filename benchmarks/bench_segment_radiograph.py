"""Benchmark: segmenting one 2048 x 2048 radiograph end to end, all structures and all formats, and a subset.

The input is the shared data's 1841 x 1955 DICOM CR (``pydicomdata_RG1_UNCR``) resized to
2048 x 2048 and written as an uncompressed DICOM CR (its header kept), so that every
output format applies (``dicom-seg`` too).  The bundled X-ray model (117 structures)
segments it:

* **in process, warm** (one ``Segmenter``, after a warm-up call): ``seg(path)`` then
  ``result.save(folder, formats)`` into a new folder; median (best) of N runs, for all
  structures with all formats, and for ``structures=["lungs", "heart"]`` with the
  default formats.  *old path* repeats the first with the probability maps upsampled
  whole, as before issue 14 (every map bilinear to full resolution, then thresholded),
  in the same run, for the ratio.
* **CLI**: whole ``ts2d-xray segment`` processes (Python start, imports, model load,
  segmentation, files), median of N.
* ``--baseline MODEL``: segmentation alone with another model (e.g. a previous bundle) in
  the same run, for the ratio.

Run: python benchmarks/bench_segment_radiograph.py [--runs 5] [--cli-runs 3] [--size 2048] [--baseline MODEL]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ts2d_xray import Segmenter
from ts2d_xray.examples import shared_data
from ts2d_xray.segment.result import FORMATS

SOURCE = ("xray", "dicom", "pydicomdata_RG1_UNCR_cr_chest_monochrome1.dcm")
SUBSET = ["lungs", "heart"]


def make_input(folder: Path, size: int) -> Path:
    """The CR resized to ``size`` x ``size`` (bilinear), uncompressed, its header otherwise kept."""
    import pydicom
    from PIL import Image
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.dcmread(shared_data(*SOURCE, required=True))
    pixels = Image.fromarray(ds.pixel_array.astype(np.float32)).resize((size, size), Image.BILINEAR)
    ds.PixelData = np.clip(np.asarray(pixels), 0, 2 ** int(ds.BitsStored) - 1).astype(np.uint16).tobytes()
    ds.Rows = ds.Columns = size
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"cr_{size}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def timed(call: Callable[[], object], runs: int) -> list[float]:
    """Seconds of ``runs`` calls after one warm-up."""
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def whole_maps() -> Iterator[None]:
    """The old path: every probability map upsampled to full resolution, then thresholded."""
    import torch
    import torch.nn.functional as F

    import ts2d_xray.segment.groups as groups

    def add_masks(masks: np.ndarray, probs: torch.Tensor, thresholds: list[float], rows: list[int]) -> None:
        # The code before issue 14: whole maps, 256 MiB of them at a time.
        h, w = masks.shape[1:]
        limits = probs.new_tensor(thresholds)[:, None, None]
        per_chunk = max(1, 256 * 2**20 // (4 * h * w))
        for k0 in range(0, len(rows), per_chunk):
            up = F.interpolate(probs[None, k0:k0 + per_chunk], size=(h, w), mode="bilinear", align_corners=False)[0]
            inside = (up >= limits[k0:k0 + per_chunk]).numpy()
            for k, row in enumerate(rows[k0:k0 + per_chunk]):
                masks[row] |= inside[k]

    original = groups.add_masks
    groups.add_masks = add_masks
    try:
        yield
    finally:
        groups.add_masks = original


def in_process(path: Path, out: Path, runs: int, baseline: str | None = None) -> dict[str, list[float]]:
    """Warm ``seg(path)`` + ``save`` for all structures and formats, the subset, the old path, the baseline model."""
    every = list(FORMATS)
    counter = iter(range(10**6))
    rows: dict[str, list[float]] = {}
    with Segmenter("ts2d-xray-xray", device="cpu") as seg:
        rows["all structures, all formats"] = timed(lambda: seg(path).save(out / f"a{next(counter)}", every), runs)
        rows["all structures, segmentation only"] = timed(lambda: seg(path), runs)
        with whole_maps():
            rows["old path: all structures, segmentation only"] = timed(lambda: seg(path), runs)
            rows["old path: all structures, all formats"] = timed(
                lambda: seg(path).save(out / f"o{next(counter)}", every), runs)
    with Segmenter("ts2d-xray-xray", device="cpu", structures=SUBSET) as seg:
        rows["lungs,heart, default formats"] = timed(lambda: seg(path).save(out / f"s{next(counter)}"), runs)
    if baseline:
        with Segmenter(baseline, device="cpu") as seg:
            rows["baseline model: all structures, segmentation only"] = timed(lambda: seg(path), runs)
    return rows


def cli(path: Path, out: Path, runs: int) -> dict[str, list[float]]:
    """Whole ``ts2d-xray segment`` processes."""
    exe = str(Path(sys.executable).with_name("ts2d-xray"))
    rows: dict[str, list[float]] = {}
    for label, extra in (("CLI: all structures, all formats", ["--format", ",".join(FORMATS)]),
                         ("CLI: --structures lungs,heart", ["--structures", ",".join(SUBSET)])):
        times = []
        for n in range(runs):
            start = time.perf_counter()
            subprocess.run([exe, "-q", "segment", str(path), "-o", str(out / f"cli{label[:8]}{n}"), "--device", "cpu",
                            *extra], check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        rows[label] = times
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm in-process runs per case (default 5)")
    parser.add_argument("--cli-runs", type=int, default=3, help="whole CLI processes per case (default 3)")
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels (default 2048)")
    parser.add_argument("--baseline", default=None, help="another model (name or bundle) to time segmentation with")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the CR's spacing is a guess: warned about, expected here
    with tempfile.TemporaryDirectory() as tmp:
        path = make_input(Path(tmp), args.size)
        rows = {**in_process(path, Path(tmp), args.runs, args.baseline), **cli(path, Path(tmp), args.cli_runs)}
    print(f"{args.size} x {args.size} radiograph, bundled X-ray model, CPU: median (best) seconds")
    for label, times in rows.items():
        print(f"| {label} | {statistics.median(times):.2f} s ({min(times):.2f} s) |")
    old = statistics.median(rows["old path: all structures, segmentation only"])
    new = statistics.median(rows["all structures, segmentation only"])
    print(f"segmentation alone: {old / new:.1f}x faster than the old path")
    if args.baseline:
        base = statistics.median(rows["baseline model: all structures, segmentation only"])
        print(f"segmentation alone: {new / base:.2f}x the time of the baseline model {args.baseline}")


if __name__ == "__main__":
    main()
