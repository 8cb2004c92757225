"""Per-structure Dice of two X-ray models on the same new synthetic radiographs: does one cost the other's structures?

Both models segment the same DRRs (seeds the training builds never drew:
``evaluate_default_models.drr_samples``) of both training CTs, with the ``chest-pa`` and
``chest-ap-portable`` presets, and are scored against the masks rendered with them.
For each structure present in the ground truth, the mean Dice over the DRRs where it is
present, per model, and the difference; structures whose Dice drops by more than
``--tolerance`` are listed with the standard error of the paired difference (per-DRR
differences on the same DRRs), which says how much of a drop the sample size alone can
make.  Radiographic lung fields are scored only where both models have them.

Usage: ``.venv/bin/python scripts/compare_xray_models.py --old OLD_BUNDLE --new NEW_BUNDLE [--drrs 32]
[--json OUT.json]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from evaluate_default_models import DRR_PRESETS as PRESETS
from evaluate_default_models import drr_samples


def dice_per_structure(model: str, samples: list[tuple[str, str, Any]]) -> dict[str, dict[str, dict[int, float]]]:
    """Dice per structure and DRR (index into ``samples``; DRRs where the ground truth has it), per preset and overall."""
    from ts2d_xray import Segmenter
    from ts2d_xray.evaluate.metrics import dice

    found: dict[str, dict[str, dict[int, float]]] = {}
    with Segmenter(model=model, device="cpu") as seg:
        for index, (_, preset, sample) in enumerate(samples):
            result = seg(sample.image)
            truth = sample.masks
            for name in truth.names:
                gt = truth.mask(name)
                if not gt.any() or name not in result.masks.names:
                    continue
                score = dice(result.mask(name), gt)
                for key in (preset, "all"):
                    found.setdefault(key, {}).setdefault(name, {})[index] = score
    return found


def paired_difference(old: dict[int, float], new: dict[int, float]) -> tuple[float, float]:
    """Mean and standard error of ``new - old`` over the DRRs both scored (SE 0 for one DRR)."""
    d = np.array([new[i] - old[i] for i in sorted(set(old) & set(new))])
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()), se


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="model name or bundle path of the reference model")
    parser.add_argument("--new", required=True, help="model name or bundle path of the model to check")
    # 4 per CT and preset left a small structure's mean a few hundredths from where 32 put it.
    parser.add_argument("--drrs", type=int, default=32, help="DRRs per CT and preset (default 32)")
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest acceptable Dice drop")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    samples = drr_samples(args.drrs)
    old, new = dice_per_structure(args.old, samples), dice_per_structure(args.new, samples)
    rows = []
    for key in ("all", *PRESETS):
        common = sorted(set(old.get(key, {})) & set(new.get(key, {})))
        drops = {s: paired_difference(old[key][s], new[key][s]) for s in common}
        worse = {s: d for s, d in sorted(drops.items(), key=lambda kv: kv[1][0]) if d[0] < -args.tolerance}
        mean_old = float(np.mean([np.mean(list(old[key][s].values())) for s in common]))
        mean_new = float(np.mean([np.mean(list(new[key][s].values())) for s in common]))
        rows.append({"drrs": key, "structures": len(common), "mean_dice_old": mean_old, "mean_dice_new": mean_new,
                     "better": sum(d > args.tolerance for d, _ in drops.values()), "worse": len(worse),
                     "worse_structures": {s: {"difference": round(d, 3), "standard_error": round(se, 3)}
                                          for s, (d, se) in worse.items()}})
        print(f"{key}: {len(common)} structures, mean Dice {mean_old:.3f} -> {mean_new:.3f}; "
              f"{rows[-1]['better']} better by > {args.tolerance}, {len(worse)} worse by > {args.tolerance}"
              + (f": {', '.join(f'{s} {d:+.3f} (SE {se:.3f})' for s, (d, se) in list(worse.items())[:12])}"
                 if worse else ""))
    if args.json:
        args.json.write_text(json.dumps({"old": args.old, "new": args.new, "drrs_per_ct_and_preset": args.drrs,
                                         "summary": rows, "old_dice": old, "new_dice": new}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
