"""Segment many inputs, one output folder each, in this process or on a dask.distributed cluster.

A :class:`SegmentJob` is one input (plain values: paths, the model spec, the options),
and :func:`segment_job` segments it and saves its result, on whatever worker it lands
(:mod:`ts2d_xray.parallel`): the local run and a cluster run go through the same
function, so they write the same files.  Each worker process loads a model once, on its
first input of that model and those options (:func:`cached_segmenter`), and keeps it for
the rest of the run; :func:`forget_segmenters` releases them.

A bad input fails alone: :func:`segment_job` returns its
:class:`~ts2d_xray.errors.InputError` (or the :class:`~ts2d_xray.errors.OutputError` of
a place that cannot be written) as a :class:`SegmentOutcome`, and its output folder does
not appear (:meth:`ts2d_xray.segment.result.Result.save` writes a folder whole or not at
all).  The job carries the SHA-256 of the weights the client loaded, so a worker that
resolves the model name to other weights refuses every input rather than write other
masks.

Input paths travel as given, so that ``source`` in ``report.json`` reads as in a local
run: on a cluster whose workers run in another working folder, give absolute paths.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ts2d_xray.errors import InputError, OutputError
from ts2d_xray.segment.options import SegmentOptions
from ts2d_xray.segment.segmenter import Segmenter, model_checksum

__all__ = ["LOADS", "SegmentJob", "SegmentOutcome", "cached_segmenter", "forget_segmenters", "model_specs",
           "segment_job"]

_lock = threading.Lock()
_segmenters: dict[tuple[str, str], Segmenter] = {}
#: How many times this process loaded each ``(model, options)``: once per worker per run.
LOADS: Counter = Counter()


def cached_segmenter(model: str, options: SegmentOptions) -> Segmenter:
    """This process's Segmenter of a model spec and options, loaded on first use (thread-safe)."""
    key = (model, repr(options))  # repr: list-valued options are not hashable
    with _lock:
        seg = _segmenters.get(key)
        if seg is None:
            seg = _segmenters[key] = Segmenter(model, options=options)
            LOADS[key] += 1
    return seg


def forget_segmenters() -> None:
    """Close and drop this process's cached Segmenters (networks, GPU memory, unpacked archives)."""
    with _lock:
        for seg in _segmenters.values():
            seg.close()
        _segmenters.clear()


@dataclass(frozen=True)
class SegmentJob:
    """One input to segment and save.

    Attributes:
        path: The input file or DICOM folder, as given (``source`` in the report).
        out: Its output folder (absolute, so that every worker writes the same place).
        model: Model spec (installed or bundled name, or an absolute bundle path).
        options: How to segment.
        formats: Output formats; None: the result's default formats.
        spacing: ``(row, col)`` pixel spacing in mm replacing a radiograph's, or None.
        checksum: SHA-256 of the model weights the client loaded
            (:func:`~ts2d_xray.segment.segmenter.model_checksum`); None: not checked.
    """

    path: Path
    out: Path
    model: str
    options: SegmentOptions
    formats: tuple[str, ...] | None = None
    spacing: tuple[float, float] | None = None
    checksum: str | None = None


@dataclass(frozen=True)
class SegmentOutcome:
    """What became of one job: its report (``report.json``'s content) or why it failed.

    Attributes:
        report: :meth:`~ts2d_xray.segment.result.Result.report` of the saved result, or None.
        seconds: Wall time of segmenting and saving, in s.
        error: ``(path, problem)`` of the job's InputError, or None.
        output_error: ``(path, problem)`` of an output that could not be written, or None.
    """

    report: dict[str, Any] | None
    seconds: float = 0.0
    error: tuple[str | None, str] | None = None
    output_error: tuple[str | None, str] | None = None

    def raise_error(self) -> None:
        """Raise the job's OutputError or InputError again (no-op for a success)."""
        if self.output_error is not None:
            raise OutputError(*self.output_error)
        if self.error is not None:
            raise InputError(*self.error)


def segment_job(job: SegmentJob) -> SegmentOutcome:
    """Segment one input with this process's cached Segmenter and save it into ``job.out``.

    Bad input and unwritable outputs come back in the outcome; anything else (a bug)
    raises.
    """
    started = time.perf_counter()
    try:
        seg = cached_segmenter(job.model, job.options)
        if job.checksum is not None and model_checksum(seg.manifest) != job.checksum:
            raise InputError(job.model, f"this worker's model has other weights (SHA-256 "
                                        f"{model_checksum(seg.manifest)}, expected {job.checksum}): every worker "
                                        "must see the same model files")
        result = seg(job.path, spacing=job.spacing)
        result.save(job.out, job.formats)
        report = result.report()
    except OutputError as err:
        return SegmentOutcome(None, time.perf_counter() - started, output_error=(err.path, err.problem))
    except InputError as err:
        return SegmentOutcome(None, time.perf_counter() - started, error=(err.path, err.problem))
    return SegmentOutcome(report, time.perf_counter() - started)


def model_specs(specs: Sequence[str]) -> list[str]:
    """Model specs as workers must see them: existing paths made absolute, names as they are."""
    return [str(Path(s).expanduser().absolute()) if Path(s).expanduser().exists() else s for s in specs]
