"""Where independent items run: this process, a process pool or a dask.distributed cluster.

One home of the *runner* idea, shared by ``synth build`` (data set cases) and
``ts2d-xray segment`` (inputs).  A runner maps a plain top-level function over picklable
items and yields one :class:`Done` per item, as the items finish (``ordered=False``) or
in the order given (``ordered=True``).  A failure stays with its item: the exception the
function raised is the item's :attr:`Done.error`, and a worker that dies (killed, out of
memory) or a cancelled task fails its item only, with :attr:`Done.lost` set.

:func:`open_runner` opens the workers before anything is written, so that a bad
scheduler address writes nothing, and closes them afterwards; on an interrupt (or when
the caller stops reading) the items not yet started are cancelled.  The ``--scheduler``
flag of both commands means the same (:func:`local_workers`):

* ``ADDRESS`` (``tcp://host:8786``): the workers of a running dask.distributed
  scheduler; they must import this package and see the same file paths.
* ``local`` or ``local:N``: a dask LocalCluster of N worker processes (default one per
  CPU), one thread each, started for this run and closed after it.

dask and torch are imported only when a runner that needs them opens.

Example:
    >>> def square(x: int) -> int:
    ...     return x * x
    >>> with open_runner(None) as run:
    ...     [(d.index, d.value) for d in run(square, [1, 2, 3], ordered=True)]
    [(0, 1), (1, 4), (2, 9)]
"""

from __future__ import annotations

import contextlib
import os
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

from ts2d_xray.errors import InputError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["Done", "LOCAL", "Runner", "local_workers", "open_runner"]

#: ``--scheduler`` value (optionally ``local:N``) that starts a LocalCluster for the run.
LOCAL = "local"


@dataclass(frozen=True)
class Done:
    """The outcome of one item.

    Attributes:
        index: Position of the item in the sequence given to the runner.
        value: What the function returned (None when it failed).
        error: The exception the function raised, or the worker's failure; None on success.
        lost: True when the item did not run to its end for a reason outside the function:
            its worker died (killed, out of memory) or its task was cancelled.
    """

    index: int
    value: Any = None
    error: BaseException | None = None
    lost: bool = False

    @property
    def ok(self) -> bool:
        """True when the function returned."""
        return self.error is None

    def describe(self) -> str:
        """One line on the failure: ``worker failed: <type>: <message>`` for a lost item, else ``<type>: <message>``."""
        if self.error is None:
            return "ok"
        text = f"{type(self.error).__name__}: {self.error}"
        return f"worker failed: {text}" if self.lost else text


class Runner(Protocol):
    """Runs ``fn`` on each item and yields a :class:`Done` per item.

    ``labels`` (one per item, unique) name the tasks on a dask dashboard; ``ordered``
    yields in item order instead of as the items finish.
    """

    def __call__(self, fn: Callable[[Any], Any], items: Sequence[Any], *, labels: Sequence[str] | None = None,
                 ordered: bool = False) -> Iterator[Done]: ...


def _run_serial(fn: Callable[[Any], Any], items: Sequence[Any], *, labels: Sequence[str] | None = None,
                ordered: bool = False) -> Iterator[Done]:
    for i, item in enumerate(items):
        try:
            value = fn(item)
        except Exception as err:  # noqa: BLE001 - the item's failure, as on a worker
            yield Done(i, error=err)
        else:
            yield Done(i, value)


def _run_pool(pool: Executor, fn: Callable[[Any], Any], items: Sequence[Any], *,
              labels: Sequence[str] | None = None, ordered: bool = False) -> Iterator[Done]:
    from concurrent.futures import BrokenExecutor, CancelledError, as_completed

    futures = [pool.submit(fn, item) for item in items]
    index = {f: i for i, f in enumerate(futures)}
    try:
        for future in futures if ordered else as_completed(futures):
            yield _collected(future, index[future], (BrokenExecutor, CancelledError))
    finally:
        for future in futures:  # on an interrupt: do not start what is left
            future.cancel()


