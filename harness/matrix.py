"""The consistency matrix: a grid of configurations, each run over several seeds, tabulated.

A :class:`Grid` is the product of its axes — replicas ``n``, zones (the nodes spread over
``Z`` data centers), quorums ``W/R``, sloppy or strict, versioning, nemesis (``+`` joins kinds
in one cell), workload — less the quorums a replica count cannot have and the nemeses a zone
count cannot have (:func:`fits_zones`). Each :class:`Cell` of it is run as ``kvcheck run``
would run it (the same parser, the same runner), once per seed, into
``<matrix>/runs/<cell id>/<timestamp>/``: ordinary run directories, re-checkable with
``kvcheck check`` and browsable with ``kvcheck serve``. A cell's runs are summarised by
:mod:`kvcheck.harness.matrix_figures` and, for the simulator's runs, set beside the staleness
the PBS model predicts (:mod:`kvcheck.harness.pbs`).

``matrix.json`` (:func:`matrix_json`) is built from its cells' runs alone, so shards run
anywhere merge by pooling their runs (:func:`merge`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kvcheck.checkers import Verdict
from kvcheck.harness.directories import new_dir
from kvcheck.harness.matrix_figures import run_figures, summarise
from kvcheck.harness.matrix_page import write_page
from kvcheck.harness.pbs import cell_theory
from kvcheck.nemesis import NEEDS_ZONES

FORMAT = "kvcheck-matrix"

#: The run options every cell's runs take from the matrix's command line.
RUN_OPTIONS = ("backend", "nodes", "rate", "time_limit", "nemesis_interval", "recovery_time")


#: How the command line and ``matrix.json``'s axes write strict (False) and sloppy (True).
SLOPPY_WORDS = {False: "off", True: "on"}


def sloppy_of(words: Iterable[str]) -> tuple[bool, ...]:
    """``off``/``on`` words as strict (False) / sloppy (True) quorums. Raises ValueError for
    any other word."""
    words = list(words)
    if unknown := [w for w in words if w not in SLOPPY_WORDS.values()]:
        raise ValueError(f"expected off and/or on, not {', '.join(map(str, unknown))}")
    return tuple(w == SLOPPY_WORDS[True] for w in words)


def fits_zones(nemesis: str, zones: int) -> bool:
    """Whether a cell's nemesis (kinds joined by ``+``) can run on nodes spread over ``zones``
    zones: the zone nemesis takes a zone away, so it needs two or more."""
    return zones >= 2 or NEEDS_ZONES.isdisjoint(nemesis.split("+"))


class GridError(ValueError):
    """An impossible grid; the message names the option."""


@dataclass(frozen=True, slots=True, order=True)
class Cell:
    """One configuration of the grid, with the axes' values as the command line writes them."""

    n: int
    zones: int
    w: int
    r: int
    sloppy_quorum: bool
    versioning: str
    nemesis: str  # kinds joined by ``+``, or ``none``
    workload: str

    @property
    def id(self) -> str:
        """A name for the cell, usable as a directory and a run name: ``n3-w2-r2-z3-…``, the
        zone count left out for one zone (the names of matrices without a zones axis)."""
        sloppy = "sloppy" if self.sloppy_quorum else "strict"
        zones = "" if self.zones == 1 else f"-z{self.zones}"
        return (f"n{self.n}-w{self.w}-r{self.r}{zones}-{sloppy}-{self.versioning}-"
                f"{self.nemesis}-{self.workload}")

    def run_argv(self, settings: Mapping[str, Any], seed: int, count: int) -> list[str]:
        """The ``kvcheck run`` arguments of this cell's ``count`` runs from ``seed`` on, with
        the run options ``settings`` (:data:`RUN_OPTIONS`)."""
        kinds = "none" if self.nemesis == "none" else self.nemesis.replace("+", ",")
        argv = ["--name", self.id, "--n", str(self.n), "--zones", str(self.zones),
                "--w", str(self.w), "--r", str(self.r),
                "--sloppy-quorum" if self.sloppy_quorum else "--no-sloppy-quorum",
                "--versioning", self.versioning, "--nemesis", kinds,
                "--workload", self.workload, "--seed", str(seed), "--test-count", str(count)]
        for name in RUN_OPTIONS:
            argv += [f"--{name.replace('_', '-')}", str(settings[name])]
        return argv

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Cell:
        """The cell of a ``matrix.json`` cell (one zone where it has no ``zones``: a matrix
        made before the axis). Raises KeyError, TypeError or ValueError."""
        if not isinstance(obj["sloppy_quorum"], bool):
            raise TypeError(f"sloppy_quorum must be true or false, not {obj['sloppy_quorum']!r}")
        return cls(int(obj["n"]), int(obj.get("zones", 1)), int(obj["w"]), int(obj["r"]),
                   obj["sloppy_quorum"], str(obj["versioning"]), str(obj["nemesis"]),
                   str(obj["workload"]))

    def axes(self) -> dict[str, Any]:
        """The cell's axes as ``matrix.json`` names them."""
        return {"n": self.n, "zones": self.zones, "w": self.w, "r": self.r,
                "sloppy_quorum": self.sloppy_quorum,
                "versioning": self.versioning, "nemesis": self.nemesis,
                "workload": self.workload}


