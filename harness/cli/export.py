"""``kvcheck export``: write a kvcheck run's history in another tool's format.

One format so far, Jepsen's (:mod:`kvcheck.checkers.jepsen_export`): what Knossos, Elle and
Jepsen's own checkers read, and what ``kvcheck check`` reads back. An input that cannot be read
is a one-line error and exit 2, as ``kvcheck check`` answers it; an output that cannot be
written is exit 254.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from kvcheck.checkers import HistoryError, read_history, read_test_config
from kvcheck.checkers.jepsen import read_text
from kvcheck.checkers.jepsen_export import jepsen_lines, workload_of
from kvcheck.checkers.suite import HISTORY_FILE, TEST_FILE
from kvcheck.harness.exitcodes import Exit
from kvcheck.terminal import count

_HEAD_BYTES = 1 << 16  # read first, to name a binary file before parsing it


def register(commands: Any) -> None:
    """Add ``export`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser(
        "export", help="write a run's history as a Jepsen history (EDN)",
        description="Write the history of a kvcheck run as Jepsen's history.edn does: one op "
        "map per line ({:index 0, :time 1200, :type :invoke, :process 0, :f :write, :value "
        "[\"k3\" 17]}), which Knossos, Elle and jepsen.history read, and kvcheck check reads "
        "back. Ops on keys carry jepsen.independent [key value] tuples; a read of several "
        "sibling versions is a set of them, #{1 2}; the nemesis is process :nemesis. "
        "docs/history-format.md (Exported histories) says what maps to what. Exit code: 0 "
        "written, 2 the history cannot be read, 254 bad arguments or FILE cannot be written.")
    p.add_argument("path", metavar="RUN_DIR",
                   help="a kvcheck run directory, or a history.jsonl file (with the test.json "
                   "beside it, if any)")
    p.add_argument("--format", choices=("jepsen",), default="jepsen",
                   help="output format (default: %(default)s)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                   help="write to FILE (replaced if it exists) instead of standard output")
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace, out: Console, err: Console) -> int:
    src = Path(args.path)
    if not src.exists():
        _error(err, f"error: no such file or directory: {src}")
        return Exit.USAGE
    history = src / HISTORY_FILE if src.is_dir() else src
    config = history.parent / TEST_FILE
    try:
        for path in (history, config):
            if path.is_file():
                read_text(path, _HEAD_BYTES)
        ops = read_history(history)
        if not ops:
            raise HistoryError("no ops to export", history)
        workload = read_test_config(config).workload if config.exists() else workload_of(ops)
        lines = jepsen_lines(ops, workload)
    except HistoryError as e:
        _error(err, str(e))
        return Exit.UNKNOWN
    except UnicodeDecodeError:  # binary data past the start read above
        _error(err, f"{src}: not UTF-8 text (a binary file?)")
        return Exit.UNKNOWN
    except ValueError as e:  # a workload other than register and set
        _error(err, f"{config}: {e}")
        return Exit.UNKNOWN
    if args.output is None:
        _write(sys.stdout, lines)
        return Exit.OK
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            _write(f, lines)
    except OSError as e:
        _error(err, f"cannot write {args.output}: {e.strerror}")
        return Exit.USAGE
    out.print(f"wrote {count(len(ops))} ops to {args.output}", markup=False, highlight=False,
              soft_wrap=True)
    return Exit.OK


def _error(err: Console, message: str) -> None:
    err.print(f"kvcheck export: {message}", markup=False, highlight=False, soft_wrap=True)


def _write(f: IO[str], lines: Iterable[str]) -> None:
    """Write ``lines`` to ``f``; a reader that stops early (``| head``) is no error."""
    try:
        f.writelines(lines)
        f.flush()
    except BrokenPipeError:
        # As the Python docs advise: point stdout at devnull, so that exiting does not fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
