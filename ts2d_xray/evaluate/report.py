"""The report of an evaluation: every score, their summary and table, and the files.

:meth:`EvaluationReport.save` writes three files:

=====================  ==========================================================
``metrics.csv``        one row per case and structure: Dice, HD95 (mm), areas
                       (mm^2), presence in prediction and ground truth
``summary.json``       :meth:`~EvaluationReport.summary`: the means, per structure, per case,
                       the conventions and the notes
``dice_boxplot.png``   per structure, the Dice over the cases where the ground
                       truth has it (a box per structure, every case a dot)
=====================  ==========================================================

NaN (an undefined HD95) is written ``nan`` in the CSV and ``null`` in the JSON.  The HD95
variant (``"pooled"`` or ``"max-directed"``, :mod:`ts2d_xray.evaluate.metrics`) is named in
``summary.json`` (``hd95_variant`` and its convention) and, when it is not the default, in
the table's last line.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ts2d_xray.evaluate.metrics import HD95Variant, StructureScore
from ts2d_xray.io.files import staged_folder, write_json
from ts2d_xray.measure import MIN_PRESENT_AREA_MM2

__all__ = ["CONVENTIONS", "CSV_COLUMNS", "FILES", "HD95_CONVENTIONS", "EvaluationReport"]

#: The files :meth:`EvaluationReport.save` writes.
FILES = ("metrics.csv", "summary.json", "dice_boxplot.png")
CSV_COLUMNS = ("case", "structure", "dice", "hd95_mm", "pred_present", "gt_present", "presence_correct",
               "pred_area_mm2", "gt_area_mm2")
_HD95_BASIS = ("surface distances in mm between pixel centres of the boundaries (mask pixels with a 4-neighbour "
               "outside or on the image edge), anisotropic spacing respected; 0.0 when both masks are empty, null "
               "(NaN) when only one is")
#: What ``hd95_mm`` means, per HD95 variant.
HD95_CONVENTIONS = {
    "pooled": "95th percentile (linear interpolation) of the pooled symmetric " + _HD95_BASIS,
    "max-directed": "maximum of the two directed 95th percentiles (linear interpolation; prediction to ground "
                    "truth and ground truth to prediction), as MONAI and DeepMind's surface-distance, of the "
                    + _HD95_BASIS,
}
CONVENTIONS = {
    "dice": "2|P & G| / (|P| + |G|); 1.0 when both masks are empty, 0.0 when only one is",
    "hd95_mm": HD95_CONVENTIONS["pooled"],
    "present": "mask area >= min_area_mm2 (and at least one pixel)",
    "means": "Dice and HD95 averaged over the cases where the ground truth has the structure present, then over "
             "structures; HD95 means leave out NaN (counted as hd95_missing); presence accuracy over every "
             "(case, structure) pair",
    "grid": "metrics on the ground truth's pixel grid; the prediction is flipped/transposed exactly and resampled "
            "by nearest neighbour when needed",
}


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """Scores of every (case, structure) pair, with their summary and outputs.

    Attributes:
        scores: One :class:`StructureScore` per case and structure, cases in order.
        pred, gt: What was compared (paths or descriptions).
        min_area_mm2: Presence threshold used.
        notes: What was skipped and why (structures not predicted, unmatched cases, ...).
        hd95_variant: How the scores' HD95 was computed: ``"pooled"`` or ``"max-directed"``.
    """

    scores: tuple[StructureScore, ...]
    pred: str
    gt: str
    min_area_mm2: float = MIN_PRESENT_AREA_MM2
    notes: tuple[str, ...] = field(default_factory=tuple)
    hd95_variant: HD95Variant = "pooled"

    @property
    def cases(self) -> tuple[str, ...]:
        """Case names, in order."""
        return tuple(dict.fromkeys(s.case for s in self.scores))

    @property
    def structures(self) -> tuple[str, ...]:
        """Structure names, in order of first score."""
        return tuple(dict.fromkeys(s.structure for s in self.scores))

    def score(self, structure: str, case: str | None = None) -> StructureScore:
        """The score of one structure (in ``case``; default: the only case)."""
        if case is None:
            if len(self.cases) != 1:
                raise ValueError(f"{len(self.cases)} cases; name one of {list(self.cases)}")
            case = self.cases[0]
        for s in self.scores:
            if s.case == case and s.structure == structure:
                return s
        raise KeyError(f"no score for {structure!r} in case {case!r}")

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: means over structures present in GT, per structure and per case.

        See the module docstring; NaN becomes None.
        """
        per = _per_structure(self)
        per_case = {}
        for case in self.cases:
            rows = [s for s in self.scores if s.case == case]
            case_per = {s.structure: {"gt_present": int(s.gt_present), "dice_mean": s.dice,
                                      "hd95_mm_mean": s.hd95_mm} for s in rows}
            per_case[case] = _clean(_means(case_per, rows))
        conventions = {**CONVENTIONS, "hd95_mm": HD95_CONVENTIONS[self.hd95_variant]}
        return {"pred": self.pred, "gt": self.gt, "cases": list(self.cases), "min_area_mm2": self.min_area_mm2,
                "hd95_variant": self.hd95_variant,
                **_clean(_means(per, self.scores)), "per_structure": {name: _clean(d) for name, d in per.items()},
                "per_case": per_case, "conventions": conventions, "notes": list(self.notes)}

    def table(self) -> str:
        """A plain-text table: per structure Dice, HD95 (mm) and presence, then the means.

        With several cases, each row gives the means and counts over the cases.
        """
        return _table(self)

    def save(self, out_dir: str | PathLike) -> list[Path]:
        """Write ``metrics.csv``, ``summary.json`` and ``dice_boxplot.png`` into ``out_dir``.

        The files are written into a hidden folder first and moved into place when all
        are complete (a new ``out_dir`` appears at once); files of the same names are
        replaced.  Returns the paths written.
        """
        out_dir = Path(out_dir)
        with staged_folder(out_dir) as temp:
            _write_csv(self, temp / FILES[0])
            write_json(temp / FILES[1], self.summary())
            _write_boxplot(self, temp / FILES[2])
        return [out_dir / f for f in FILES]


