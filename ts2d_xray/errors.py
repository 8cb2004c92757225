"""Errors raised for a caller's bad input."""

from __future__ import annotations

from os import PathLike

__all__ = ["InputError"]


class InputError(ValueError):
    """An input file or folder that cannot be used, with the path and the reason.

    The CLI turns it into a one-line message and exit code 2.
    """

    def __init__(self, path: str | PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
