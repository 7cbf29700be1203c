"""Running a matrix's cells: each as ``kvcheck run`` would run it, in worker processes, and
stopped as a whole by a signal.

:func:`run_cells` yields each cell's runs as they finish, ``jobs`` cells at a time; a cell is
:func:`run_cell` — the ``kvcheck run`` parser and runner, its seeds one after the other, into
``<matrix>/runs/<cell id>/``. SIGINT or SIGTERM stops the runs under way (they tear down as
``kvcheck run``'s do) and raises :class:`Stopped`; no other cell starts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from kvcheck.harness.cli import build_parser
from kvcheck.harness.cli.run import run_tests, specs_from
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.matrix import Cell, RunEntry, entries_of


def run_arguments(argv: list[str], runs: Path) -> argparse.Namespace:
    """The parsed ``kvcheck run argv --histories runs``."""
    return build_parser("run").parse_args(["run", *argv, "--histories", str(runs)])


class Stopped(Exception):
    """The matrix was stopped by ``signum`` (SIGINT or SIGTERM): runs under way tear down and
    are dropped; the cells that finished stand."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_cells(cells: Sequence[Cell], settings: dict[str, Any], seeds: int, first_seed: int,
              matrix_dir: Path, jobs: int) -> Iterator[tuple[Cell, str, list[RunEntry]]]:
    """Yield ``(cell, guarantee, runs)`` as each cell's runs finish, in any order, ``jobs``
    cells at a time. Raises :class:`Stopped` on SIGINT or SIGTERM, once the runs under way
    (told by a SIGINT of their own) have torn down."""
    tasks = [(cell.run_argv(settings, first_seed, seeds), str(matrix_dir)) for cell in cells]
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        if jobs == 1:
            for cell, task in zip(cells, tasks, strict=True):
                yield cell, *_decode(run_cell(*task))
            return
        yield from _in_pool(cells, tasks, jobs)
    except KeyboardInterrupt:
        raise Stopped(signal.SIGINT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _in_pool(cells: Sequence[Cell], tasks: Sequence[tuple[list[str], str]],
             jobs: int) -> Iterator[tuple[Cell, str, list[RunEntry]]]:
    """:func:`run_cells` on a pool of ``jobs`` worker processes, given no more cells than it
    has workers, so that a stop leaves nothing queued to run."""
    context = multiprocessing.get_context("spawn")
    waiting = list(zip(cells, tasks, strict=True))[::-1]
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context,
                                                initializer=_quiet_worker) as pool:
        running: dict[concurrent.futures.Future[Any], Cell] = {}
        try:
            while waiting or running:
                while waiting and len(running) < jobs:
                    cell, task = waiting.pop()
                    running[pool.submit(run_cell, *task)] = cell
                finished, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    yield running.pop(future), *_decode(future.result())
        except BaseException:
            # A terminal's Ctrl-C reaches the workers too; a signal to this process alone
            # does not: pass it on (the pool keeps no public handle on its processes).
            for process in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGINT)
            concurrent.futures.wait(running)
            raise


def _stop(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def _quiet_worker() -> None:
    """A worker ignores SIGINT between cells (:func:`run_cell` heeds it during one)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode(result: tuple[str, list[dict[str, Any]], int | None]) -> tuple[str, list[RunEntry]]:
    """A cell's result from :func:`run_cell`. Raises :class:`Stopped` for a cell whose run a
    signal stopped."""
    guarantee, entries, signum = result
    if signum is not None:
        raise Stopped(signum)
    return guarantee, [RunEntry.from_json(e) for e in entries]


def run_cell(argv: list[str], matrix_dir: str
             ) -> tuple[str, list[dict[str, Any]], int | None]:
    """Run one cell's seeds as ``kvcheck run argv`` would, into ``matrix_dir/runs``, its
    output to ``runs/<cell>/runs.log``; return the guarantee, each run's entry (plain values:
    this runs in a worker process), and the signal that stopped a run, if one did."""
    where = Path(matrix_dir)
    args = run_arguments(argv, where / "runs")
    name = args.name
    (where / "runs" / name).mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open(where / "runs" / name / "runs.log", "w", encoding="utf-8") as log:
            console = Console(file=log, width=1 << 16, no_color=True)
            guarantee = specs_from(args)[0].guarantee
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                _, records = run_tests(args, console, console)
    finally:
        signal.signal(signal.SIGINT, previous)
    signum = next((int(r.exit_code) - 128 for r in records
                   if r.exit_code in (Exit.INTERRUPTED, Exit.TERMINATED)), None)
    return (guarantee, [e.to_json() for e in entries_of(records, where, name, args.seed)],
            signum)