@dataclass(frozen=True, slots=True)
class Grid:
    """The axes of a matrix, as the command line gives them (comma lists split)."""

    n: tuple[int, ...] = (3,)
    zones: tuple[int, ...] = (1,)
    quorums: tuple[str, ...] = ("1/1", "2/2", "3/3")  # W/R pairs, or ("all",)
    sloppy: tuple[bool, ...] = (False, True)
    versioning: tuple[str, ...] = ("vclock", "lww")
    nemesis: tuple[str, ...] = ("none", "partition", "kill", "clock", "partition+kill+clock")
    workload: tuple[str, ...] = ("register", "set")

    def cells(self) -> list[Cell]:
        """Every cell, in the grid's order: each ``W/R`` pair with each ``n`` it fits, each
        nemesis with each zone count it fits (:func:`fits_zones`). Raises GridError for a
        malformed pair, a pair that fits no ``n``, or a nemesis that fits no zone count."""
        pairs = _pairs(self.quorums)
        cells: list[Cell] = []
        for n, zones in itertools.product(self.n, self.zones):
            fitting = (itertools.product(range(1, n + 1), repeat=2) if pairs is None
                       else [(w, r) for w, r in pairs if w <= n and r <= n])
            nemeses = [k for k in self.nemesis if fits_zones(k, zones)]
            for (w, r), sloppy, versioning, nemesis, workload in itertools.product(
                    fitting, self.sloppy, self.versioning, nemeses, self.workload):
                cells.append(Cell(n, zones, w, r, sloppy, versioning, nemesis, workload))
        cells = list(dict.fromkeys(cells))
        for w, r in pairs or ():
            if not any(w <= n and r <= n for n in self.n):
                raise GridError(f"--quorums {w}/{r}: W and R must be from 1 to N "
                                f"({', '.join(map(str, self.n))})")
        given = ",".join(map(str, self.zones))
        for nemesis in self.nemesis:
            if not any(fits_zones(nemesis, z) for z in self.zones):
                raise GridError(f"--nemesis {nemesis}: the zone nemesis takes a zone away, so "
                                "it needs the nodes spread over two zones or more, and --zones "
                                f"is {given}: add a zone count, e.g. --zones {given},3")
        return cells

    def left_out(self) -> str | None:
        """What :meth:`cells` leaves out of the product of the axes for want of zones, in
        words; None when nothing."""
        pairs = [(k, z) for k in self.nemesis for z in self.zones if not fits_zones(k, z)]
        if not pairs:
            return None
        nemeses = ", ".join(dict.fromkeys(k for k, _ in pairs))
        zones = ",".join(dict.fromkeys(str(z) for _, z in pairs))
        return (f"no cell of nemesis {nemeses} with --zones {zones}: the zone nemesis takes a "
                "zone away, so it runs only with two zones or more")

    def to_json(self) -> dict[str, Any]:
        """The axes as ``matrix.json`` keeps them (sloppy as ``off``/``on``)."""
        return {"n": list(self.n), "zones": list(self.zones), "quorums": list(self.quorums),
                "sloppy": [SLOPPY_WORDS[s] for s in self.sloppy],
                "versioning": list(self.versioning), "nemesis": list(self.nemesis),
                "workload": list(self.workload)}


    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Grid:
        """The grid of a ``matrix.json``'s ``axes`` (one zone where it has no ``zones``: a
        matrix made before the axis). Raises KeyError, TypeError or ValueError."""
        return cls(n=tuple(map(int, obj["n"])), zones=tuple(map(int, obj.get("zones", [1]))),
                   quorums=tuple(map(str, obj["quorums"])),
                   sloppy=sloppy_of(obj["sloppy"]),
                   versioning=tuple(map(str, obj["versioning"])),
                   nemesis=tuple(map(str, obj["nemesis"])),
                   workload=tuple(map(str, obj["workload"])))


