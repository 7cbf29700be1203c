"""``kvcheck check``: decide whether recorded histories are valid.

Run directories and kvcheck history files get the checkers of their test (or ``--checkers``);
Jepsen histories the linearizability checker. A path is kvcheck's when it is a directory with
``test.json`` or ``history.jsonl``, or a file of JSON lines; anything else is Jepsen's (unless
``--format`` says): a history file, or a directory of Jepsen's store, which stands for every
run in it (:mod:`kvcheck.checkers.jepsen_store`). One line (and table) per history, or one JSON
line with ``--json``; the exit code is the worst verdict. An input that cannot be read (binary,
not UTF-8, empty, malformed, or nothing recognisable in a directory) is *unknown*, with a
one-line error.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from kvcheck.checkers import (
    CHECKERS,
    MODELS,
    HistoryError,
    Results,
    TestConfig,
    Verdict,
    check_history,
    check_linearizable,
    check_run,
    combine,
    read_history,
    read_jepsen_history,
    read_test_config,
)
from kvcheck.checkers.edn import EDNError
from kvcheck.checkers.jepsen import read_text
from kvcheck.checkers.jepsen_store import HISTORY_FILES, jepsen_histories
from kvcheck.checkers.suite import FINAL_STATE_FILE, HISTORY_FILE, TEST_FILE
from kvcheck.harness.cli.values import positive_float
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.verdicts import STYLE, WORD, print_results
from kvcheck.terminal import count, seconds


def register(commands: Any) -> None:
    """Add ``check`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser(
        "check", help="decide whether recorded histories are valid",
        description="Check kvcheck run directories (test.json + history.jsonl) and history "
        "files, and Jepsen histories: history.edn, history.txt or jepsen.log files, or "
        "directories of Jepsen's store/ (a run; a test or store/ itself: every run in it, "
        "store/latest: the newest). The format is told from each path unless --format says. "
        "Exit code: the worst verdict.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="run directories or history files, kvcheck's or Jepsen's")
    p.add_argument("--format", choices=("auto", "kvcheck", "jepsen"), default="auto",
                   help="input format; auto: kvcheck's for a directory with test.json or "
                   "history.jsonl and for a file of JSON lines, Jepsen's otherwise "
                   "(default: %(default)s)")
    p.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="linearizability model (default: cas-register for Jepsen histories "
                   "and kvcheck histories with compare-and-set, register otherwise)")
    p.add_argument("--checkers", type=_checker_names, default=None, metavar="A,B",
                   help=f"checkers to run on kvcheck runs ({', '.join(sorted(CHECKERS))}); "
                   "default: test.json's, else the workload's")
    p.add_argument("--independent", choices=("auto", "yes", "no"), default="auto",
                   help="Jepsen histories: values are [key value] pairs (default: %(default)s)")
    p.add_argument("--time-limit", type=positive_float, default=60.0, metavar="SECONDS",
                   help="linearizability budget per key (default: %(default)g)")
    p.add_argument("--memory-limit", type=positive_float, default=1024.0, metavar="MB",
                   help="linearizability memo-table budget per key (default: %(default)g)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for checking keys in parallel (default: automatic)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line per input instead of tables")
    p.add_argument("--no-write", action="store_true",
                   help="do not write results.json into run directories")
    p.set_defaults(handler=_check)


def _checker_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown checker(s) {', '.join(unknown) or '(none)'}; "
            f"known: {', '.join(sorted(CHECKERS))}")
    return names


@dataclass(frozen=True, slots=True)
class _Checked:
    """What checking one input found: a verdict, its ops, and the results or the error."""

    verdict: Verdict
    ops: int
    results: Results | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class _Input:
    """One history to check: its path, its format, or why it cannot be checked."""

    path: str
    format: str
    error: str = ""


def _check(args: argparse.Namespace, out: Console, err: Console) -> int:
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        err.print(f"kvcheck check: error: no such file or directory: {', '.join(missing)}",
                  markup=False, highlight=False, soft_wrap=True)
        return Exit.USAGE
    limits = {"time_limit": args.time_limit, "memory_limit": int(args.memory_limit * 2**20)}
    verdicts = []
    for inp in [i for path in args.paths for i in _inputs(path, args.format)]:
        t0 = time.monotonic()
        if inp.error:
            checked = _Checked(Verdict.UNKNOWN, 0, error=inp.error)
        elif inp.format == "jepsen":
            checked = _check_jepsen(inp.path, args, limits)
        else:
            checked = _check_kvcheck(inp.path, args, limits)
        elapsed = round(time.monotonic() - t0, 3)
        verdicts.append(checked.verdict)
        if args.json:
            line: dict[str, Any] = {"file": inp.path, "valid": checked.verdict.to_json(),
                                    "ops": checked.ops, "seconds": elapsed}
            if checked.error:
                line["error"] = checked.error
            if checked.results is not None:
                line["checkers"] = {c.checker: c.valid.to_json()
                                    for c in checked.results.checks}
            print(json.dumps(line), flush=True)
        else:
            _print_checked(out, err, inp.path, checked, elapsed)
    return Exit.of(combine(verdicts))


_HEAD_BYTES = 1 << 16  # enough to tell a file's format, and binary data at its start
_JSON_OBJECT = re.compile(r'\s*\{\s*"')  # kvcheck's lines; a Jepsen op map reads {:


def _inputs(path: str, fmt: str) -> list[_Input]:
    """The histories ``path`` stands for, each with its format (``fmt``, or told from it)."""
    p = Path(path)
    try:
        if p.is_dir():
            return _dir_inputs(path, fmt)
        head = read_text(p, _HEAD_BYTES)
        if not head.strip():
            raise HistoryError("empty file", p)
        if fmt == "auto":
            fmt = "kvcheck" if _JSON_OBJECT.match(head) else "jepsen"
        return [_Input(path, fmt)]
    except HistoryError as e:
        return [_Input(path, fmt, str(e))]


def _dir_inputs(path: str, fmt: str) -> list[_Input]:
    """The histories in directory ``path``; raises :class:`HistoryError` when it holds none,
    or when a kvcheck run's file starts with binary data."""
    d = Path(path)
    if fmt == "auto":
        if not ((d / TEST_FILE).exists() or (d / HISTORY_FILE).exists()):
            try:
                return [_Input(str(h), "jepsen") for h in jepsen_histories(d)]
            except HistoryError:
                raise HistoryError(f"neither a kvcheck run ({TEST_FILE}, {HISTORY_FILE}) nor "
                                   f"Jepsen histories ({', '.join(HISTORY_FILES)}) here or in "
                                   "the two levels below", d) from None
        fmt = "kvcheck"
    if fmt == "jepsen":
        return [_Input(str(h), "jepsen") for h in jepsen_histories(d)]
    for name in (TEST_FILE, HISTORY_FILE, FINAL_STATE_FILE):
        if (d / name).is_file():
            read_text(d / name, _HEAD_BYTES)
    return [_Input(path, "kvcheck")]


def _check_jepsen(path: str, args: argparse.Namespace, limits: dict[str, Any]) -> _Checked:
    model = args.model or "cas-register"
    try:
        ops = read_jepsen_history(path, independent=args.independent)
        res = check_linearizable(ops, model, workers=args.workers, **limits)
    except (HistoryError, EDNError) as e:
        return _Checked(Verdict.UNKNOWN, 0, error=str(e))
    return _Checked(res.valid, len(ops), Results((res,)))


def _check_kvcheck(path: str, args: argparse.Namespace, limits: dict[str, Any]) -> _Checked:
    p = Path(path)
    options: dict[str, Any] = dict(limits)
    if args.model:
        options["model"] = args.model
    try:
        if p.is_dir():
            results = check_run(p, args.checkers, write=not args.no_write, **options)
        else:
            ops = read_history(p)
            cfg_path = p.parent / "test.json"
            config = read_test_config(cfg_path) if cfg_path.exists() else TestConfig()
            results = check_history(ops, config, None, args.checkers, **options)
    except HistoryError as e:
        return _Checked(Verdict.UNKNOWN, 0, error=str(e))
    except OSError as e:
        return _Checked(Verdict.UNKNOWN, 0, error=f"{path}: {e}")
    except UnicodeDecodeError:  # binary data past the start that _inputs read
        return _Checked(Verdict.UNKNOWN, 0, error=f"{path}: not UTF-8 text (a binary file?)")
    return _Checked(results.valid, results.meta.get("ops", 0), results)


def _print_checked(out: Console, err: Console, path: str, checked: _Checked,
                   elapsed: float) -> None:
    v = checked.verdict
    out.print(f"[{STYLE[v]}]{WORD[v]}[/] {escape(path)} "
              f"[dim]({count(checked.ops)} ops, {seconds(elapsed)})[/]", highlight=False,
              soft_wrap=True)
    if checked.error:
        err.print(f"  [yellow]{escape(checked.error)}[/]", highlight=False, soft_wrap=True)
    elif checked.results is not None:
        print_results(out, checked.results)
