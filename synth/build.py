"""Build nnU-Net v2 raw data sets of 2D images with multi-label masks from labelled CTs.

:func:`build` plans the cases of every subject (:func:`synth.subjects.find_subjects`)
for every target data set, checks the outputs, then runs the cases
(:func:`synth.case.build_case`) in this process, in a process pool or on a
dask.distributed cluster (:mod:`synth.runners`), and finally rewrites each data set's
lists.  A re-run with the same settings resumes: complete cases are skipped, what a
killed build left is cleared and the rest is built; other settings are refused.

Cases are written in the on-disk format of :mod:`ts2d_xray.dataset` (described in
``docs/dataset_format.md``), which also reads them back for training.  What one case is
(:class:`~synth.case.SampleSpec`) and how it is drawn (:func:`~synth.case.case_rng`)
live in :mod:`synth.case`; they are importable from here too.

Example:
    >>> from synth.build import BuildOptions, SampleSpec, build
    >>> report = build("subjects/", "Dataset501_Coronal", BuildOptions(SampleSpec("coronal")))  # doctest: +SKIP
    >>> report.done, report.failed  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Generator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence

from ts2d_xray import labels as catalog
from ts2d_xray.dataset import DISPLAY, FORMAT_VERSION, finalize, is_complete
from ts2d_xray.dataset.write import discard_partial
from ts2d_xray.errors import InputError, OutputError
from ts2d_xray.io.files import output_error, read_json

from synth.case import CaseJob, CaseResult, SampleSpec, Target, build_case, case_rng, forget_loaded, stable_hash
from synth.runners import Runner, open_runner
from synth.subjects import find_subjects

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

    def __post_init__(self) -> None:
        structures_of(self.groups)  # raises for unknown groups
        if self.per_ct < 1:
            raise ValueError(f"per_ct must be >= 1, got {self.per_ct}")
        if self.spec.kind == "coronal" and self.per_ct != 1 and self.spec.deform is None:
            raise ValueError(f"per_ct must be 1 for kind 'coronal' without deform (its projection is deterministic), "
                             f"got {self.per_ct}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class BuildReport:
    """Case ids built now, skipped (already complete) and failed (with the reason)."""

    datasets: tuple[Path, ...]
    done: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        """Whether no case failed."""
        return not self.failed


# --- plan and run --------------------------------------------------------------
def structures_of(groups: Sequence[str]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """``(name, groups, structures)`` of each data set that ``groups`` asks for.

    ``("all",)`` gives one data set named ``"all"`` with the five groups' structures
    concatenated in :data:`ts2d_xray.labels.GROUPS` order (the 117 v2 classes), then the
    radiographic lung fields :data:`ts2d_xray.labels.LUNG_FIELDS`; otherwise one data set
    per group with :func:`ts2d_xray.labels.group_classes` order (the classes only).
    """
    groups = tuple(groups)
    if not groups:
        raise ValueError("groups must name at least one group or 'all'")
    if ALL_GROUPS in groups:
        if len(groups) > 1:
            raise ValueError(f"groups: 'all' cannot be combined with other groups, got {list(groups)}")
        every = tuple(n for g in catalog.GROUPS for n in catalog.group_classes(g)) + catalog.LUNG_FIELDS
        return [(ALL_GROUPS, catalog.GROUPS, every)]
    for g in groups:
        if g not in catalog.GROUPS:
            raise ValueError(f"unknown group {g!r}; groups are {list(catalog.GROUPS)} or 'all'")
    if len(set(groups)) != len(groups):
        raise ValueError(f"groups are repeated: {list(groups)}")
    return [(g, (g,), catalog.group_classes(g)) for g in groups]


def _finalize(target: Target, spec: SampleSpec) -> int:
    """Clean up and rewrite a data set's lists (see :func:`ts2d_xray.dataset.finalize`)."""
    return finalize(target.folder, target.structures, target.groups, spec.settings())


