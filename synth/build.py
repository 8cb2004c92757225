"""Build nnU-Net v2 raw data sets of 2D images with multi-label masks from labelled CTs.

One *case* is one 2D sample of one CT: a coronal projection (``kind="coronal"``) or a
synthetic radiograph (``kind="xray"``).  Cases are built independently by
:func:`build_case` (a plain top-level function of paths and plain values), in this
process, in a process pool, or on a dask.distributed cluster; each case draws its random
numbers from ``np.random.default_rng([seed, stable_hash(case_id)])``, so a seed gives
the same files whatever the workers and their order.

Cases are written in the on-disk format of :mod:`ts2d_xray.dataset.format` (described in
``docs/dataset_format.md``), which also reads them back for training.

Images and masks follow the radiograph display convention (patient's right on the image
left, head up; see :mod:`ts2d_xray.image`).  This module holds what is particular to
building: subjects, jobs, sampling, runners (serial, process pool, dask) and resume.

Example:
    >>> from synth.build import BuildOptions, SampleSpec, build
    >>> report = build("subjects/", "Dataset501_Coronal", BuildOptions(SampleSpec("coronal")))  # doctest: +SKIP
    >>> report.done, report.failed  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache, partial
from os import PathLike
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ts2d_xray import labels as catalog
from ts2d_xray.dataset.format import CHANNELS, DISPLAY, FORMAT_VERSION, KINDS, Kind, finalize, is_complete, write_case
from ts2d_xray.errors import InputError
from ts2d_xray.image import Image2D, Masks
from ts2d_xray.projection import DEFAULT_SPACING_MM

from synth.deform import DeformSpec, deform, random_transform
from synth.subjects import Subject, find_subjects, labelled_classes

__all__ = [
    "ALL_GROUPS",
    "BuildOptions",
    "BuildReport",
    "CaseJob",
    "CaseResult",
    "SampleSpec",
    "build",
    "build_case",
    "case_rng",
    "stable_hash",
    "structures_of",
]

log = logging.getLogger(__name__)

#: ``--groups`` value for one data set holding every group's structures.
ALL_GROUPS = "all"
#: Projection mode of coronal cases: TS2D's raw-HU projection (see ts2d_xray.projection).
CORONAL_MODE = "ts2d"


# --- options and jobs -------------------------------------------------------------
@dataclass(frozen=True)
class SampleSpec:
    """What one case's pixels are; a data set is built with one spec, checked on resume.

    Attributes:
        kind: ``"coronal"`` (TS2D projection, 2 channels mean/max in HU) or ``"xray"``
            (synthetic radiograph from :func:`synth.drr.synthesize`, 1 channel in [0, 1]).
        preset: X-ray preset: a name (``configs/synth/<preset>.json``) or a preset JSON
            path (see :func:`synth.presets.load_preset`); xray only.
        seed: Base seed (>= 0) of every case's random generator.
        spacing: Pixel size in mm of coronal projections (xray: set by the preset).
        shape: ``(H, W)`` detector pixels of xray cases, or None for the preset's.
        deform: Random 3D deformation of the CT and labels before projecting or
            rendering (see :mod:`synth.deform`), or None.  Case 0 of each CT is
            always the undeformed scan; cases 1, 2, ... are deformed copies.
    """

    kind: Kind = "coronal"
    preset: str | None = None
    seed: int = 0
    spacing: float = DEFAULT_SPACING_MM
    shape: tuple[int, int] | None = None
    deform: DeformSpec | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.kind == "coronal":
            if self.preset is not None:
                raise ValueError(f"preset is for kind 'xray'; coronal projections have none (got {self.preset!r})")
            if self.shape is not None:
                raise ValueError(f"shape is for kind 'xray'; coronal projections are sized by spacing (got {self.shape})")
            if not self.spacing > 0:
                raise ValueError(f"spacing must be > 0 mm, got {self.spacing}")
        else:
            from synth.presets import load_preset, preset_names

            if self.preset is None:
                raise ValueError(f"kind 'xray' needs a preset, one of {list(preset_names())}")
            load_preset(self.preset)  # unknown names raise, listing the presets
            if self.shape is not None and (len(self.shape) != 2 or min(self.shape) < 1):
                raise ValueError(f"shape must be two positive sizes (H, W), got {self.shape}")

    @property
    def channels(self) -> tuple[str, ...]:
        return CHANNELS[self.kind]

    def settings(self) -> dict:
        """The spec as stored in dataset.json (spacing is per case for xray)."""
        return {"kind": self.kind, "preset": self.preset, "seed": self.seed,
                "spacing": self.spacing if self.kind == "coronal" else None,
                "shape": None if self.shape is None else list(self.shape),
                "deform": None if self.deform is None else self.deform.to_dict()}


@dataclass(frozen=True)
class BuildOptions:
    """How to build: the sample spec plus which data sets and how many workers.

    Attributes:
        spec: What each case is (see :class:`SampleSpec`).
        groups: TS2D group names (one data set each, in ``OUT/<group>/``) or
            ``("all",)`` for one data set with every group's structures in ``OUT``.
        per_ct: Cases per CT.  A coronal projection is deterministic, so coronal allows
            more than 1 only with ``spec.deform``.
        workers: Worker processes; 1 builds in this process.
        scheduler: Address of a dask.distributed scheduler (overrides ``workers``);
            its workers must import this package and see the same file paths.
        progress: Show a tqdm progress bar.
    """

    spec: SampleSpec = field(default_factory=SampleSpec)
    groups: tuple[str, ...] = (ALL_GROUPS,)
    per_ct: int = 1
    workers: int = 1
    scheduler: str | None = None
    progress: bool = False

    def __post_init__(self):
        structures_of(self.groups)  # raises for unknown groups
        if self.per_ct < 1:
            raise ValueError(f"per_ct must be >= 1, got {self.per_ct}")
        if self.spec.kind == "coronal" and self.per_ct != 1 and self.spec.deform is None:
            raise ValueError(f"per_ct must be 1 for kind 'coronal' without deform (its projection is deterministic), "
                             f"got {self.per_ct}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class _Target:
    """One output data set: its folder, the groups it covers and its structure order."""

    folder: Path
    groups: tuple[str, ...]
    structures: tuple[str, ...]


@dataclass(frozen=True)
class CaseJob:
    """Everything :func:`build_case` needs (paths and plain values; cheap to pickle)."""

    case_id: str
    subject: Subject
    index: int
    spec: SampleSpec
    targets: tuple[_Target, ...]


@dataclass(frozen=True)
class CaseResult:
    """Outcome of one case: ``message`` says why it failed."""

    case_id: str
    ok: bool
    message: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class BuildReport:
    """Case ids built now, skipped (already complete) and failed (with the reason)."""

    datasets: tuple[Path, ...]
    done: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.failed


# --- registries -------------------------------------------------------------------
def structures_of(groups: Sequence[str]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """``(name, groups, structures)`` of each data set that ``groups`` asks for.

    ``("all",)`` gives one data set named ``"all"`` with the five groups' structures
    concatenated in :data:`ts2d_xray.labels.GROUPS` order; otherwise one data set per
    group with :func:`ts2d_xray.labels.group_classes` order.
    """
    groups = tuple(groups)
    if not groups:
        raise ValueError("groups must name at least one group or 'all'")
    if ALL_GROUPS in groups:
        if len(groups) > 1:
            raise ValueError(f"groups: 'all' cannot be combined with other groups, got {list(groups)}")
        every = tuple(n for g in catalog.GROUPS for n in catalog.group_classes(g))
        return [(ALL_GROUPS, catalog.GROUPS, every)]
    for g in groups:
        if g not in catalog.GROUPS:
            raise ValueError(f"unknown group {g!r}; groups are {list(catalog.GROUPS)} or 'all'")
    if len(set(groups)) != len(groups):
        raise ValueError(f"groups are repeated: {list(groups)}")
    return [(g, (g,), catalog.group_classes(g)) for g in groups]


def stable_hash(text: str) -> int:
    """A 64-bit hash of a string that is the same in every process and Python version.

    (Python's ``hash()`` of a string changes per process, so it cannot seed workers.)
    """
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """The random generator of one case: independent of workers and build order."""
    return np.random.default_rng([seed, stable_hash(case_id)])


# --- sources ----------------------------------------------------------------------
# --- one case ---------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Loaded:
    """A subject read for sampling; ``prepared`` holds synth.drr's per-CT work (xray)."""

    ct: object  # ts2d_xray Volume
    labels: object  # ts2d_xray LabelMap
    prepared: object | None
    labelled: frozenset[str]


@dataclass(frozen=True, eq=False)
class _Sample:
    image: Image2D
    masks: Masks  # v2 names
    params: dict
    labelled: frozenset[str]  # v2 classes the source labels at all (even if empty here)


def build_case(job: CaseJob) -> CaseResult:
    """Build one case into every target data set; never raises.

    Any error (unreadable CT, labels on another grid, ...) becomes a failed result with
    its message, so that one bad subject does not stop a build.  Nothing of a failed
    case is left in the data sets.
    """
    started = time.perf_counter()
    try:
        sample = _make_sample(job)
        for target in job.targets:
            _write_case(job, target, sample)
    except Exception as err:  # noqa: BLE001 - the boundary of one case: report, go on
        log.debug("%s failed", job.case_id, exc_info=True)
        return CaseResult(job.case_id, False, f"{type(err).__name__}: {err}", time.perf_counter() - started)
    return CaseResult(job.case_id, True, None, time.perf_counter() - started)


def _make_sample(job: CaseJob) -> _Sample:
    spec = job.spec
    loaded = _load(job.subject, spec.kind)
    rng = case_rng(spec.seed, job.case_id)
    ct, labels, prepared, deformation = loaded.ct, loaded.labels, loaded.prepared, None
    if spec.deform is not None and job.index > 0:
        transform, deformation = random_transform(ct.grid, rng, spec.deform)
        ct, labels = deform(ct, labels, transform, spec.deform.spacing_mm)
        if spec.kind == "xray":
            from synth.drr import prepare

            prepared = prepare(ct, labels)
    if spec.kind == "coronal":
        from ts2d_xray.projection import project_ct, project_labels

        image = project_ct(ct, mode=CORONAL_MODE, spacing=spec.spacing, display=DISPLAY)
        masks = project_labels(labels, spacing=spec.spacing, display=DISPLAY)
        params = {"mode": CORONAL_MODE, "display": DISPLAY, "spacing_mm": spec.spacing}
    else:
        from synth.drr import synthesize

        drawn = synthesize(prepared, preset=spec.preset, rng=rng, shape=spec.shape)
        image, masks, params = drawn.image, drawn.masks, dict(drawn.params)
    if spec.deform is not None:
        params["deformation"] = deformation
    return _Sample(image, masks.to_v2(), params, loaded.labelled)


# The cases of one CT usually follow each other in a worker (jobs are submitted subject
# by subject), so the last subject read is kept: reading a CT and its labels, and
# preparing its material densities, costs more than rendering one radiograph.
@lru_cache(maxsize=1)
def _load(subject: Subject, kind: str) -> _Loaded:
    from ts2d_xray.io import read_ct, read_labels

    ct = read_ct(subject.ct)
    labels = read_labels(subject.labels, classmap=subject.classmap, reference=ct)
    prepared = None
    if kind == "xray":
        from synth.drr import prepare

        prepared = prepare(ct, labels)
    return _Loaded(ct, labels, prepared, labelled_classes(subject))


def _arrange(masks: Masks, names: Sequence[str]) -> Masks:
    """Masks in exactly ``names`` order; structures the sample lacks are empty layers."""
    array = np.zeros((len(names), *masks.plane.shape), dtype=bool)
    for k, name in enumerate(names):
        if name in masks.names:
            array[k] = masks.array[masks.names.index(name)]
    return Masks(array, tuple(names), masks.plane)


def _record(job: CaseJob, target: _Target, sample: _Sample, masks: Masks) -> dict:
    """The provenance of one case in one data set (``cases/<case>.json``)."""
    empty = [n for n, layer in zip(masks.names, masks.array) if not layer.any()]
    return {
        "case": job.case_id,
        "subject": job.subject.id,
        "index": job.index,
        "source_ct": str(job.subject.ct),
        "source_labels": str(job.subject.labels),
        "classmap": job.subject.classmap,
        "shape": list(sample.image.plane.shape),
        "spacing_mm": [round(s, 6) for s in sample.image.plane.spacing],
        "params": sample.params,
        "empty_structures": empty,
        "unlabelled_structures": [n for n in target.structures if n not in sample.labelled],
    }


def _write_case(job: CaseJob, target: _Target, sample: _Sample) -> None:
    """Write one case into one data set (see :func:`ts2d_xray.dataset.write_case`)."""
    masks = _arrange(sample.masks, target.structures)
    write_case(target.folder, job.case_id, sample.image, masks, _record(job, target, sample, masks))


def _finalize(target: _Target, spec: SampleSpec) -> int:
    """Clean up and rewrite a data set's lists (see :func:`ts2d_xray.dataset.finalize`)."""
    return finalize(target.folder, target.structures, target.groups, spec.settings())


def _check_target(target: _Target, spec: SampleSpec) -> None:
    """Refuse a folder that is not ours, or ours built with other settings."""
    folder = target.folder
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder; the data set is written into a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    existing = folder / "dataset.json"
    try:
        old = json.loads(existing.read_text())
    except (OSError, ValueError):
        raise InputError(folder, "exists, is not empty and holds no synth data set (dataset.json); "
                                 "choose a new output folder") from None
    if old.get("format_version") != FORMAT_VERSION:
        raise InputError(existing, f"not a synth data set of format {FORMAT_VERSION}; choose a new output folder")
    wanted = {**spec.settings(), "structures": list(target.structures), "display": DISPLAY}
    differ = [f"{k}={old.get(k)!r} there, {v!r} now" for k, v in wanted.items() if old.get(k) != v]
    if differ:
        raise InputError(existing, f"built with other settings ({'; '.join(differ)}); "
                                   "resume with the same settings or choose a new output folder")


# --- running ----------------------------------------------------------------------
Runner = Callable[[Sequence[CaseJob]], Iterator[CaseResult]]


def _run_serial(jobs: Sequence[CaseJob]) -> Iterator[CaseResult]:
    return map(build_case, jobs)


def _run_pool(pool, jobs: Sequence[CaseJob]) -> Iterator[CaseResult]:
    from concurrent.futures import as_completed

    futures = {pool.submit(build_case, job): job for job in jobs}
    try:
        for future in as_completed(futures):
            yield _collected(future, futures[future].case_id)
    finally:
        for future in futures:  # on an interrupt: do not start what is left
            future.cancel()


def _run_dask(client, jobs: Sequence[CaseJob]) -> Iterator[CaseResult]:
    from distributed import as_completed

    futures = client.map(build_case, jobs, key=[f"synth-build-{uuid.uuid4().hex[:8]}-{j.case_id}" for j in jobs])
    case_of = {f.key: j.case_id for f, j in zip(futures, jobs)}
    try:
        for future in as_completed(futures):
            yield _collected(future, case_of[future.key])
    finally:
        client.cancel(futures)


def _collected(future, case_id: str) -> CaseResult:
    """A future's result; a worker that died (killed, out of memory) fails its case."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - BrokenProcessPool, KilledWorker, ...
        return CaseResult(case_id, False, f"worker failed: {type(err).__name__}: {err}")


@contextlib.contextmanager
def _runner(options: BuildOptions) -> Iterator[Runner]:
    """Open the workers (before anything is written, so a bad scheduler writes nothing)."""
    if options.scheduler:
        from distributed import Client

        try:
            client = Client(options.scheduler, timeout="10s")
        except (OSError, ValueError, TypeError) as err:
            raise InputError(None, f"cannot connect to the dask scheduler {options.scheduler!r} ({err})") from None
        with client:
            yield partial(_run_dask, client)
    elif options.workers == 1:
        yield _run_serial
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: forking a process that already runs threads (torch,
        # SimpleITK, tqdm) can deadlock the children.
        threads = max(1, (os.cpu_count() or 1) // options.workers)
        with ProcessPoolExecutor(options.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            yield partial(_run_pool, pool)


def _init_worker(threads: int) -> None:
    """Share the CPUs between worker processes: torch would give each one all of them."""
    import torch

    torch.set_num_threads(threads)


def _plan(source, out: Path, options: BuildOptions) -> tuple[list[_Target], list[CaseJob]]:
    """Check every input and output and list the jobs; writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder; the data set is written into a folder")
    subjects = find_subjects(source)
    plan = structures_of(options.groups)
    targets = [_Target(out if name == ALL_GROUPS else out / name, groups, names) for name, groups, names in plan]
    for target in targets:
        _check_target(target, options.spec)
    jobs = [CaseJob(f"{s.id}_{k:03d}", s, k, options.spec, tuple(targets))
            for s in subjects for k in range(options.per_ct)]
    return targets, jobs


def build(source: str | PathLike, out: str | PathLike, options: BuildOptions = BuildOptions()) -> BuildReport:
    """Build (or resume) nnU-Net v2 raw data sets from labelled CTs.

    Args:
        source: Subjects folder or list file (see :func:`find_subjects`).
        out: The data set folder (``groups=("all",)``) or the folder of one data set
            per group.  A re-run with the same settings skips complete cases and
            completes the others; other settings are refused.
        options: See :class:`BuildOptions`.

    Returns:
        A :class:`BuildReport`.  Failed cases are listed there (and logged), not raised.

    Raises:
        InputError: Bad source or output (checked before anything is written).
        ValueError: Bad options.
    """
    targets, jobs = _plan(source, Path(out), options)
    n_channels = len(options.spec.channels)
    with _runner(options) as run:
        for target in targets:
            target.folder.mkdir(parents=True, exist_ok=True)
            # Clear what a killed build left (.partial/, incomplete cases); one build per
            # output folder at a time.
            _finalize(target, options.spec)
        skipped = {j.case_id for j in jobs if all(is_complete(t.folder, j.case_id, n_channels) for t in targets)}
        todo = [j for j in jobs if j.case_id not in skipped]
        try:
            done, failed = _run_all(run, todo, len(jobs), len(skipped), options.progress)
        finally:
            _load.cache_clear()  # in-process builds: do not keep the last CT in memory
    for target in targets:
        _finalize(target, options.spec)
    return BuildReport(tuple(t.folder for t in targets), tuple(sorted(done)), tuple(sorted(skipped)),
                       tuple(sorted(failed)))


def _run_all(run: Runner, todo: Sequence[CaseJob], total: int, skipped: int, progress: bool):
    from tqdm import tqdm

    done, failed = [], []
    with tqdm(total=total, initial=skipped, unit="case", desc="synth build", disable=not progress) as bar:
        for result in run(todo) if todo else ():
            if result.ok:
                done.append(result.case_id)
            else:
                failed.append((result.case_id, result.message or "unknown error"))
                log.error("%s: %s", result.case_id, result.message)
            bar.update(1)
    return done, failed
