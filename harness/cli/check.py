"""``kvcheck check``: decide whether recorded histories are valid.

Run directories and kvcheck history files get the checkers of their test (or ``--checkers``);
Jepsen histories (``--format jepsen``) the linearizability checker. One line (and table) per
input, or one JSON line with ``--json``; the exit code is the worst verdict.
"""

from __future__ import annotations

import argparse
import json
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
from kvcheck.harness.cli.options import positive_float
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.verdicts import STYLE, WORD, print_results
from kvcheck.terminal import count, seconds


def register(commands: Any) -> None:
    """Add ``check`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser(
        "check", help="decide whether recorded histories are valid",
        description="Check kvcheck run directories (test.json + history.jsonl), kvcheck "
        "history files, or Jepsen histories (--format jepsen). Exit code: the worst verdict.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="run directories or history files")
    p.add_argument("--format", choices=("kvcheck", "jepsen"), default="kvcheck",
                   help="input format (default: %(default)s)")
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


def _check(args: argparse.Namespace, out: Console, err: Console) -> int:
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        err.print(f"kvcheck check: error: no such file or directory: {', '.join(missing)}",
                  markup=False, highlight=False, soft_wrap=True)
        return Exit.USAGE
    limits = {"time_limit": args.time_limit, "memory_limit": int(args.memory_limit * 2**20)}
    verdicts = []
    for path in args.paths:
        t0 = time.monotonic()
        if args.format == "jepsen":
            checked = _check_jepsen(path, args, limits)
        else:
            checked = _check_kvcheck(path, args, limits)
        elapsed = round(time.monotonic() - t0, 3)
        verdicts.append(checked.verdict)
        if args.json:
            line: dict[str, Any] = {"file": path, "valid": checked.verdict.to_json(),
                                    "ops": checked.ops, "seconds": elapsed}
            if checked.error:
                line["error"] = checked.error
            if checked.results is not None:
                line["checkers"] = {c.checker: c.valid.to_json()
                                    for c in checked.results.checks}
            print(json.dumps(line), flush=True)
        else:
            _print_checked(out, err, path, checked, elapsed)
    return Exit.of(combine(verdicts))


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
