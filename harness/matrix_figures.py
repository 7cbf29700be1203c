"""The figures of a consistency-matrix cell: what each means, and how one run gives it.

A cell of ``kvcheck matrix`` (:mod:`kvcheck.harness.matrix`) is one configuration run over
several seeds; each run is an ordinary run directory, and :func:`run_figures` reads its figures
from what the checkers wrote there (``results.json``) and from its history. :func:`summarise`
gives each figure over the cell's runs as ``{"mean", "min", "max"}`` — or ``None`` where no run
gives it (``lost_writes`` of the register workload, which cannot lose a write that anything
could tell) — and :data:`FIGURES` says what each is, in which unit, and which way is better
(the matrix page colours by it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kvcheck.checkers.history import NEMESIS, OK, Op, pair_calls, read_history
from kvcheck.checkers.stats import nearest_rank, nemesis_windows
from kvcheck.terminal import count, percent, seconds


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure: its title, its unit (``share``: 0 to 1), and whether ``higher`` or
    ``lower`` is better (``None``: neither, as for siblings, which a store may keep on
    purpose)."""

    name: str
    title: str
    unit: Literal["share", "ms", "s", "count", "versions"]
    better: Literal["higher", "lower"] | None
    description: str

    def show(self, value: float) -> str:
        """``value`` as people write it: ``97.3 %``, ``3.4 ms``, ``1.25 s``, ``12`` (a mean of
        counts that is not whole keeps one decimal: ``0.3`` lost writes is not none)."""
        if self.unit == "share":
            return percent(value)
        if self.unit == "ms":
            return "0 ms" if value == 0 else seconds(value / 1000)
        if self.unit == "s":
            return seconds(value)
        return count(int(value)) if value == int(value) else f"{value:,.1f}"


#: Every figure, in the order the page and the terminal table show them.
FIGURES: dict[str, Figure] = {f.name: f for f in (
    Figure("availability", "availability", "share", "higher",
           "share of the test's operations (final reads aside) that succeeded"),
    Figure("availability_in_faults", "availability inside faults", "share", "higher",
           "share of the operations invoked while a fault was on that succeeded (none: the "
           "cell had no fault)"),
    Figure("write_availability_in_faults", "writes available inside faults", "share",
           "higher", "share of the writes (register) or adds (set) invoked while a fault was "
           "on, through a node that was up (not killed, paused or powered off), that "
           "succeeded: what sloppy quorums are for"),
    Figure("stale_read_share", "stale reads", "share", "lower",
           "share of the reads that missed a write completed before they began (register: "
           "stale-reads checker; set: reads missing an element an earlier read returned)"),
    Figure("stale_versions_max", "versions missed", "versions", "lower",
           "the most newer versions a stale read missed (register workload)"),
    Figure("stale_ms_p99", "staleness (p99)", "ms", "lower",
           "how long before a stale read began the newest write it missed had completed, "
           "99th percentile (register workload)"),
    Figure("lost_writes", "lost writes", "count", "lower",
           "acknowledged adds missing from the final reads (set workload; a register "
           "overwrites, so nothing can tell a lost write there)"),
    Figure("siblings_share", "reads with siblings", "share", None,
           "share of the reads that returned more than one sibling"),
    Figure("siblings_max", "most siblings", "count", None,
           "the most siblings one read returned"),
    Figure("convergence_seconds", "convergence after heal", "s", "lower",
           "from the heal (with no fault, the end of the load) to the last key's replicas "
           "agreeing, in the final-state samples (every 0.25 s simulated, 2 s in Docker)"),
    Figure("p50_ms", "latency p50", "ms", "lower", "median latency of every ok operation"),
    Figure("p99_ms", "latency p99", "ms", "lower", "99th percentile of the same"),
    Figure("read_p50_ms", "read p50", "ms", "lower", "median latency of ok reads"),
    Figure("read_p99_ms", "read p99", "ms", "lower", "99th percentile of ok reads"),
    Figure("write_p50_ms", "write p50", "ms", "lower",
           "median latency of ok writes (register) or adds (set)"),
    Figure("write_p99_ms", "write p99", "ms", "lower", "99th percentile of the same"),
)}