def _check_target(target: Target, spec: SampleSpec) -> None:
    """Refuse a folder that is not ours, or ours built with other settings."""
    folder = target.folder
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder; the data set is written into a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    existing = folder / "dataset.json"
    try:
        old = read_json(existing, what="dataset.json")
    except InputError:
        raise InputError(folder, "exists, is not empty and holds no synth data set (dataset.json); "
                                 "choose a new output folder") from None
    if old.get("format_version") != FORMAT_VERSION:
        raise InputError(existing, f"not a synth data set of format {FORMAT_VERSION}; choose a new output folder")
    wanted = {**spec.settings(), "structures": list(target.structures), "display": DISPLAY}
    differ = [f"{k}={old.get(k)!r} there, {v!r} now" for k, v in wanted.items() if old.get(k) != v]
    if differ:
        raise InputError(existing, f"built with other settings ({'; '.join(differ)}); "
                                   "resume with the same settings or choose a new output folder")


def _plan(source: str | PathLike, out: Path, options: BuildOptions) -> tuple[list[Target], list[CaseJob]]:
    """Check every input and output and list the jobs; writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder; the data set is written into a folder")
    subjects = find_subjects(source)
    plan = structures_of(options.groups)
    targets = [Target(out if name == ALL_GROUPS else out / name, groups, names) for name, groups, names in plan]
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
        OutputError: A file cannot be written (disk full, read-only folder): the build
            stops; complete cases stay for a re-run to resume from, a new output folder
            without any is removed, and nothing partial is left.
    """
    targets, jobs = _plan(source, Path(out), options)
    fresh = not Path(out).exists()
    try:
        done, skipped, failed = _build_all(targets, jobs, options)
    except OutputError:
        _abandon(Path(out), targets, jobs, len(options.spec.channels), fresh)
        raise
    return BuildReport(tuple(t.folder for t in targets), tuple(sorted(done)), tuple(sorted(skipped)),
                       tuple(sorted(failed)))


def _build_all(targets: Sequence[Target], jobs: Sequence[CaseJob], options: BuildOptions
               ) -> tuple[list[str], set[str], list[tuple[str, str]]]:
    """Prepare the data set folders, run the jobs not yet complete, finalize; ``(done, skipped, failed)``."""
    n_channels = len(options.spec.channels)
    with open_runner(options.scheduler, options.workers) as run:
        for target in targets:
            _make_folder(target.folder)
            # Clear what a killed build left (.partial/, incomplete cases); one build per
            # output folder at a time.
            _finalize(target, options.spec)
        skipped = {j.case_id for j in jobs if all(is_complete(t.folder, j.case_id, n_channels) for t in targets)}
        todo = [j for j in jobs if j.case_id not in skipped]
        try:
            done, failed = _run_all(run, todo, len(jobs), len(skipped), options.progress)
        finally:
            forget_loaded()  # in-process builds: do not keep the last CT in memory
    for target in targets:
        _finalize(target, options.spec)
    return done, skipped, failed


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise output_error(err, folder) from err


def _abandon(out: Path, targets: Sequence[Target], jobs: Sequence[CaseJob], n_channels: int, fresh: bool) -> None:
    """After an output error: remove what unfinished cases left, and a new output folder without a complete case.

    Complete cases stay (a re-run resumes from them); the workers have stopped by now.
    """
    if fresh and not any(is_complete(t.folder, j.case_id, n_channels) for t in targets for j in jobs):
        if out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        return
    for target in targets:
        discard_partial(target.folder)


def _run_all(run: Runner, todo: Sequence[CaseJob], total: int, skipped: int, progress: bool
             ) -> tuple[list[str], list[tuple[str, str]]]:
    """Run the jobs ``todo`` with a progress bar over all ``total`` cases; ``(done, failed)`` case ids."""
    from tqdm import tqdm

    done: list[str] = []
    failed: list[tuple[str, str]] = []
    # build_case is looked up at run time, so that a stand-in can replace it (tests do).
    results = iter(run(build_case, todo) if todo else ())
    with tqdm(total=total, initial=skipped, unit="case", desc="synth build", disable=not progress) as bar:
        try:
            for result in results:
                if result.output_error is not None:  # the place is at fault, not the subject: stop
                    raise OutputError(*result.output_error)
                if result.ok:
                    done.append(result.case_id)
                else:
                    failed.append((result.case_id, result.message or "unknown error"))
                    log.error("%s: %s", result.case_id, result.message)
                bar.update(1)
        finally:
            if isinstance(results, Generator):
                results.close()  # the runner cancels the jobs not yet started
    return done, failed