def _num(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _mean(values: Iterable[float]) -> float:
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def _per_structure(report: EvaluationReport) -> dict[str, dict[str, Any]]:
    out = {}
    for name in report.structures:
        rows = [s for s in report.scores if s.structure == name]
        present = [s for s in rows if s.gt_present]
        dices = [s.dice for s in present]
        hds = [s.hd95_mm for s in present if math.isfinite(s.hd95_mm)]
        out[name] = {
            "cases": len(rows),
            "gt_present": len(present),
            "pred_present": sum(s.pred_present for s in rows),
            "dice_mean": _mean(dices),
            "dice_median": float(np.median(dices)) if dices else math.nan,
            "dice_std": float(np.std(dices)) if dices else math.nan,
            "dice_min": float(min(dices)) if dices else math.nan,
            "hd95_mm_mean": _mean(hds),
            "hd95_mm_median": float(np.median(hds)) if hds else math.nan,
            "hd95_missing": len(present) - len(hds),
            "presence_accuracy": sum(s.presence_correct for s in rows) / len(rows),
        }
    return out


def _means(per: Mapping[str, Mapping[str, Any]], scores: Sequence[StructureScore]) -> dict[str, Any]:
    dices = [v["dice_mean"] for v in per.values() if v["gt_present"]]
    return {
        "mean_dice": _mean(dices),
        "mean_hd95_mm": _mean(v["hd95_mm_mean"] for v in per.values() if v["gt_present"]),
        "presence_accuracy": (sum(s.presence_correct for s in scores) / len(scores)) if scores else math.nan,
        "structures_in_mean": len(dices),
    }


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with floats rounded for JSON and NaN as None."""
    return {k: _num(v) if isinstance(v, float) else v for k, v in values.items()}


def _fmt(value: float, digits: int) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def _table(report: EvaluationReport) -> str:
    """See :meth:`EvaluationReport.table`."""
    per = _per_structure(report)
    width = max([len("structure"), *map(len, per)])
    lines = []
    if len(report.cases) == 1:
        lines.append(f"{'structure':<{width}}  {'Dice':>6}  {'HD95 mm':>8}  {'pred':>5}  {'GT':>5}")
        for s in report.scores:
            lines.append(f"{s.structure:<{width}}  {_fmt(s.dice, 3):>6}  {_fmt(s.hd95_mm, 2):>8}  "
                         f"{'yes' if s.pred_present else 'no':>5}  {'yes' if s.gt_present else 'no':>5}")
    else:
        lines.append(f"{'structure':<{width}}  {'GT in':>6}  {'Dice':>6}  {'median':>6}  {'HD95 mm':>8}  "
                     f"{'presence':>8}")
        for name, v in per.items():
            lines.append(f"{name:<{width}}  {v['gt_present']:>3}/{v['cases']:<2}  {_fmt(v['dice_mean'], 3):>6}  "
                         f"{_fmt(v['dice_median'], 3):>6}  {_fmt(v['hd95_mm_mean'], 2):>8}  "
                         f"{100 * v['presence_accuracy']:>7.1f}%")
    means = _means(per, report.scores)
    correct = sum(s.presence_correct for s in report.scores)
    variant = "" if report.hd95_variant == "pooled" else f" ({report.hd95_variant})"
    lines.append(f"mean over {means['structures_in_mean']} structures present in GT ({len(report.cases)} case"
                 f"{'s' if len(report.cases) != 1 else ''}): Dice {_fmt(means['mean_dice'], 3)}, HD95{variant} "
                 f"{_fmt(means['mean_hd95_mm'], 2)} mm; presence correct {correct}/{len(report.scores)} "
                 f"({100 * means['presence_accuracy']:.1f}%)")
    return "\n".join(lines)


def _write_csv(report: EvaluationReport, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for s in report.scores:
            writer.writerow([s.case, s.structure, f"{s.dice:.6g}", f"{s.hd95_mm:.6g}", int(s.pred_present),
                             int(s.gt_present), int(s.presence_correct), f"{s.pred_area_mm2:.6g}",
                             f"{s.gt_area_mm2:.6g}"])


def _write_boxplot(report: EvaluationReport, path: Path) -> None:
    """Horizontal box plot of the Dice per structure over the cases with the structure in GT."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = {n: [s.dice for s in report.scores if s.structure == n and s.gt_present] for n in report.structures}
    values = {n: v for n, v in values.items() if v}
    names = list(values)[::-1]  # first structure on top
    fig = Figure(figsize=(7.0, max(2.5, 0.28 * len(names) + 1.4)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if names:
        ax.boxplot([values[n] for n in names], orientation="horizontal", widths=0.6, showfliers=False,
                   medianprops={"color": "tab:red"})
        for k, n in enumerate(names, start=1):
            ax.plot(values[n], np.full(len(values[n]), k), "o", ms=3, color="tab:blue", alpha=0.6)
        ax.set_yticks(range(1, len(names) + 1), names, fontsize=8)
    else:
        ax.text(0.5, 0.5, "no structure is present in the ground truth", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_yticks([])
    n = len(report.cases)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("Dice")
    ax.set_title(f"Dice per structure, {n} case{'s' if n != 1 else ''} (structures present in the ground truth)",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