def run_figures(run_dir: Path) -> dict[str, float | None]:
    """Every figure of :data:`FIGURES` for the finished run in ``run_dir`` (``None`` for one
    the run cannot give). Raises OSError or ValueError when ``results.json`` or the history
    cannot be read."""
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    checkers: Mapping[str, Any] = results.get("checkers") or {}

    def figures_of(name: str) -> Mapping[str, Any]:
        return (checkers.get(name) or {}).get("figures") or {}

    stats, stale, lost = figures_of("stats"), figures_of("stale-reads"), figures_of("lost-writes")
    convergence = figures_of("convergence")
    availability = stats.get("availability") or {}
    overall = availability.get("overall") or {}
    outside = availability.get("outside_faults") or {}
    in_faults = overall.get("calls", 0) - outside.get("calls", 0)
    siblings = stats.get("siblings") or {}
    figures: dict[str, float | None] = {
        "availability": overall.get("availability"),
        "availability_in_faults": (round((overall["ok"] - outside["ok"]) / in_faults, 6)
                                   if in_faults else None),
        "stale_read_share": None, "stale_versions_max": None, "stale_ms_p99": None,
        # Without a final read nothing tells a lost add: none, rather than a 0 it cannot show.
        "lost_writes": lost.get("lost") if lost.get("final_reads") else None,
        "siblings_share": siblings.get("rate"),
        "siblings_max": siblings.get("max"),
        "convergence_seconds": _seconds((convergence.get("convergence_ms") or {}).get("max")),
    }
    if stale.get("reads_checked"):
        figures["stale_read_share"] = stale.get("stale_rate")
        figures["stale_versions_max"] = (stale.get("versions_behind") or {}).get("max") or 0
        figures["stale_ms_p99"] = (stale.get("since_newer_write_ms") or {}).get("p99") or 0.0
    elif lost and lost.get("reads"):
        figures["stale_read_share"] = round(lost.get("stale_reads", 0) / lost["reads"], 6)
    figures.update(_from_history(run_dir / "history.jsonl"))
    return figures


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


#: The faults whose targets are down while they last, and until they are ready again after (a
#: ``ready`` line, written for a node restarted while other faults are on): a client bound to
#: one fails, as a client of a dead server does, whatever the quorums.
TAKE_DOWN = frozenset({"kill", "pause", "power"})


Span = tuple[int, int]  # the first and last history index of a stretch of time


def _down_spans(ops: Sequence[Op]) -> tuple[list[Span], dict[str, list[Span]]]:
    """The fault windows (first and last history index), and for each node the spans in
    which a :data:`TAKE_DOWN` fault had it down."""
    windows = nemesis_windows(ops)
    ready = [(op.index, set(op.value.get("nodes") or ())) for op in ops
             if op.process == NEMESIS and op.f == "ready" and op.type == "info"
             and isinstance(op.value, dict)]
    down: dict[str, list[Span]] = {}
    for w in windows:
        if w["fault"] not in TAKE_DOWN:
            continue
        for node in w["targets"] or ():
            back = next((i for i, nodes in ready if i > w["end_index"] and node in nodes),
                        w["end_index"])
            down.setdefault(node, []).append((w["start_index"], back))
    return [(w["start_index"], w["end_index"]) for w in windows], down


def _from_history(path: Path) -> dict[str, float | None]:
    """From the test's calls (final reads aside): p50 and p99 (milliseconds) of the ok ones —
    all, reads, writes (``write`` or ``add``) — and the share of the writes invoked inside a
    fault window through a node that was up (:data:`TAKE_DOWN`) that succeeded."""
    ops = read_history(path)
    windows, down = _down_spans(ops)
    calls = [c for c in pair_calls(ops, path) if not c.invoke.final]
    by_kind: dict[str, list[float]] = {"": [], "read_": [], "write_": []}
    writes_in_faults = ok_in_faults = 0
    for call in calls:
        write = call.f != "read"
        at = call.inv_index
        if write and any(start <= at <= end for start, end in windows) and not any(
                start <= at <= end for start, end in down.get(str(call.invoke.node), ())):
            writes_in_faults += 1
            ok_in_faults += call.type == OK
        if call.type == OK and call.latency_ns is not None:
            ms = call.latency_ns / 1e6
            by_kind[""].append(ms)
            by_kind["write_" if write else "read_"].append(ms)
    out: dict[str, float | None] = {"write_availability_in_faults": (
        round(ok_in_faults / writes_in_faults, 6) if writes_in_faults else None)}
    for prefix, values in by_kind.items():
        values.sort()
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            out[f"{prefix}{name}_ms"] = round(nearest_rank(values, q), 3) if values else None
    return out


def summarise(runs: Iterable[Mapping[str, float | None]]) -> dict[str, dict[str, float] | None]:
    """Each figure over ``runs`` (each a :func:`run_figures`): mean, min and max of the runs
    that give it, or ``None`` where none does."""
    runs = list(runs)
    out: dict[str, dict[str, float] | None] = {}
    for name in FIGURES:
        values = [v for run in runs if (v := run.get(name)) is not None]
        out[name] = _spread(values)
    return out


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": round(sum(values) / len(values), 6), "min": min(values),
            "max": max(values)}
