"""The ``ts2d-xray`` command line: a thin layer over the Python API."""

from ts2d_xray.cli.main import main

__all__ = ["main"]
