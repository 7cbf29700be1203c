"""The ``kvcheck`` command line.

Subcommands are registered by small ``_add_<name>(subparsers)`` functions, each setting a
``handler`` default that takes the parsed arguments and returns an exit code; add ``run``,
``image``, ``cleanup`` and the rest the same way.

Exit codes (one table for every subcommand):

===  =========================================================
0    valid
1    invalid
2    unknown (could not decide: out of budget, unreadable input)
254  bad arguments
255  kvcheck itself crashed (a bug: please report it)
===  =========================================================
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from kvcheck import __version__
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
from kvcheck.harness.commands import (
    add_cleanup,
    add_cluster,
    add_image,
    add_report,
    add_run,
    add_serve,
    add_suite,
)
from kvcheck.harness.verdicts import STYLE, WORD, print_results

EXIT_VALID, EXIT_INVALID, EXIT_UNKNOWN = 0, 1, 2
EXIT_USAGE = 254
EXIT_CRASH = 255


class _Parser(argparse.ArgumentParser):
    """argparse, but bad arguments exit 254 (2 means "unknown" here)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``kvcheck`` parser with every subcommand registered."""
    parser = _Parser(prog="kvcheck", description="Jepsen-style verification of key-value "
                     "stores: run tests, check histories.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run(sub)
    add_suite(sub)
    _add_check(sub)
    add_report(sub)
    add_serve(sub)
    add_cluster(sub)
    add_image(sub)
    add_cleanup(sub)
    return parser


def _add_check(sub: Any) -> None:
    p = sub.add_parser(
        "check", help="decide whether recorded histories are valid",
        description="Check kvcheck run directories (test.json + history.jsonl), kvcheck "
        "history files, or Jepsen histories (--format jepsen). Exit 0 valid, 1 invalid, "
        "2 unknown.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="run directories or history files")
    p.add_argument("--format", choices=("kvcheck", "jepsen"), default="kvcheck",
                   help="input format (default: kvcheck)")
    p.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="linearizability model (default: cas-register for Jepsen histories, "
                   "register otherwise)")
    p.add_argument("--checkers", type=_names, default=None, metavar="A,B",
                   help=f"checkers to run on kvcheck runs ({', '.join(sorted(CHECKERS))}); "
                   "default: test.json's, else the workload's")
    p.add_argument("--independent", choices=("auto", "yes", "no"), default="auto",
                   help="Jepsen histories: values are [key value] pairs (default: auto)")
    p.add_argument("--time-limit", type=_positive_float, default=60.0, metavar="SECONDS",
                   help="linearizability budget per key (default: 60)")
    p.add_argument("--memory-limit", type=_positive_float, default=1024.0, metavar="MB",
                   help="linearizability memo-table budget per key (default: 1024)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for checking keys in parallel (default: automatic)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line per input instead of tables")
    p.add_argument("--no-write", action="store_true",
                   help="do not write results.json into run directories")
    p.set_defaults(handler=_cmd_check)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown checker(s) {', '.join(unknown) or '(none)'}; "
            f"known: {', '.join(sorted(CHECKERS))}")
    return names


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v


# ---------------------------------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace, out: Console, err: Console) -> int:
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        err.print(f"kvcheck check: error: no such file or directory: {', '.join(missing)}",
                  markup=False, highlight=False, soft_wrap=True)
        return EXIT_USAGE
    limits = {"time_limit": args.time_limit, "memory_limit": int(args.memory_limit * 2**20)}
    verdicts = []
    for path in args.paths:
        t0 = time.monotonic()
        if args.format == "jepsen":
            entry = _check_jepsen(path, args, limits)
        else:
            entry = _check_kvcheck(path, args, limits)
        entry["seconds"] = round(time.monotonic() - t0, 3)
        verdicts.append(entry["verdict"])
        if args.json:
            line = {"file": path, "valid": entry["verdict"].to_json(), "ops": entry["ops"],
                    "seconds": entry["seconds"]}
            if entry.get("error"):
                line["error"] = entry["error"]
            if entry.get("results") is not None:
                line["checkers"] = {c.checker: c.valid.to_json()
                                    for c in entry["results"].checks}
            print(json.dumps(line), flush=True)
        else:
            _print_entry(out, err, path, entry)
    return combine(verdicts).exit_code


def _check_jepsen(path: str, args: argparse.Namespace, limits: dict[str, Any]) -> dict[str, Any]:
    model = args.model or "cas-register"
    try:
        ops = read_jepsen_history(path, independent=args.independent)
        res = check_linearizable(ops, model, workers=args.workers, **limits)
    except (HistoryError, EDNError) as e:
        return {"verdict": Verdict.UNKNOWN, "ops": 0, "error": str(e)}
    return {"verdict": res.valid, "ops": len(ops), "results": Results((res,))}


def _check_kvcheck(path: str, args: argparse.Namespace, limits: dict[str, Any]
                   ) -> dict[str, Any]:
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
        return {"verdict": Verdict.UNKNOWN, "ops": 0, "error": str(e)}
    except OSError as e:
        return {"verdict": Verdict.UNKNOWN, "ops": 0, "error": f"{path}: {e}"}
    return {"verdict": results.valid, "ops": results.meta.get("ops", 0), "results": results}


def _print_entry(out: Console, err: Console, path: str, entry: dict[str, Any]) -> None:
    v: Verdict = entry["verdict"]
    out.print(f"[{STYLE[v]}]{WORD[v]}[/] {escape(path)} "
              f"[dim]({entry['ops']} ops, {entry['seconds']:.2f} s)[/]", highlight=False,
              soft_wrap=True)
    if entry.get("error"):
        err.print(f"  [yellow]{escape(entry['error'])}[/]", highlight=False, soft_wrap=True)
        return
    results: Results | None = entry.get("results")
    if results is not None:
        print_results(out, results)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kvcheck`` console script; returns the exit code."""
    out = Console()
    err = Console(stderr=True)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help exits 0; errors already exit 254
        return int(e.code or 0)
    try:
        return int(args.handler(args, out, err))
    except KeyboardInterrupt:
        err.print("kvcheck: interrupted")
        return 130
    except Exception:
        err.print("kvcheck: internal error (a bug in kvcheck; please report it):",
                  markup=False)
        sys.stderr.write(traceback.format_exc())
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
