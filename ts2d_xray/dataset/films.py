"""Data sets of real radiographs with partial labels, and data sets combined from others.

A real film rarely comes with all 117 TotalSegmentator structures: a chest film set
labels the lung fields and the heart, say.  :func:`write_film_dataset` writes such films
as an ``xray`` data set (:mod:`ts2d_xray.dataset.format`) whose structures are the ones
a model learns, and whose case records list every structure a film does not label in
``unlabelled_structures``: training leaves those (film, structure) pairs out of the
loss (:class:`ts2d_xray.train.loss.MultiLabelDiceBCELoss`), so a chest film teaches
"lung field here" without teaching "no liver anywhere".

:func:`combine_datasets` joins data sets of one kind (e.g. synthetic radiographs with
all structures and real films with three) into one, over the union of their
structures; a structure that a source lacks is unlabelled in that source's cases.

Images are read with :func:`ts2d_xray.io.read_radiograph` (display convention: head
up, the patient's right on the image left; a file without pixel spacing gets the
reader's stated fallback, recorded in the case record as ``spacing_source``).  Mask
files are read with :func:`ts2d_xray.io.mask_sources.read_mask_source` (inside =
non-zero) and must have the image's pixel grid.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ts2d_xray.dataset.format import CASES_FILE, DATASET_JSON, sampling_weight_problem
from ts2d_xray.dataset.read import Dataset, iter_cases, load_dataset
from ts2d_xray.dataset.write import finalize, write_case
from ts2d_xray.errors import InputError
from ts2d_xray.image import Masks
from ts2d_xray.io.files import new_folder

__all__ = ["LabelledFilm", "combine_datasets", "write_film_dataset"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledFilm:
    """One real radiograph and the masks drawn on it.

    Attributes:
        case_id: The case id in the data set (letters, digits, ``.``, ``_``, ``-``).
        image: The radiograph file (DICOM, PNG, JPEG, NRRD, ...).
        masks: Structure name -> mask file on the image's pixel grid (inside = non-zero).
        meta: Extra facts for the case record (e.g. the vendor group).
    """

    case_id: str
    image: Path
    masks: Mapping[str, Path]
    meta: Mapping[str, Any] = field(default_factory=dict)


def _read_film(film: LabelledFilm, structures: Sequence[str]) -> tuple[Any, Masks, dict[str, Any]]:
    """The film's image, its masks in ``structures`` order, and its case record."""
    from ts2d_xray.io.mask_sources import read_mask_source
    from ts2d_xray.io.radiograph import read_radiograph

    unknown = sorted(set(film.masks) - set(structures))
    if unknown:
        raise ValueError(f"film {film.case_id}: masks of {unknown}, which are not among the data set's structures")
    with warnings.catch_warnings():  # the fallbacks are recorded in the case record instead
        warnings.simplefilter("ignore")
        image = read_radiograph(film.image)
    array = np.zeros((len(structures), *image.plane.shape), dtype=bool)
    for name, path in film.masks.items():
        mask = read_mask_source(path).masks.array[0]
        if mask.shape != image.plane.shape:
            raise InputError(path, f"mask of {mask.shape[1]}x{mask.shape[0]} px for the image {film.image} of "
                                   f"{image.plane.shape[1]}x{image.plane.shape[0]} px")
        array[list(structures).index(name)] = mask
    masks = Masks(array, tuple(structures), image.plane)
    record = {
        "case": film.case_id, "source": str(film.image), "kind": "real radiograph",
        "mask_files": {n: str(p) for n, p in film.masks.items()},
        "spacing_source": image.meta.get("spacing_source"), "orientation_source": image.meta.get("orientation_source"),
        "empty_structures": [n for n, m in zip(structures, array) if not m.any()],
        "unlabelled_structures": [n for n in structures if n not in film.masks],
        **dict(film.meta),
    }
    return image, masks, record


def write_film_dataset(out: str | PathLike, films: Iterable[LabelledFilm], structures: Sequence[str], *,
                       description: str = "real radiographs with partial labels") -> Dataset:
    """Write real films with the masks they have as an ``xray`` data set.

    Args:
        out: The data set folder (created; it must not hold another data set).
        films: The films; their case ids must be unique.
        structures: The data set's structures, in order (e.g. a model's outputs); each
            film's masks must be among them, the others are unlabelled for it.
        description: Stored in ``dataset.json["source"]``.

    Raises:
        InputError: An unreadable image or mask, or a mask on another pixel grid.
        ValueError: Duplicate case ids, or masks of structures not in ``structures``.
    """
    out = Path(out)
    films = list(films)
    ids = [f.case_id for f in films]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate case ids: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    _check_new(out)
    with new_folder(out) as temp:  # on any error, no half-written data set
        for film in films:
            image, masks, record = _read_film(film, structures)
            write_case(temp, film.case_id, image, masks, record)
        finalize(temp, structures, (), {"kind": "xray", "source": description}, name=out.name)
    log.info("%s: %d films, %d structures", out, len(films), len(structures))
    return load_dataset(out)


