"""Errors raised for a caller's bad input, and for outputs that cannot be written.

The CLI maps each to one line on stderr and its exit code (``docs/errors.md``):
:class:`InputError` -> 2 (the input is at fault: fix it), :class:`OutputError` -> 3
(the output place is at fault: disk full, read-only folder, no permission; the input
was fine).  Neither leaves a half-written output behind.
"""

from __future__ import annotations

from os import PathLike

__all__ = ["EXIT_INPUT", "EXIT_OUTPUT", "InputError", "OutputError"]

#: Exit code of the ``ts2d-xray`` command for bad input or usage.
EXIT_INPUT = 2
#: Exit code of the ``ts2d-xray`` command when an output cannot be written.
EXIT_OUTPUT = 3


class InputError(ValueError):
    """An input file or folder that cannot be used, with the path and the reason.

    The CLI turns it into a one-line message and exit code 2.
    """

    def __init__(self, path: str | PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class OutputError(OSError):
    """An output that cannot be written (disk full, read-only, no permission), with the path and the cause.

    Raised instead of the underlying :class:`OSError` so that callers (the CLI, a data
    set build) can tell it from a bad input: the input is never blamed.  The CLI turns it
    into a one-line message and exit code 3.
    """

    def __init__(self, path: str | PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