def _pairs(quorums: Sequence[str]) -> list[tuple[int, int]] | None:
    """The ``W/R`` pairs of ``--quorums``, or None for ``all``. Raises GridError."""
    if tuple(quorums) == ("all",):
        return None
    pairs = []
    for text in quorums:
        w, slash, r = text.partition("/")
        if not (slash and w.isdigit() and r.isdigit() and int(w) > 0 and int(r) > 0):
            raise GridError(f"--quorums: expected W/R like 2/2 (or all), not {text!r}")
        pairs.append((int(w), int(r)))
    return list(dict.fromkeys(pairs))


def shard(cells: Sequence[Cell], index: int, count: int) -> list[Cell]:
    """The ``index``-th of ``count`` disjoint parts of ``cells`` (every ``count``-th cell)."""
    return list(cells[index::count])


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One finished (or failed) run of a cell, as ``matrix.json`` lists it."""

    seed: int
    path: str | None  # relative to the matrix directory; None if the run left no directory
    valid: bool | str | None  # None: no results (it could not run)
    exit_code: int
    figures: Mapping[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "path": self.path, "valid": self.valid,
                "exit_code": self.exit_code, "figures": dict(self.figures)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RunEntry:
        """A run of a ``matrix.json`` cell. Raises KeyError, TypeError or ValueError."""
        return cls(int(obj["seed"]), obj.get("path"), obj.get("valid"),
                   int(obj["exit_code"]), dict(obj.get("figures") or {}))


def entries_of(records: Iterable[Any], matrix_dir: Path, cell_id: str,
               first_seed: int) -> list[RunEntry]:
    """The :class:`RunEntry` of each ``RunRecord`` of a cell's runs (seeds from
    ``first_seed`` on), figures read from each run directory; a run that made no directory of
    its own under ``runs/<cell id>/`` (it could not start) has no path."""
    cell_runs = matrix_dir / "runs" / cell_id
    entries = []
    for seed, record in enumerate(records, start=first_seed):
        valid = None if record.results is None else Verdict.read(
            record.results.get("valid")).to_json()
        figures: Mapping[str, float | None] = {}
        if record.results is not None:
            try:
                figures = run_figures(record.run_dir)
            except (OSError, ValueError):
                figures = {}
        run_dir = Path(record.run_dir)
        path = (run_dir.relative_to(matrix_dir).as_posix()
                if run_dir.parent == cell_runs else None)
        entries.append(RunEntry(seed, path, valid, int(record.exit_code), figures))
    return entries


def cell_json(cell: Cell, guarantee: str, runs: Sequence[RunEntry],
              matrix_dir: Path) -> dict[str, Any]:
    """A cell of ``matrix.json``: its axes, its runs, each figure over them, the verdicts (a
    run that could not run counts as ``crashed``) and (for the simulator's runs) the PBS model
    beside the staleness measured."""
    verdicts = {"valid": 0, "invalid": 0, "unknown": 0, "crashed": 0}
    for run in runs:
        verdicts["crashed" if run.valid is None else Verdict.read(run.valid).value] += 1
    run_dirs = [matrix_dir / run.path for run in runs if run.path is not None]
    return {"id": cell.id, **cell.axes(), "guarantee": guarantee,
            "runs": [run.to_json() for run in runs], "verdicts": verdicts,
            "figures": summarise(run.figures for run in runs),
            "pbs": _theory(cell, run_dirs)}


def _theory(cell: Cell, run_dirs: Sequence[Path]) -> dict[str, Any] | None:
    """The PBS model beside the staleness measured, for a register cell's runs (only the
    stale-reads checker, which register runs get, measures staleness by time and versions)."""
    if cell.workload != "register":
        return None
    buckets: dict[Any, dict[str, Any]] = {}
    behind: Counter[str] = Counter()
    for run_dir in run_dirs:
        try:
            results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        figures = ((results.get("checkers") or {}).get("stale-reads") or {}).get("figures") or {}
        for bucket in figures.get("visibility") or ():
            total = buckets.setdefault(bucket["le_ms"], {"le_ms": bucket["le_ms"], "reads": 0,
                                                         "stale": 0})
            total["reads"] += bucket["reads"]
            total["stale"] += bucket["stale"]
        behind.update(figures.get("versions_behind_counts") or {})
    try:
        return cell_theory(run_dirs, cell.n, cell.w, cell.r, list(buckets.values()),
                           dict(behind))
    except ValueError:  # a malformed replica-latency.json: no prediction, the rest stands
        return None


def matrix_json(grid: Grid, settings: Mapping[str, Any], cells: Sequence[Mapping[str, Any]],
                *, command: str, seeds: int, shard_of: tuple[int, int] = (0, 1),
                interrupted: bool = False) -> dict[str, Any]:
    """The whole of ``matrix.json``."""
    return {"format": FORMAT, "version": 1,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": command, "backend": settings["backend"], "seeds": seeds,
            "time_limit": settings["time_limit"], "settings": dict(settings),
            "shard": list(shard_of), "complete": not interrupted,
            "axes": grid.to_json(), "cells": list(cells)}


def write_matrix(matrix_dir: Path, matrix: Mapping[str, Any]) -> None:
    """Write ``matrix.json`` (replacing it at once) and ``matrix.html`` into ``matrix_dir``.
    Raises OSError."""
    temporary = matrix_dir / ".matrix.json.tmp"
    temporary.write_text(json.dumps(matrix, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, matrix_dir / "matrix.json")
    write_page(matrix_dir, matrix)


def read_matrix(path: Path) -> dict[str, Any]:
    """A ``matrix.json``. Raises ValueError (or OSError) for anything else."""
    matrix = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(matrix, dict) or matrix.get("format") != FORMAT:
        raise ValueError(f"{path} is not a kvcheck matrix")
    if matrix.get("version") != 1:
        raise ValueError(f"{path}: matrix version {matrix.get('version')!r} is not 1")
    try:
        Grid.from_json(matrix["axes"])
        int(matrix["seeds"])
        if not isinstance(matrix["settings"], dict):
            raise TypeError("settings is not an object")
        for obj in matrix["cells"]:
            Cell.from_json(obj)
            for run in map(RunEntry.from_json, obj["runs"]):
                _check_path(run.path)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed matrix ({type(exc).__name__}: {exc})") from None
    return matrix


def _check_path(path: str | None) -> None:
    """Raise ValueError unless ``path`` (a run's) is None or a plain relative path below the
    matrix directory: a merge copies what it names."""
    if path is None:
        return
    if not isinstance(path, str) or Path(path).is_absolute() or ".." in Path(path).parts \
            or not Path(path).parts:
        raise ValueError(f"a run path must lie inside the matrix directory, not {path!r}")


def merge(matrices: Sequence[tuple[Path, Mapping[str, Any]]], matrix_dir: Path
          ) -> list[dict[str, Any]]:
    """The cells of the shards ``matrices`` (each ``(its directory, its matrix.json)``, read
    by :func:`read_matrix`) as one matrix in ``matrix_dir``: each cell's runs from every shard
    that ran it, copied into ``matrix_dir/runs`` (hard links where the file system allows),
    figures summarised anew. A cell's seed run twice (a shard retried) counts once: the first
    found. Raises OSError when a run cannot be copied."""
    runs: dict[Cell, dict[int, RunEntry]] = {}
    guarantees: dict[Cell, str] = {}
    for where, matrix in matrices:
        for obj in matrix["cells"]:
            cell = Cell.from_json(obj)
            guarantees[cell] = str(obj.get("guarantee", ""))
            seeds = runs.setdefault(cell, {})
            for run in map(RunEntry.from_json, obj["runs"]):
                if run.seed in seeds:
                    continue
                path = None if run.path is None else _copy_run(where / run.path, matrix_dir,
                                                               cell)
                seeds[run.seed] = RunEntry(run.seed, path, run.valid, run.exit_code,
                                           run.figures)
    return [cell_json(cell, guarantees[cell], [seeds[s] for s in sorted(seeds)], matrix_dir)
            for cell, seeds in runs.items()]


def _copy_run(run_dir: Path, matrix_dir: Path, cell: Cell) -> str | None:
    """Copy ``run_dir`` into ``matrix_dir/runs/<cell id>/``; its path there, or None when it
    is gone."""
    if not run_dir.is_dir():
        return None
    target = new_dir(matrix_dir / "runs" / cell.id / run_dir.name)
    shutil.copytree(run_dir, target, symlinks=True, copy_function=_link_or_copy,
                    dirs_exist_ok=True)
    return target.relative_to(matrix_dir).as_posix()


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
