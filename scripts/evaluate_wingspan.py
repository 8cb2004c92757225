"""Score an X-ray model on the Wingspan validation split: lung field and heart Dice, CTR error.

Wingspan (shared data ``xray/wingspan/``) has manual masks of the right and left
*radiographic lung fields* and of the heart silhouette, and the authors' cardiothoracic
ratio (CTR) for 185 of its 220 films.  The split is ``configs/wingspan_split.json``
(``scripts/make_wingspan_split.py``); only its validation part is scored by default.

* **Lung field Dice:** a model without ``lung_field_right``/``lung_field_left`` is scored
  with the union of its lung lobes on each side (``lung_right``, ``lung_left``) as the
  proxy for the radiographic lung field.  That proxy is the whole projected lung, so it
  also covers the lung behind the heart and below the diaphragm dome, which the
  Wingspan masks exclude: it is what such a model is asked, not what it was trained on.
* **Heart Dice:** the model's ``heart_silhouette`` (or, for a model without one, its
  ``heart``) against the cardiac silhouette.
* **CTR error:** :func:`ts2d_xray.measure.cardiothoracic_ratio` of the model's masks
  against the authors' value, mean absolute error over the films with both (films
  where the model gives no CTR are counted apart).  The same function on the manual
  masks gives the definition's own error (``manual masks`` row).
* **Standard errors:** each mean is printed ``± SE`` (sample SD over the films / sqrt(n)):
  how far a group's mean may lie from what the same vendor's films give in general (a
  group of 3-4 films: about 0.01-0.02 of Dice).
* **Flagged:** films that :mod:`ts2d_xray.segment.trust` flags (their report gives no CTR).

Per vendor group (the first four UID components of the file name) and overall.

Usage: ``.venv/bin/python scripts/evaluate_wingspan.py [--model NAME] [--part validation|train|all]
[--tta] [--json OUT.json]``
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from make_wingspan_split import SPLIT_FILE, vendor_prefix

#: Wingspan mask folders -> structure names.
TRUTH = {"right_lung": "lung_field_right", "left_lung": "lung_field_left", "heart": "heart_silhouette"}


def read_truth(wingspan: Path, name: str, plane: Any) -> Any:
    """The manual masks of one film as :class:`~ts2d_xray.image.Masks` on the film's plane."""
    from PIL import Image

    from ts2d_xray.image import Masks

    layers = [np.asarray(Image.open(wingspan / "mask" / folder / name).convert("L")) > 127 for folder in TRUTH]
    return Masks(np.stack(layers), tuple(TRUTH.values()), plane)


def labelled_films(wingspan: Path, names: Sequence[str]) -> list[Any]:
    """Films with their manual masks, for a training data set (:mod:`ts2d_xray.dataset.films`).

    Case ids are ``wingspan_<file stem>``; each film labels the structures of :data:`TRUTH`.
    """
    from ts2d_xray.dataset.films import LabelledFilm

    return [LabelledFilm(f"wingspan_{Path(n).stem}", wingspan / "png" / n,
                         {s: wingspan / "mask" / folder / n for folder, s in TRUTH.items()}, {"wingspan_name": n})
            for n in names]


def authors_ctr(wingspan: Path) -> dict[str, float]:
    """The authors' CTR by file name (``ctr.csv``)."""
    with open(wingspan / "ctr.csv", newline="") as f:
        return {row["id"]: float(row["ctr"]) for row in csv.DictReader(f)}


