"""Where the cases of a build run: this process, a process pool or a dask.distributed cluster.

The runners themselves are :mod:`ts2d_xray.parallel`'s (shared with ``ts2d-xray
segment``); this module adapts them to cases.  A case runner takes the function that
builds one case (:func:`synth.case.build_case`, or a stand-in) and the jobs, and yields
one :class:`~synth.case.CaseResult` per job as the cases finish (in any order).
:func:`open_runner` opens the workers before anything is written, so that a bad
scheduler address writes nothing, and closes them afterwards; on an interrupt the jobs
not yet started are cancelled.  A worker that dies (killed, out of memory) fails its
case instead of the build.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Callable, Iterator, Sequence

from ts2d_xray import parallel

from synth.case import CaseJob, CaseResult

__all__ = ["BuildCase", "Runner", "open_runner"]

#: Builds one case; never raises (see :func:`synth.case.build_case`).
BuildCase = Callable[[CaseJob], CaseResult]
#: Runs jobs with a case builder, yielding their results as they finish.
Runner = Callable[[BuildCase, Sequence[CaseJob]], Iterator[CaseResult]]


def _run_cases(run: parallel.Runner, build_case: BuildCase, jobs: Sequence[CaseJob]) -> Iterator[CaseResult]:
    """The cases' results as they finish; a case whose worker failed gets a failed result."""
    outcomes = run(build_case, jobs, labels=[j.case_id for j in jobs])
    try:
        for done in outcomes:
            if done.ok:
                yield done.value
            else:
                yield CaseResult(jobs[done.index].case_id, False,
                                 f"worker failed: {type(done.error).__name__}: {done.error}")
    finally:
        outcomes.close()  # the runner cancels the jobs not yet started


@contextlib.contextmanager
def open_runner(scheduler: str | None, workers: int) -> Iterator[Runner]:
    """Open the workers: a dask scheduler's (``scheduler``), else ``workers`` processes.

    Args:
        scheduler: Address of a dask.distributed scheduler (e.g. ``tcp://host:8786``),
            ``local`` / ``local:N`` for a LocalCluster of N processes for this build
            (:func:`ts2d_xray.parallel.local_workers`), or None; its workers must import
            this package and see the same file paths.
        workers: Worker processes when there is no scheduler; 1 runs in this process.

    Raises:
        InputError: The scheduler cannot be reached.
    """
    with parallel.open_runner(scheduler, workers) as run:
        yield partial(_run_cases, run)