def combine_datasets(sources: Sequence[str | PathLike | Dataset], out: str | PathLike, *,
                     unlabelled: Sequence[Sequence[str]] | None = None,
                     weights: Sequence[Mapping[str, float] | None] | None = None,
                     prefixes: Sequence[str] | None = None) -> Dataset:
    """One data set holding every case of ``sources``, over the union of their structures.

    Structures keep the first source's order, then each later source's new ones.  A case
    keeps its record, with ``unlabelled_structures`` grown by the structures its source
    lacks (their layers are empty), and gains ``combined_from`` (its source folder).

    Args:
        sources: The data sets, or their folders.
        out: The new data set's folder.
        unlabelled: Per source, structures that source has but that are to count as
            unlabelled in its cases (layers emptied), so that only the other sources
            teach them: e.g. a structure whose definition on synthetic radiographs
            differs from what real films draw.
        weights: Per source, ``None`` or case id -> sampling weight (> 0), stored in
            the case record as ``sampling_weight``: training draws a case in
            proportion to it (:class:`ts2d_xray.train.sampling.PatchSampler`), e.g.
            rare films more often.  Cases not named keep their weight (default 1).
        prefixes: Per source, a prefix for its case ids (the record keeps the old one
            as ``source_case``): e.g. two builds of the same CTs with other presets.

    Raises:
        InputError: Sources of different kinds, channels or display conventions, or two
            cases with the same id.
    """
    datasets = [s if isinstance(s, Dataset) else load_dataset(s) for s in sources]
    if not datasets:
        raise ValueError("combine_datasets needs at least one source")
    dropped = _check_unlabelled(datasets, unlabelled)
    weighting = _check_weights(datasets, weights)
    prefixes = [""] * len(datasets) if prefixes is None else [str(p) for p in prefixes]
    if len(prefixes) != len(datasets):
        raise ValueError(f"prefixes: {len(prefixes)} for {len(datasets)} sources")
    out = Path(out)
    first = datasets[0]
    for ds in datasets[1:]:
        for key in ("kind", "channels", "display"):
            if ds.meta.get(key) != first.meta.get(key):
                raise InputError(ds.root / DATASET_JSON, f"{key} {ds.meta.get(key)!r}, but {first.root} has "
                                                         f"{first.meta.get(key)!r}: they cannot be combined")
    structures = list(dict.fromkeys(s for ds in datasets for s in ds.structures))
    seen: dict[str, Path] = {}
    _check_new(out)
    with new_folder(out) as temp:  # on any error, no half-written data set
        for ds, names, weight, prefix in zip(datasets, dropped, weighting, prefixes):
            for record in iter_cases(ds):
                record = dict(record)
                if record["case"] in weight:
                    record["sampling_weight"] = float(weight[record["case"]])
                _copy_case(ds, record, structures, seen, temp, names, prefix)
        finalize(temp, structures, sorted({g for ds in datasets for g in ds.meta.get("groups", ())}),
                 {"kind": first.meta["kind"], "source": "combined",
                  "combined_from": [str(ds.root) for ds in datasets]}, name=out.name)
    return load_dataset(out)


def _check_unlabelled(datasets: Sequence[Dataset], unlabelled: Sequence[Sequence[str]] | None) -> list[list[str]]:
    """``unlabelled`` checked against the sources: one list per source, of that source's structures."""
    dropped = [list(u) for u in unlabelled] if unlabelled is not None else [[] for _ in datasets]
    if len(dropped) != len(datasets):
        raise ValueError(f"unlabelled: {len(dropped)} lists for {len(datasets)} sources")
    for ds, names in zip(datasets, dropped):
        unknown = sorted(set(names) - set(ds.structures))
        if unknown:
            raise ValueError(f"unlabelled: {unknown} are not structures of {ds.root}")
    return dropped


def _check_weights(datasets: Sequence[Dataset],
                   weights: Sequence[Mapping[str, float] | None] | None) -> list[Mapping[str, float]]:
    """``weights`` checked against the sources: one entry per source, known cases, positive numbers."""
    if weights is None:
        return [{} for _ in datasets]
    if len(weights) != len(datasets):
        raise ValueError(f"weights: {len(weights)} entries for {len(datasets)} sources")
    checked = []
    for ds, weight in zip(datasets, weights):
        weight = dict(weight or {})
        unknown = sorted(set(weight) - set(ds.case_ids))
        if unknown:
            raise ValueError(f"weights: cases {unknown[:5]} are not in {ds.root}")
        for case, value in weight.items():
            problem = sampling_weight_problem(value)
            if problem:
                raise ValueError(f"weights: case {case} of {ds.root}: {problem}")
        checked.append(weight)
    return checked


def _copy_case(ds: Dataset, record: dict[str, Any], structures: Sequence[str], seen: dict[str, Path],
               out: Path, dropped: Sequence[str] = (), prefix: str = "") -> None:
    """Write one case of ``ds`` into ``out`` as ``prefix + id``, its masks spread over ``structures``, ``dropped``
    unlabelled."""
    source_id = record["case"]
    case_id = prefix + source_id
    if prefix:
        record.update(case=case_id, source_case=source_id)
    if case_id in seen:
        raise InputError(ds.root / CASES_FILE, f"case {case_id} is also in {seen[case_id]}: case ids must be unique")
    seen[case_id] = ds.root
    image, masks = ds.read(source_id)
    array = np.zeros((len(structures), *masks.plane.shape), dtype=bool)
    for k, name in enumerate(masks.names):
        if name not in dropped:
            array[structures.index(name)] = masks.array[k]
    missing = [s for s in structures if s not in masks.names or s in dropped]
    for key in ("unlabelled_structures", "empty_structures"):
        had = list(record.get(key, ()))
        record[key] = had + [s for s in missing if s not in had]
    record["combined_from"] = str(ds.root)
    write_case(out, case_id, image, Masks(array, tuple(structures), masks.plane), record)


def _check_new(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "exists and is not empty; choose a new folder for the data set")
