"""Benchmark: writing segment's outputs of one radiograph (``Result.save``, per format).

Segments the input once with a model (default: the bundled X-ray model, 117 structures),
then times ``Result.save`` of each format alone and of all together, into a new folder
each time: the median and the best of N runs after one warm-up.  Runs with any version
of ts2d-xray that has ``Result.save`` (formats it lacks are skipped), so the same command
measures before and after a change (``PYTHONPATH=<old checkout>``).

Run: python benchmarks/bench_outputs.py [--input FILE] [--model NAME] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from ts2d_xray import Segmenter
from ts2d_xray.examples import shared_data_dir
from ts2d_xray.segment.result import FORMATS

DEFAULT_INPUT = "xray/dicom/pydicomdata_RG1_UNCR_cr_chest_monochrome1.dcm"


def seconds(save, formats: list[str], runs: int) -> list[float]:
    """Seconds of ``save(folder, formats)`` into a new folder, ``runs`` times after a warm-up."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(runs + 1):
            start = time.perf_counter()
            save(Path(tmp) / f"run{n}", formats)
            times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=None, help=f"default: the shared data's {DEFAULT_INPUT}")
    parser.add_argument("--model", default="ts2d-xray-xray")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    source = args.input or shared_data_dir() / DEFAULT_INPUT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the assumed spacing of a CR without one
        with Segmenter(args.model, device="cpu") as seg:
            result = seg(source)
    h, w = result.masks.plane.shape
    print(f"{source.name}: {w}x{h} px, {len(result.names)} structures ({len(result.present)} present)")
    formats = [f for f in FORMATS if f != "dicom-seg" or getattr(result, "is_dicom_radiograph", False)]
    for label, chosen in [(f, [f]) for f in formats] + [("all", formats)]:
        times = seconds(result.save, chosen, args.runs)
        print(f"| {label} | {statistics.median(times):.2f} s | {min(times):.2f} s |")


if __name__ == "__main__":
    main()