def _run_dask(client: Client, fn: Callable[[Any], Any], items: Sequence[Any], *,
              labels: Sequence[str] | None = None, ordered: bool = False) -> Iterator[Done]:
    from asyncio import CancelledError as AsyncCancelled
    from concurrent.futures import CancelledError

    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    token = uuid.uuid4().hex[:8]
    names = labels if labels is not None else [str(i) for i in range(len(items))]
    prefix = fn.__name__.strip("_").replace("_", "-")
    futures = client.map(fn, items, key=[f"{prefix}-{token}-{n}" for n in names], pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for future in futures if ordered else as_completed(futures):
            yield _collected(future, index[future.key], (KilledWorker, CancelledError, AsyncCancelled))
    finally:
        client.cancel(futures)


def _collected(future: Any, index: int, lost: tuple[type[BaseException], ...]) -> Done:
    """A future's outcome: its value, the function's exception, or the worker's failure (``lost``)."""
    try:
        return Done(index, future.result())
    except lost as err:
        return Done(index, error=err, lost=True)
    except Exception as err:  # noqa: BLE001 - the function's own failure, re-raised by the future
        return Done(index, error=err)


def local_workers(scheduler: str) -> int | None:
    """The number of workers ``local`` / ``local:N`` asks for (``local``: one per CPU); None for an address.

    Raises:
        InputError: ``local:N`` with N not a positive integer.
    """
    name, _, count = scheduler.partition(":")
    if name != LOCAL:
        return None
    if not count:
        return os.cpu_count() or 1
    if not count.isdigit() or int(count) < 1:
        raise InputError(None, f"--scheduler {scheduler!r}: expected local or local:N with N >= 1 workers, "
                               "or a scheduler address such as tcp://host:8786")
    return int(count)


@contextlib.contextmanager
def open_runner(scheduler: str | None = None, workers: int = 1, *,
                cleanup: Callable[[], Any] | None = None) -> Iterator[Runner]:
    """Open the workers: a dask cluster's (``scheduler``), else ``workers`` processes, else this process.

    Args:
        scheduler: A dask.distributed scheduler address (e.g. ``tcp://host:8786``),
            ``local`` / ``local:N`` for a LocalCluster of N processes started for this
            run (see the module docstring), or None.  Its workers must import this
            package and see the same file paths.
        workers: Worker processes when there is no scheduler; 1 runs in this process.
        cleanup: Called on every dask worker when the runner closes (to drop what the
            run cached there, such as loaded models); this process and pool workers,
            which end with the run, are the caller's business.

    Raises:
        InputError: The scheduler cannot be reached, or a bad ``local:N``.
    """
    if scheduler:
        with _dask_client(scheduler) as client:
            try:
                yield partial(_run_dask, client)
            finally:
                if cleanup is not None:
                    with contextlib.suppress(Exception):  # a worker gone by now has nothing to drop
                        client.run(cleanup)
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


@contextlib.contextmanager
def _dask_client(scheduler: str) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a LocalCluster started for ``local[:N]``."""
    from distributed import Client, LocalCluster

    n = local_workers(scheduler)
    with _quiet_dask():
        if n is not None:
            threads = max(1, (os.cpu_count() or 1) // n)  # torch's threads per worker process
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                              env={"OMP_NUM_THREADS": str(threads)}) as cluster, Client(cluster) as client:
                yield client
            return
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, ValueError, TypeError) as err:
            raise InputError(None, f"cannot connect to the dask scheduler {scheduler!r} ({err})") from None
        with client:
            yield client


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """dask's own progress lines (scheduler and nanny start, cancelled keys) only from warnings up."""
    import logging

    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _init_worker(threads: int) -> None:
    """Share the CPUs between worker processes: torch (OpenMP) would give each one all of them.

    A spawned worker has not imported torch yet, which then reads ``OMP_NUM_THREADS``.
    """
    import sys

    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)

