"""``ts2d-xray`` command line: a thin layer over the Python API.

Exit codes (``docs/errors.md``): 0 success, 1 unexpected failure (a bug: traceback),
2 bad input or usage, 3 an output that cannot be written (disk full, read-only); 2 and
3 come with a one-line message naming the file and the problem, and no output is left
behind.

Each command lives in the module named after it (:mod:`.project`, :mod:`.demo`,
:mod:`.train`, :mod:`.segment`, :mod:`.evaluate`; ``synth`` in :mod:`synth.cli`) with an
``add_parser`` and a runner that returns the exit code or raises.  Only the user's
mistakes become exit code 2 here: :class:`~ts2d_xray.errors.InputError` and the
ValueError / FileExistsError the API raises for bad arguments.  Anything else (a
KeyError included) is a bug and surfaces with its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ts2d_xray.cli import demo, evaluate, project, segment, train
from ts2d_xray.cli.logs import command_output
from ts2d_xray.errors import EXIT_INPUT, EXIT_OUTPUT, InputError, OutputError
from ts2d_xray.segment.result import tool_version

__all__ = ["build_parser", "main"]

#: What each command runs: parsed arguments -> exit code.
Runner = Callable[[argparse.Namespace], int]

#: The user's mistakes: one line on stderr and exit code 2 (InputError is a ValueError).
USER_ERRORS: tuple[type[Exception], ...] = (InputError, ValueError, FileExistsError)


def _run_synth(args: argparse.Namespace) -> int:
    from synth.cli import run

    return run(args)


_RUNNERS: dict[str, Runner] = {
    "project": project.run, "demo": demo.run, "synth": _run_synth, "segment": segment.run_segment,
    "models": segment.run_models, "train": train.run_train, "adapt": train.run_adapt,
    "export-regions": train.run_export_regions, "evaluate": evaluate.run,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``ts2d-xray`` parser with every command (``synth``'s when that package is installed)."""
    parser = argparse.ArgumentParser(prog="ts2d-xray", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {tool_version()}")
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="print errors only (no warnings)")
    talk.add_argument("-v", "--verbose", action="store_true", help="also print progress and details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    project.add_parser(sub)
    demo.add_parser(sub)
    train.add_parsers(sub)
    try:  # synth is optional and never imported with ts2d_xray itself
        from synth import cli as synth_cli
    except ImportError as err:
        if err.name != "synth":
            raise
    else:
        synth_cli.add_parser(sub)
    segment.add_parser(sub)
    evaluate.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ts2d-xray`` command; returns the exit code.

    Usage errors exit through argparse (SystemExit 2); the user's errors return 2 and
    outputs that cannot be written 3, with one line on stderr; any other exception
    propagates (traceback, exit code 1).  Warnings print as one line each
    (:mod:`ts2d_xray.cli.logs`; ``--quiet`` hides them).
    """
    args = build_parser().parse_args(argv)
    try:
        with command_output(quiet=args.quiet, verbose=args.verbose):
            return _RUNNERS[args.command](args)
    except OutputError as err:
        print(f"ts2d-xray {args.command}: error: cannot write {err}", file=sys.stderr)
        return EXIT_OUTPUT
    except USER_ERRORS as err:
        print(f"ts2d-xray {args.command}: error: {err}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
