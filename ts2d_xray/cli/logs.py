"""What the ``ts2d-xray`` command prints besides its results: warnings and log lines, one line each.

The library reports doubts with :func:`warnings.warn` (a radiograph without pixel
spacing, a folder with two DICOM series) and progress with :mod:`logging`.  The command
shows both the same way, on stderr, as ``ts2d-xray: warning: <message>`` (no source line,
no category), each distinct message once per run; ``--quiet`` keeps only errors and
``--verbose`` adds progress (``ts2d-xray: info: ...``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO

__all__ = ["PREFIX", "command_output"]

#: Start of every line the command prints on stderr.
PREFIX = "ts2d-xray"

_log = logging.getLogger("ts2d_xray.cli")


class _OneLine(logging.Formatter):
    """``ts2d-xray: <level>: <message>``, the message on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = " ".join(record.getMessage().split())
        if record.exc_info and record.levelno >= logging.ERROR:
            message += f" ({record.exc_info[1]})"
        return f"{PREFIX}: {record.levelname.lower()}: {message}"


class _Once(logging.Filter):
    """Let each distinct warning message through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _level(quiet: bool, verbose: bool) -> int:
    return logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING


@contextlib.contextmanager
def command_output(quiet: bool = False, verbose: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """Within the block, warnings and log records go to ``stream`` (stderr) as one line each.

    The root logger's handlers and level and the warning filters are restored on exit,
    so the command can run inside another program (or a test) without changing it.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_OneLine())
    handler.addFilter(_Once())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(_level(quiet, verbose))

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        _log.warning("%s", message)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # _Once dedups per run; the registry would across runs
            warnings.showwarning = show
            yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
