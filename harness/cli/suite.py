"""``kvcheck suite FILE.toml``: the named tests of a suite file, one after another."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from kvcheck.harness.cli import run
from kvcheck.harness.cli.options import add_histories
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.junit import RunRecord, write_junit
from kvcheck.harness.suite import SuiteError, load_suite, passed, suite_exit


def register(commands: Any) -> None:
    """Add ``suite`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser("suite", help="run the named tests of a suite file one after another",
                            description="Run each [[test]] of a TOML suite file (docs/ci.md). "
                            "A test passes when its guarantee held or, known-unsafe, when a "
                            "checker found the anomaly it expects; the exit code is the worst "
                            "of the tests' "
                            "(docs/running.md).")
    p.add_argument("file", type=Path, metavar="FILE.toml")
    add_histories(p, "where run directories go (default: %(default)s)")
    p.add_argument("--junit", type=Path, metavar="FILE",
                   help="write a JUnit XML file for the whole suite")
    p.add_argument("--only", default="", metavar="A,B", help="run only these tests")
    p.add_argument("--list", action="store_true",
                   help="print each test's kvcheck run arguments and exit")
    p.set_defaults(handler=_suite)


def _suite(args: argparse.Namespace, out: Console, err: Console) -> int:
    parse = _run_parser()
    try:
        tests = load_suite(args.file, parse)
    except SuiteError as exc:
        err.print(f"kvcheck suite: {exc}", markup=False, highlight=False, soft_wrap=True)
        return Exit.USAGE
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - {t.name for t in tests}
    if unknown:
        err.print(f"kvcheck suite: no such test(s): {', '.join(sorted(unknown))}",
                  markup=False, highlight=False)
        return Exit.USAGE
    tests = [t for t in tests if not only or t.name in only]
    if args.list:
        for t in tests:
            unsafe = f"  # known-unsafe: expect {t.expect_anomaly}" if t.known_unsafe else ""
            out.print(f"{t.name}: kvcheck run {' '.join(t.argv)}{unsafe}", markup=False,
                      highlight=False, soft_wrap=True)
        return Exit.OK
    records: list[RunRecord] = []
    for t in tests:
        out.print(f"[bold]suite test {t.name}[/]" + (
            f" (known-unsafe: must be caught with {t.expect_anomaly})" if t.known_unsafe
            else ""), highlight=False)
        code, found = run.run_tests(parse([*t.argv, "--histories", str(args.histories)]),
                                    out, err, expect_anomaly=t.expect_anomaly)
        records += found or [RunRecord(t.name, args.histories, None, t.expect_anomaly, code)]
        if code in (Exit.INTERRUPTED, Exit.TERMINATED):
            break
    if args.junit:
        out.print(f"JUnit: {write_junit(args.junit, records)}", markup=False, highlight=False)
    for record in records:
        word = "[green]passed[/]" if passed(record) else "[bold red]FAILED[/]"
        outcome = record.canary
        how = f": {outcome.message}" if outcome else ""
        out.print(f"{word} {escape(record.name)} (exit {record.exit_code}){escape(how)}",
                  highlight=False, soft_wrap=True)
    return suite_exit(records)


def _run_parser() -> Callable[[Sequence[str]], argparse.Namespace]:
    """Parse ``kvcheck run`` arguments; bad ones raise SystemExit (load_suite reports them)."""
    parser = argparse.ArgumentParser(prog="kvcheck run", exit_on_error=False, add_help=False)
    run.add_arguments(parser)

    def parse(argv: Sequence[str]) -> argparse.Namespace:
        try:
            return parser.parse_args(argv)
        except argparse.ArgumentError as exc:
            raise SystemExit(Exit.USAGE) from exc

    return parse