def score_film(result: Any, truth: Any, reference: float | None) -> dict[str, Any]:
    """Dice of the lung fields and heart, and the CTRs of one film."""
    from ts2d_xray.evaluate.metrics import dice
    from ts2d_xray.measure import cardiothoracic_ratio, heart_name, heart_silhouette, lung_field_names, lung_fields

    found, heart = lung_fields(result.masks), heart_silhouette(result.masks)
    if found is None or heart is None:
        raise KeyError("the model has no lung fields or lung lobes, or no heart")
    right, left = found
    fields, heart_from = "/".join(lung_field_names(result.masks)), heart_name(result.masks)
    model_ctr = cardiothoracic_ratio(result.masks)
    manual_ctr = cardiothoracic_ratio(truth)
    return {"lung_field_right": dice(right, truth.mask("lung_field_right")),
            "lung_field_left": dice(left, truth.mask("lung_field_left")),
            "heart": dice(heart, truth.mask("heart_silhouette")), "fields_from": fields, "heart_from": heart_from,
            "ctr_authors": reference, "ctr_model": model_ctr and model_ctr["ctr"],
            "ctr_manual": manual_ctr and manual_ctr["ctr"], "flagged": result.trust.flagged,
            "reasons": list(result.trust.reasons)}


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of a mean over films (sample SD / sqrt(n)); None for fewer than 2 films."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over films: Dice per structure, CTR mean absolute errors, counts; ``*_se``: their standard errors."""
    with_ctr = [r for r in rows if r["ctr_authors"] is not None]
    model = [abs(r["ctr_model"] - r["ctr_authors"]) for r in with_ctr if r["ctr_model"] is not None]
    manual = [abs(r["ctr_manual"] - r["ctr_authors"]) for r in with_ctr if r["ctr_manual"] is not None]
    fields = [(r["lung_field_right"] + r["lung_field_left"]) / 2 for r in rows]
    hearts = [r["heart"] for r in rows]
    return {"films": len(rows), "lung_field_dice": float(np.mean(fields)), "lung_field_dice_se": standard_error(fields),
            "lung_field_right_dice": float(np.mean([r["lung_field_right"] for r in rows])),
            "lung_field_left_dice": float(np.mean([r["lung_field_left"] for r in rows])),
            "heart_dice": float(np.mean(hearts)), "heart_dice_se": standard_error(hearts),
            "ctr_films": len(with_ctr), "ctr_mae": float(np.mean(model)) if model else None,
            "ctr_mae_se": standard_error(model),
            "ctr_missing": len(with_ctr) - len(model),
            "ctr_mae_manual_masks": float(np.mean(manual)) if manual else None,
            "flagged": sum(r["flagged"] for r in rows)}


def _mean(value: float, se: float | None) -> str:
    return f"{value:.3f}" + ("" if se is None else f" ± {se:.3f}")


def table(groups: dict[str, dict[str, Any]]) -> str:
    """The Markdown table of docs/models.md: one row per vendor group, then all films (means ± standard errors)."""
    lines = ["| vendor group (UID root) | films | lung fields Dice (R, L) | heart Dice | CTR MAE (films) | "
             "CTR MAE, manual masks | flagged |", "|---|---|---|---|---|---|---|"]
    for name, s in groups.items():
        mae = "-" if s["ctr_mae"] is None else \
            f"{_mean(s['ctr_mae'], s['ctr_mae_se'])} ({s['ctr_films'] - s['ctr_missing']})"
        manual = "-" if s["ctr_mae_manual_masks"] is None else f"{s['ctr_mae_manual_masks']:.4f}"
        lines.append(f"| {name} | {s['films']} | {_mean(s['lung_field_dice'], s['lung_field_dice_se'])} "
                     f"({s['lung_field_right_dice']:.2f}, {s['lung_field_left_dice']:.2f}) | "
                     f"{_mean(s['heart_dice'], s['heart_dice_se'])} | {mae} | {manual} | {s['flagged']} |")
    return "\n".join(lines)


def evaluate(model: str, part: str, data: Path, tta: bool = False
             ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Segment (with test-time augmentation if ``tta``) and score the films of ``part``.

    Returns (per-film rows, per-group summaries).
    """
    from ts2d_xray import Segmenter, read_radiograph

    split = json.loads(SPLIT_FILE.read_text())
    names = split["train"] + split["validation"] if part == "all" else split[part]
    wingspan = data / "xray" / "wingspan"
    reference = authors_ctr(wingspan)
    rows: dict[str, dict[str, Any]] = {}
    with Segmenter(model, tta=tta) as seg, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every PNG has assumed spacing and orientation: said once below
        for name in sorted(names):
            image = read_radiograph(wingspan / "png" / name, display=None)
            result = seg(image)
            rows[name] = score_film(result, read_truth(wingspan, name, image.plane), reference.get(name))
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, row in rows.items():
        groups.setdefault(vendor_prefix(name), []).append(row)
    summaries = {g: summary(r) for g, r in sorted(groups.items())}
    summaries["all"] = summary(list(rows.values()))
    return rows, summaries


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (and write the per-film scores with ``--json``)."""
    from ts2d_xray.examples import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ts2d-xray-xray", help="model name or bundle path")
    parser.add_argument("--part", choices=("validation", "train", "all"), default="validation")
    parser.add_argument("--json", type=Path, default=None, help="write per-film scores and summaries here")
    parser.add_argument("--tta", action="store_true", help="segment with test-time augmentation (as --tta does)")
    args = parser.parse_args(argv)
    logging.getLogger("ts2d_xray").setLevel(logging.ERROR)
    rows, summaries = evaluate(args.model, args.part, shared_data_dir(), tta=args.tta)
    fields = {r["fields_from"] for r in rows.values()}
    print(f"{args.model} on the Wingspan {args.part} split ({len(rows)} films){' with TTA' * args.tta}; "
          f"lung fields from {', '.join(fields)}")
    print(table(summaries))
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "part": args.part, "summaries": summaries,
                                         "films": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
