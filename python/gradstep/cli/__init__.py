"""The ``gradstep`` command line: ``gradstep compare`` and ``gradstep bench``.

Each command is a module with two functions: ``add_<name>(subparsers)`` declares its arguments
and sets ``func=cmd_<name>``; ``cmd_<name>(args) -> int`` does the work and returns the exit
code. A new command is registered by appending its ``add_<name>`` to ``COMMANDS``.

- ``_args``: the parser, ``UsageError`` and the argument type converters;
- ``compare``: ``gradstep compare`` and its table;
- ``bench``: ``gradstep bench`` (the measurements are in ``gradstep.bench``).

A user's mistake (a bad option value, a missing file, a data set gradstep cannot fit) ends with
exit code 2 and one line on stderr, never a traceback: commands raise ``UsageError`` and
``main`` reports it the way argparse reports its own errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ._args import Parser, UsageError
from .bench import add_bench, cmd_bench
from .compare import DEFAULT_OUT, PLOT_NOTE, add_compare, cmd_compare, format_table

__all__ = ["COMMANDS", "DEFAULT_OUT", "PLOT_NOTE", "PROG", "UsageError", "build_parser",
           "cmd_bench", "cmd_compare", "format_table", "main"]

PROG = "gradstep"

#: one function per command; each adds its subparser and sets func=cmd_<name>
COMMANDS = [add_compare, add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Logistic regression by gradient descent: vanilla, normalized and adaptive "
        "steps, side by side.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code. argparse errors and UsageError raise
    SystemExit(2) after one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else [os.fspath(a) for a in argv])
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        args.parser.error(str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gradstep compare | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    return 2  # not reached: args.parser.error exits
