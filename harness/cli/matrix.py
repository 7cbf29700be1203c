"""``kvcheck matrix``: the design's claims about N, W, R, sloppy quorums and clocks, measured.

Runs every cell of a grid (:mod:`kvcheck.harness.matrix`) over ``--seeds`` seeds — cells in
parallel on ``--jobs`` processes — into ``DIR/matrices/<timestamp>[-shard-I-of-N]/``: the cells'
run directories under ``runs/``, ``matrix.json``, ``matrix.html``, and ``DIR/matrices/latest``
pointing there. ``--merge DIR…`` joins shards run anywhere into one matrix. docs/consistency.md
reads the default matrix.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

from rich.console import Console
from rich.table import Table

from kvcheck.harness.cli.options import SPEC_DEFAULTS, add_histories
from kvcheck.harness.cli.run import specs_from
from kvcheck.harness.cli.values import positive_float, shard_option
from kvcheck.harness.directories import new_dir, point_latest
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.matrix import (
    RUN_OPTIONS,
    Cell,
    Grid,
    GridError,
    cell_json,
    fits_zones,
    matrix_json,
    merge,
    read_matrix,
    shard,
    sloppy_of,
    write_matrix,
)
from kvcheck.harness.matrix_figures import FIGURES
from kvcheck.harness.matrix_page import zoned
from kvcheck.harness.matrix_runs import Stopped, run_arguments, run_cells
from kvcheck.harness.runner import new_run_id
from kvcheck.harness.spec import SpecError, Workload
from kvcheck.nemesis import NemesisError, parse_kinds
from kvcheck.store.versions import Versioning
from kvcheck.terminal import percent, seconds

#: Every value of each axis: what ``--full`` runs.
FULL = Grid(zones=(1, 3), quorums=("all",),
            nemesis=("none", "partition", "kill", "pause", "clock", "packet", "zone",
                     "partition+kill+clock"))

#: Wall seconds a simulated run takes per operation issued and per node-second simulated, on
#: this project's 2-core machine (benchmarks/matrix_bench.py): the estimate before a matrix
#: starts. Docker runs take their time limit, the recovery wait and about 10 s of set-up.
SIM_SECONDS_PER_OP = 0.0004
SIM_SECONDS_PER_NODE_SECOND = 0.003
DOCKER_OVERHEAD_S = 10.0


def register(commands: Any) -> None:
    """Add ``matrix`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser(
        "matrix", help="measure a grid of configurations (N, zones, W/R, sloppy, versioning, "
        "nemesis, workload) over several seeds",
        description="Run every cell of a grid of configurations of the reference store over "
        "--seeds seeds, each as kvcheck run would, and tabulate availability, staleness, lost "
        "writes, siblings, convergence, latency and verdicts per cell (matrix.json, "
        "matrix.html, and a table here). Each axis is a comma list. The defaults answer the "
        "design's claims (docs/consistency.md); --full runs every value of every axis. Exit "
        "code: 0 once every run finished, whatever its verdict; 255 if some run could not run.")
    p.add_argument("--n", type=_ints, default=None, metavar="N,…",
                   help="replicas per key (default: 3)")
    p.add_argument("--zones", type=_ints, default=None, metavar="Z,…",
                   help="zones (data centers) the nodes are spread over, in turn, as kvcheck "
                   "run --zones does; each at most --nodes (default: 1)")
    p.add_argument("--quorums", type=_words, default=None, metavar="W/R,…|all",
                   help="write/read quorums, or all: every W and R from 1 to N "
                   f"(default: {','.join(Grid().quorums)})")
    p.add_argument("--sloppy", type=_sloppy, default=None, metavar="off,on",
                   help="strict (off) and/or sloppy (on) quorums (default: off,on)")
    p.add_argument("--versioning", type=_choices(get_args(Versioning)),
                   default=None, metavar="vclock,lww",
                   help="default: vclock,lww")
    p.add_argument("--nemesis", type=_nemeses, default=None, metavar="KIND[+KIND],…",
                   help="the nemesis of each cell: none, or kinds joined by + to overlap in one "
                   "cell; zone only with the zone counts of 2 or more "
                   f"(default: {','.join(Grid().nemesis)})")
    p.add_argument("--workload", type=_choices(get_args(Workload)), default=None,
                   metavar="register,set", help="default: register,set")
    p.add_argument("--full", action="store_true",
                   help="every value of every axis given no value: all quorums, zones "
                   f"{','.join(map(str, FULL.zones))}, nemesis {','.join(FULL.nemesis)} (says "
                   "how long it will take first)")
    p.add_argument("--seeds", type=int, default=3, metavar="K",
                   help="runs per cell, seeds SEED … SEED+K-1 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="the first seed (default: %(default)s)")
    p.add_argument("--time-limit", type=positive_float, default=30.0, metavar="SECONDS",
                   help="seconds of client load per run; simulated seconds with --backend "
                   "sim (default: %(default)g)")
    p.add_argument("--rate", type=positive_float, default=SPEC_DEFAULTS.rate,
                   help="operations per second per run (default: %(default)g)")
    p.add_argument("--nodes", type=int, default=SPEC_DEFAULTS.nodes,
                   help="cluster size (default: %(default)s)")
    p.add_argument("--nemesis-interval", type=positive_float, default=8.0, metavar="SECONDS",
                   help="seconds between faults, and how long each lasts (default: %(default)g)")
    p.add_argument("--recovery-time", type=float, default=SPEC_DEFAULTS.recovery_time,
                   metavar="SECONDS", help="default: %(default)g")
    p.add_argument("--backend", choices=("sim", "docker"), default="sim",
                   help="sim: simulated in virtual time, reproducible; docker: containers "
                   "(default: %(default)s)")
    p.add_argument("--jobs", type=int, default=None, metavar="J",
                   help="cells run at once, each in a process of its own (default: the "
                   "machine's cores with --backend sim, 1 with docker)")
    p.add_argument("--shard", type=shard_option, default=(0, 1), metavar="I/N",
                   help="run the I-th of N disjoint parts of the grid (I from 0); join them "
                   "with --merge")
    p.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                   help="instead of running, join the matrices found under these directories "
                   "(shards) into one")
    p.add_argument("--plan", action="store_true",
                   help="list the cells and say how long they would take; run nothing")
    add_histories(p, "where matrices/ goes (default: %(default)s)")
    p.set_defaults(handler=_matrix)


def _words(text: str) -> tuple[str, ...]:
    words = tuple(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))
    if not words:
        raise argparse.ArgumentTypeError("expected a comma list")
    return words


def _ints(text: str) -> tuple[int, ...]:
    words = _words(text)
    if not all(w.isdigit() and int(w) > 0 for w in words):
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return tuple(map(int, words))


def _sloppy(text: str) -> tuple[bool, ...]:
    try:
        return sloppy_of(_words(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _choices(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        words = _words(text)
        if unknown := [w for w in words if w not in allowed]:
            raise argparse.ArgumentTypeError(
                f"no such value: {', '.join(unknown)} (choose from {', '.join(allowed)})")
        return words
    return parse


def _nemeses(text: str) -> tuple[str, ...]:
    cells = []
    for word in _words(text):
        kinds = [k.strip() for k in word.split("+")]
        if word == "none":
            cells.append(word)
            continue
        try:
            parse_kinds(",".join(kinds))
        except (NemesisError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if "none" in kinds:
            raise argparse.ArgumentTypeError(f"none cannot be combined: {word!r}")
        cells.append("+".join(kinds))
    return tuple(dict.fromkeys(cells))


#: The options that are axes of the grid.
AXES = ("n", "zones", "quorums", "sloppy", "versioning", "nemesis", "workload")


def _grid(args: argparse.Namespace) -> Grid:
    """The grid the options ask for: ``--full`` fills each axis the command line left at its
    default; a nemesis axis left so keeps only the nemeses some zone count fits."""
    left = FULL if args.full else Grid()
    grid = Grid(**{name: getattr(left, name) if getattr(args, name) is None
                   else getattr(args, name) for name in AXES})
    if args.nemesis is not None:
        return grid
    return dataclasses.replace(grid, nemesis=tuple(
        k for k in grid.nemesis if any(fits_zones(k, z) for z in grid.zones)))


def _matrix(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.merge:
        return _merge(args, out, err)
    settings = {name: getattr(args, name) for name in RUN_OPTIONS}
    try:
        grid = _grid(args)
        cells = shard(grid.cells(), *args.shard)
        _check(args, settings, cells)
    except (GridError, ValueError) as exc:
        err.print(f"[bold red]kvcheck matrix:[/] {exc}", highlight=False)
        return Exit.USAGE
    jobs = args.jobs or (os.cpu_count() or 1 if args.backend == "sim" else 1)
    runs = len(cells) * args.seeds
    index, count = args.shard
    out.print(f"{len(cells)} cells x {args.seeds} seeds = {runs} runs "
              f"({args.backend}, {args.time_limit:g} s each{_of_shard(index, count)}); "
              f"about {seconds(_estimate(settings, runs, jobs))} on {jobs} job(s)",
              highlight=False)
    if note := grid.left_out():
        out.print(f"  ({note})", markup=False, highlight=False)
    if args.plan:
        for cell in cells:
            out.print(f"  {cell.id}", markup=False, highlight=False)
        return Exit.OK
    stamp, _ = new_run_id()
    try:
        matrix_dir = _new_dir(args.histories, stamp if count == 1
                              else f"{stamp}-shard-{index}-of-{count}")
    except OSError as exc:
        err.print(f"[bold red]kvcheck matrix:[/] cannot keep the matrix in {args.histories}: "
                  f"{exc.strerror or exc}; choose another place with --histories",
                  highlight=False)
        return Exit.USAGE
    out.print(f"→ {matrix_dir}", markup=False, highlight=False)
    done: dict[Cell, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        for cell, guarantee, entries in run_cells(cells, settings, args.seeds, args.seed,
                                                   matrix_dir, jobs):
            done[cell] = cell_json(cell, guarantee, entries, matrix_dir)
            _progress(out, done[cell], len(done), len(cells), time.monotonic() - started)
    except BaseException as exc:
        # What finished is kept: the matrix of the cells done, marked incomplete.
        _finish(out, grid, settings, args, cells, done, matrix_dir, complete=False)
        if not isinstance(exc, Stopped):
            raise
        err.print(f"kvcheck matrix: stopped by {exc}; the cells that finished are in "
                  f"{matrix_dir / 'matrix.json'}", markup=False, highlight=False)
        return Exit.of_signal(exc.signum)
    matrix = _finish(out, grid, settings, args, cells, done, matrix_dir, complete=True)
    crashed = [run for cell in matrix["cells"] for run in cell["runs"] if run["valid"] is None]
    if crashed:
        err.print(f"[bold red]kvcheck matrix:[/] {len(crashed)} run(s) could not run: see "
                  "runs.log of their cells", highlight=False)
        return Exit.CRASH
    return Exit.OK


def _new_dir(histories: Path, name: str) -> Path:
    """``histories/matrices/name`` (``name-2``, … if taken), made with its ``runs/``. Raises
    OSError."""
    matrix_dir = new_dir((histories / "matrices" / name).resolve())
    (matrix_dir / "runs").mkdir()
    if not os.access(matrix_dir, os.W_OK):
        raise PermissionError(errno.EACCES, "not writable")
    return matrix_dir


def _finish(out: Console, grid: Grid, settings: dict[str, Any], args: argparse.Namespace,
            cells: Sequence[Cell], done: dict[Cell, dict[str, Any]], matrix_dir: Path, *,
            complete: bool) -> dict[str, Any]:
    """Write the matrix of the cells ``done`` (in the grid's order) and show it."""
    command = (shlex.join(["kvcheck", "matrix", *sys.argv[2:]])
               if sys.argv[1:2] == ["matrix"] else "kvcheck matrix")
    matrix = matrix_json(grid, settings, [done[c] for c in cells if c in done],
                         command=command, seeds=args.seeds, shard_of=args.shard,
                         interrupted=not complete)
    write_matrix(matrix_dir, matrix)
    point_latest(matrix_dir.parent, matrix_dir)
    print_table(out, matrix)
    out.print(f"matrix: {matrix_dir / 'matrix.html'}", markup=False, highlight=False)
    return matrix


def _of_shard(index: int, count: int) -> str:
    return f", shard {index}/{count}" if count > 1 else ""


def _check(args: argparse.Namespace, settings: dict[str, Any], cells: Sequence[Cell]) -> None:
    """Raise ValueError for options some cell could not run with, as ``kvcheck run`` would
    refuse them."""
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    if args.jobs is not None and args.jobs < 1:
        raise ValueError("--jobs must be at least 1")
    if too_big := sorted({c.n for c in cells if c.n > args.nodes}):
        raise ValueError(f"--n {too_big[0]} needs at least as many --nodes ({args.nodes})")
    if too_many := sorted({c.zones for c in cells if c.zones > args.nodes}):
        raise ValueError(f"--zones {too_many[0]}: the nodes cannot be spread over more zones "
                         f"than there are nodes ({args.nodes}): give fewer zones or more "
                         "--nodes")
    for cell in cells:
        try:
            specs_from(run_arguments(cell.run_argv(settings, args.seed, 1), args.histories))
        except SpecError as exc:
            raise ValueError(f"cell {cell.id}: {exc}") from None


def _estimate(settings: dict[str, Any], runs: int, jobs: int) -> float:
    """Wall seconds the runs should take (:data:`SIM_SECONDS_PER_OP`); a rough guide."""
    simulated = float(settings["time_limit"]) + float(settings["recovery_time"])
    if settings["backend"] == "sim":
        each = (float(settings["rate"]) * float(settings["time_limit"]) * SIM_SECONDS_PER_OP
                + SIM_SECONDS_PER_NODE_SECOND * int(settings["nodes"]) * simulated)
    else:
        each = simulated + DOCKER_OVERHEAD_S
    return runs * each / jobs


def _progress(out: Console, cell: dict[str, Any], done: int, total: int,
              elapsed: float) -> None:
    figures = cell["figures"]
    verdicts = ", ".join(f"{count} {word}" for word, count in cell["verdicts"].items() if count)
    left = elapsed / done * (total - done)
    out.print(f"[{done}/{total}] {cell['id']}: {verdicts or 'no verdict'} · availability "
              f"{_mean(figures['availability'], percent)} · stale "
              f"{_mean(figures['stale_read_share'], percent)} · "
              f"{seconds(left)} left", markup=False, highlight=False)


def _mean(spread: dict[str, float] | None, show: Callable[[float], str]) -> str:
    return "-" if spread is None else show(spread["mean"])


#: The figures of the terminal table (the page has them all).
TABLE = ("availability", "availability_in_faults", "stale_read_share", "lost_writes",
         "convergence_seconds", "read_p50_ms", "write_p50_ms")


def print_table(out: Console, matrix: dict[str, Any]) -> None:
    """The matrix as a terminal table: a row per cell, the means of :data:`TABLE`; the zone
    count is in the configuration where some cell's is not 1 (:func:`zoned`)."""
    table = Table(title="consistency matrix (means over seeds)", title_justify="left")
    show_zones = zoned(matrix["cells"])
    for column in ("configuration", "nemesis", "guarantee", "verdicts",
                   *(FIGURES[name].title for name in TABLE)):
        table.add_column(column, overflow="fold")
    for cell in matrix["cells"]:
        verdicts = cell["verdicts"]
        zones = f" Z={cell['zones']}" if show_zones else ""
        table.add_row(
            f"N={cell['n']} W={cell['w']} R={cell['r']}{zones} "
            f"{'sloppy' if cell['sloppy_quorum'] else 'strict'} {cell['versioning']} "
            f"{cell['workload']}", cell["nemesis"], cell["guarantee"],
            ", ".join(f"{n} {word}" for word, n in verdicts.items() if n) or "no runs",
            *(_show(name, cell["figures"][name]) for name in TABLE))
    out.print(table)


def _show(name: str, spread: dict[str, float] | None) -> str:
    return "-" if spread is None else FIGURES[name].show(spread["mean"])


def _merge(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Join the matrices under ``--merge`` into one under ``--histories``."""
    found = sorted({p.resolve() for d in args.merge for p in d.rglob("matrix.json")
                    if "latest" not in p.relative_to(d).parts})
    shards = []
    for path in found:
        try:
            matrix = read_matrix(path)
        except (OSError, ValueError) as exc:
            err.print(f"kvcheck matrix: skipping {path}: {exc}", markup=False, highlight=False)
            continue
        if "merged_from" in matrix:  # its runs are copies of its shards'
            err.print(f"kvcheck matrix: skipping {path}: a merge of other matrices",
                      markup=False, highlight=False)
            continue
        shards.append((path.parent, matrix))
    if not shards:
        err.print(f"[bold red]kvcheck matrix:[/] no matrix to merge under "
                  f"{', '.join(map(str, args.merge))} ({len(found)} matrix.json found)",
                  highlight=False)
        return Exit.USAGE
    settings = {json.dumps(m["settings"], sort_keys=True) for _, m in shards}
    if len(settings) > 1:
        err.print("[bold red]kvcheck matrix:[/] these matrices ran with different settings "
                  "(time limit, rate, nodes, backend, …), so their cells do not compare: "
                  f"{'; '.join(sorted(settings))}", highlight=False)
        return Exit.USAGE
    stamp, _ = new_run_id()
    try:
        matrix_dir = _new_dir(args.histories, f"{stamp}-merged")
        cells = merge(shards, matrix_dir)
    except OSError as exc:
        err.print(f"[bold red]kvcheck matrix:[/] cannot merge into {args.histories}: "
                  f"{exc.strerror or exc}", highlight=False)
        return Exit.USAGE
    first = shards[0][1]
    grids = [Grid.from_json(m["axes"]) for _, m in shards]
    grid = Grid(**{name: tuple(dict.fromkeys(v for g in grids for v in getattr(g, name)))
                   for name in AXES})
    matrix = matrix_json(grid, first["settings"], cells, command=first["command"],
                         seeds=max(m["seeds"] for _, m in shards),
                         interrupted=not all(m.get("complete", True) for _, m in shards))
    matrix["merged_from"] = [str(where) for where, _ in shards]
    write_matrix(matrix_dir, matrix)
    point_latest(matrix_dir.parent, matrix_dir)
    print_table(out, matrix)
    out.print(f"merged {len(shards)} matrices ({len(cells)} cells) → "
              f"{matrix_dir / 'matrix.html'}", markup=False, highlight=False)
    return Exit.OK
