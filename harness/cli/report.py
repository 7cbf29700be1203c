"""``kvcheck report RUN_DIR...``: write each run's ``report.html`` again from its files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.report import write_report


def register(commands: Any) -> None:
    """Add ``report`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser("report", help="regenerate a run's report.html from its files",
                            description="Write RUN_DIR/report.html again from test.json, "
                            "results.json, history.jsonl and final-state.json.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace, out: Console, err: Console) -> int:
    code = Exit.OK
    for run_dir in args.run_dirs:
        try:
            out.print(str(write_report(run_dir)), markup=False, highlight=False)
        except (OSError, ValueError) as exc:
            err.print(f"kvcheck report: {run_dir}: {exc}", markup=False, highlight=False)
            code = Exit.USAGE
    return code
