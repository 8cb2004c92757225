"""Where the cases of a build run: this process, a process pool or a dask.distributed cluster.

A *runner* takes the function that builds one case (:func:`synth.case.build_case`, or a
stand-in) and the jobs, and yields one :class:`~synth.case.CaseResult` per job as the
cases finish (in any order).  :func:`open_runner` opens the workers before anything is
written, so that a bad scheduler address writes nothing, and closes them afterwards; on
an interrupt the jobs not yet started are cancelled.  A worker that dies (killed, out of
memory) fails its case instead of the build.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from concurrent.futures import Executor, Future
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ts2d_xray.errors import InputError

from synth.case import CaseJob, CaseResult

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["BuildCase", "Runner", "open_runner"]

#: Builds one case; never raises (see :func:`synth.case.build_case`).
BuildCase = Callable[[CaseJob], CaseResult]
#: Runs jobs with a case builder, yielding their results as they finish.
Runner = Callable[[BuildCase, Sequence[CaseJob]], Iterator[CaseResult]]


def _run_serial(build_case: BuildCase, jobs: Sequence[CaseJob]) -> Iterator[CaseResult]:
    return map(build_case, jobs)


def _run_pool(pool: Executor, build_case: BuildCase, jobs: Sequence[CaseJob]) -> Iterator[CaseResult]:
    from concurrent.futures import as_completed

    futures = {pool.submit(build_case, job): job for job in jobs}
    try:
        for future in as_completed(futures):
            yield _collected(future, futures[future].case_id)
    finally:
        for future in futures:  # on an interrupt: do not start what is left
            future.cancel()


def _run_dask(client: Client, build_case: BuildCase, jobs: Sequence[CaseJob]) -> Iterator[CaseResult]:
    from distributed import as_completed

    futures = client.map(build_case, jobs, key=[f"synth-build-{uuid.uuid4().hex[:8]}-{j.case_id}" for j in jobs])
    case_of = {f.key: j.case_id for f, j in zip(futures, jobs)}
    try:
        for future in as_completed(futures):
            yield _collected(future, case_of[future.key])
    finally:
        client.cancel(futures)


def _collected(future: Future | Any, case_id: str) -> CaseResult:
    """A future's result; a worker that died (killed, out of memory) fails its case."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - BrokenProcessPool, KilledWorker, ...
        return CaseResult(case_id, False, f"worker failed: {type(err).__name__}: {err}")


@contextlib.contextmanager
def open_runner(scheduler: str | None, workers: int) -> Iterator[Runner]:
    """Open the workers: a dask scheduler's (``scheduler`` address), else ``workers`` processes.

    Args:
        scheduler: Address of a dask.distributed scheduler (e.g. ``tcp://host:8786``),
            or None; its workers must import this package and see the same file paths.
        workers: Worker processes when there is no scheduler; 1 runs in this process.

    Raises:
        InputError: The scheduler cannot be reached.
    """
    if scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, ValueError, TypeError) as err:
            raise InputError(None, f"cannot connect to the dask scheduler {scheduler!r} ({err})") from None
        with client:
            yield partial(_run_dask, client)
    elif workers == 1:
        yield _run_serial
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: forking a process that already runs threads (torch,
        # SimpleITK, tqdm) can deadlock the children.
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            yield partial(_run_pool, pool)


def _init_worker(threads: int) -> None:
    """Share the CPUs between worker processes: torch would give each one all of them."""
    import torch

    torch.set_num_threads(threads)
