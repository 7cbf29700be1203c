"""The ``kvcheck`` command line: one module per command, sharing :mod:`.options`.

Each command module has ``register(commands)``, which adds its parser with a ``handler``: a
function of the parsed arguments and the output and error consoles that returns the exit code
(:mod:`kvcheck.harness.exitcodes`, the one table of every command). A command line naming a
command loads that command's module alone: ``kvcheck check`` starts without the Docker SDK,
trio or networkx.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from rich.console import Console

from kvcheck import __version__
from kvcheck.harness.exitcodes import Exit, describe
from kvcheck.terminal import console

__all__ = ["COMMANDS", "build_parser", "main"]

#: The commands, in the order ``--help`` lists them; each is the module of that name here.
COMMANDS = ("run", "explore", "matrix", "suite", "check", "export", "report", "serve",
            "cluster", "image", "cleanup")


class _Parser(argparse.ArgumentParser):
    """argparse, but bad arguments exit 254 (2 means "unknown" here)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(Exit.USAGE, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``kvcheck`` parser with every command registered, or the command ``only``."""
    parser = _Parser(prog="kvcheck", description="Jepsen-style verification of key-value "
                     "stores: run tests, check histories.", epilog=describe(),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"kvcheck.harness.cli.{name}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kvcheck`` console script; returns the exit code."""
    out = console()
    err = console(stderr=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    named = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(named if named in COMMANDS else None).parse_args(argv)
    except SystemExit as e:  # --help exits 0; errors already exit 254
        return int(e.code or 0)
    return guarded(lambda: args.handler(args, out, err), err)


def guarded(command: Callable[[], int], err: Console) -> int:
    """``command``'s exit code; ``INTERRUPTED`` when Ctrl-C stopped it, ``CRASH`` (with the
    traceback on stderr) when it raised."""
    try:
        return int(command())
    except KeyboardInterrupt:
        err.print("kvcheck: interrupted")
        return Exit.INTERRUPTED
    except Exception:
        err.print("kvcheck: internal error (a bug in kvcheck; please report it):",
                  markup=False)
        sys.stderr.write(traceback.format_exc())
        return Exit.CRASH
