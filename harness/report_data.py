"""What a run's report shows, gathered from the run directory's files alone.

:func:`load_run` reads ``test.json``, ``results.json``, ``history.jsonl`` and ``final-state.json``
and returns one JSON-able dict (the page's data): calls to draw, per-bucket latency quantiles and
throughput, nemesis windows (each in its fault kind's lane, with its availability, by zone too when
the test has zones), anomalies with the calls of their key around them, and each key's replicas
per node. Times are milliseconds since the test started.

What a checker decides -- verdicts, anomalies, their counts, figures, whether and when a key
converged -- is read from ``results.json``, never worked out again here; the history and the
final state only supply what is drawn (with the checkers' own definitions: quantiles, fault
windows, which replicas agree).

Big histories are thinned, never silently: at most :data:`MAX_DRAWN` calls are drawn (every
failed, indeterminate and anomalous call first, then an even sample of the ok ones) and
``sampled`` says how many of how many; quantiles and throughput always use every call.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kvcheck.checkers import (
    Call,
    HistoryError,
    nemesis_windows,
    pair_calls,
    read_final_state,
    read_history,
)
from kvcheck.checkers.convergence import ABSENT, replica_holders, replica_versions
from kvcheck.checkers.history import FAIL, INFO, NEMESIS, OK, zone_groups, zones_from_json
from kvcheck.checkers.stats import ns_quantiles_ms
from kvcheck.terminal import count, percent

MAX_DRAWN = 10_000
MAX_ANOMALIES = 50
MAX_KEY_CALLS = 150
MAX_KEYS = 300
MAX_TEXT = 200
#: Completion types, in the order the page's script numbers them.
TYPES = (OK, FAIL, INFO)
FILES = ("test.json", "history.jsonl", "results.json", "final-state.json")
#: The fault kinds in the order of the page's fault lanes (and of their colours); any other kind
#: follows them, in alphabetical order, in a grey lane.
FAULT_ORDER = ("partition", "kill", "pause", "clock", "packet", "membership", "disk", "power",
               "zone")


def load_run(run_dir: Path) -> dict[str, Any]:
    """The report's data for ``run_dir``.

    Raises OSError or ValueError when ``test.json`` or ``results.json`` is missing or malformed.
    A missing or malformed history or final state is not an error: ``problems`` says so and the
    parts that need it are left empty.
    """
    test = json.loads((run_dir / "test.json").read_text(encoding="utf-8"))
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    data: dict[str, Any] = {"test": test, "results": results, "problems": [],
                            "links": _links(run_dir)}
    data["zones"] = _zones(test, data["problems"])
    data["weights"] = _weights(test, data["problems"])
    try:
        ops = read_history(run_dir / "history.jsonl")
        calls = pair_calls(ops)
    except (HistoryError, OSError) as exc:
        data["problems"].append(f"history: {exc}")
        ops, calls = [], []
    end_ns = max((op.time for op in ops), default=0)
    data["duration"] = _ms(end_ns)
    starts = {op.index: op.value for op in ops if op.process == NEMESIS}
    data["availability"] = _availability(results)
    data["zone_availability"] = _zone_shares(data["availability"], data["zones"], None)
    shares = {(text(w.get("fault")), w.get("start_ns")): w
              for w in data["availability"].get("windows") or [] if isinstance(w, Mapping)}
    data["windows"] = [_window(w, starts.get(w["start_index"]), end_ns,
                               shares.get((text(w["fault"]), w["start_ns"])), data["zones"])
                       for w in nemesis_windows(ops)]
    data["faults"] = _lanes(data["windows"])
    anomalies = _anomalies(results)
    by_index = {}
    for i, c in enumerate(calls):
        by_index[c.invoke.index] = i
        if c.complete is not None:
            by_index[c.complete.index] = i
    marked = {by_index[i] for a in anomalies for i in a["ops"] if i in by_index}
    drawn = _sample(calls, marked)
    data["sampled"] = {"drawn": len(drawn), "total": len(calls)}
    data["calls"] = _calls(calls, drawn, test, end_ns)
    data["buckets"] = _buckets(calls, end_ns)
    by_key: dict[Any, list[int]] = defaultdict(list)
    for i, c in enumerate(calls):
        by_key[c.invoke.key].append(i)
    for a in anomalies:
        _key_window(a, calls, by_index, by_key, end_ns)
    data["anomalies"] = anomalies
    data["anomalies_total"] = sum(len(c.get("anomalies", []))
                                  for c in results.get("checkers", {}).values())
    data["convergence"] = _convergence(run_dir, results, data["problems"])
    return data


def _links(run_dir: Path) -> list[str]:
    files = [name for name in FILES if (run_dir / name).exists()]
    logs = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob("nodes/*/*.log"))
    return files + logs


def _ms(ns: int | None) -> float:
    return round((ns or 0) / 1e6, 3)


def text(value: Any) -> str:
    """A value as short text: strings as they are, anything else as JSON; cut at MAX_TEXT."""
    s = value if isinstance(value, str) else json.dumps(value, default=str)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + "…"


def _targets(targets: Any) -> str:
    if isinstance(targets, list | tuple):
        return ",".join(text(t) for t in targets)
    return "" if targets is None else text(targets)


def _zones(test: Mapping[str, Any], problems: list[str]) -> dict[str, list[str]]:
    """Zone → its nodes (:func:`~kvcheck.checkers.history.zone_groups`): empty when the test
    has no zones, or when ``zones`` is malformed (``problems`` says so)."""
    try:
        return zone_groups(zones_from_json(test.get("zones", {})))
    except ValueError as exc:
        problems.append(f"test.json: {exc}")
        return {}


def _weights(test: Mapping[str, Any], problems: list[str]) -> dict[str, int]:
    """``test.json``'s node weights when some is not 1 (a node it leaves out weighs 1); empty
    when all are 1, or when ``weights`` is malformed (``problems`` says so)."""
    weights = test.get("weights", {})
    if not (isinstance(weights, Mapping) and all(
            isinstance(n, str) and type(w) is int for n, w in weights.items())):
        problems.append("test.json: weights must be an object of node names to integers")
        return {}
    return dict(weights) if any(w != 1 for w in weights.values()) else {}


def _availability(results: Mapping[str, Any]) -> dict[str, Any]:
    """The stats checker's availability figures (``overall``, ``outside_faults``, ``windows``);
    empty when it did not run."""
    figures = (results.get("checkers", {}).get("stats") or {}).get("figures") or {}
    availability = figures.get("availability")
    return availability if isinstance(availability, dict) else {}


def _window(w: Mapping[str, Any], value: Any, end_ns: int, share: Mapping[str, Any] | None,
            zones: Mapping[str, list[str]]) -> dict[str, Any]:
    """A fault window for the page: its label, the start event's other fields as text, and the
    stats checker's availability figure for it in words (``share``; ``None`` when none), by
    zone too (:func:`_zone_shares`)."""
    extra = {k: v for k, v in value.items() if k not in ("fault", "targets")} if isinstance(
        value, Mapping) else {}
    components = extra.get("components")
    targets = (" | ".join(_targets(c) for c in components)
               if isinstance(components, list | tuple) else _targets(w["targets"]))
    return {"fault": text(w["fault"]), "targets": targets, "detail": text(extra) if extra else "",
            "start": _ms(w["start_ns"]), "end": _ms(w["end_ns"] or end_ns),
            "availability": share_text(share) if share is not None else "",
            "zones": _zone_shares(share, zones, w["targets"])}


def _zone_shares(share: Mapping[str, Any] | None, zones: Mapping[str, list[str]],
                 targets: Any) -> list[dict[str, Any]]:
    """The ``by_zone`` part of a stats availability figure in words: per zone of the test
    (``zones``, zone → nodes), its share and whether it holds one of ``targets`` (``hit``);
    then, as zone ``None``, the calls through no zone's node if there were any. Empty when the
    test has no zones or the figure has no ``by_zone``."""
    if not zones or not isinstance(share, Mapping) or not isinstance(
            by_zone := share.get("by_zone"), Mapping):
        return []
    hit = ({t for t in targets if isinstance(t, str)}
           if isinstance(targets, list | tuple) else set())
    out = [{"zone": zone, "share": share_text(by_zone.get(zone)),
            "hit": not hit.isdisjoint(nodes)} for zone, nodes in zones.items()]
    no_zone = share.get("no_zone")
    if isinstance(no_zone, Mapping) and no_zone.get("calls"):
        out.append({"zone": None, "share": share_text(no_zone), "hit": False})
    return out


def share_text(share: Any) -> str:
    """A stats availability figure in words: ``50.0 % of 12 calls``; ``-`` when malformed."""
    if not isinstance(share, Mapping):
        return "-"
    calls, fraction = share.get("calls"), share.get("availability")
    if calls == 0:
        return "no calls"
    if not isinstance(calls, int) or not isinstance(fraction, int | float):
        return "-"
    return f"{percent(fraction)} of {count(calls)} calls"


def _lanes(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fault lanes, one per kind present in :data:`FAULT_ORDER`'s order, each with its
    colour (the kind's place in that order; any other kind gets the next, grey); sets each
    window's ``lane``."""
    kinds = sorted({w["fault"] for w in windows}, key=lambda k: (
        FAULT_ORDER.index(k) if k in FAULT_ORDER else len(FAULT_ORDER), k))
    for w in windows:
        w["lane"] = kinds.index(w["fault"])
    return [{"fault": k, "colour": FAULT_ORDER.index(k) if k in FAULT_ORDER
             else len(FAULT_ORDER)} for k in kinds]


def _sample(calls: Sequence[Call], marked: set[int]) -> list[int]:
    """Indexes of the calls to draw, ascending: all if few, else priority ones plus a sample."""
    if len(calls) <= MAX_DRAWN:
        return list(range(len(calls)))
    first = sorted(marked | {i for i, c in enumerate(calls) if c.type != OK})
    if len(first) >= MAX_DRAWN:
        return _stride(first, MAX_DRAWN)
    chosen = set(first)
    ok = [i for i in range(len(calls)) if i not in chosen]
    return sorted(first + _stride(ok, MAX_DRAWN - len(first)))


def _stride(items: list[int], n: int) -> list[int]:
    step = len(items) / n
    return [items[int(k * step)] for k in range(n)]


def _lane(process: int | str, test: Mapping[str, Any]) -> int:
    """A worker's lane: processes jump by the concurrency after an info, as Jepsen's do."""
    concurrency = test.get("concurrency")
    if isinstance(process, int) and isinstance(concurrency, int) and concurrency > 0:
        return process % concurrency
    return process if isinstance(process, int) else 0


def _calls(calls: Sequence[Call], drawn: Iterable[int], test: Mapping[str, Any],
           end_ns: int) -> dict[str, list[Any]]:
    """The drawn calls, column by column (compact JSON)."""
    cols: dict[str, list[Any]] = {k: [] for k in (
        "lane", "t0", "t1", "type", "f", "key", "node", "process", "index", "arg", "ret",
        "error", "final")}
    for i in drawn:
        c = calls[i]
        done = c.complete
        cols["lane"].append(_lane(c.process, test))
        cols["t0"].append(_ms(c.invoke.time))
        cols["t1"].append(_ms(_end_ns(c, end_ns)))
        cols["type"].append(TYPES.index(c.type))
        cols["f"].append(text(c.invoke.f))
        cols["key"].append(text(c.invoke.key))
        cols["node"].append(text(c.invoke.node))
        cols["process"].append(c.process)
        cols["index"].append(c.invoke.index)
        cols["arg"].append(text(c.invoke.value))
        cols["ret"].append(text(done.value) if done else "")
        cols["error"].append(text(done.error) if done and done.error else "")
        cols["final"].append(1 if c.invoke.final else 0)
    return cols


def _bucket_width(end_ms: float) -> float:
    """A round bucket width giving at most about 200 buckets."""
    raw = max(end_ms / 200, 10.0)
    for w in (10, 20, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000):
        if w >= raw:
            return float(w)
    return float(math.ceil(raw / 60_000) * 60_000)


def _buckets(calls: Sequence[Call], end_ns: int) -> dict[str, Any]:
    """Per time bucket: the latency quantiles of the ok and failed calls invoked in it (as the
    stats checker defines them) and the completions per second, by type."""
    width = _bucket_width(_ms(end_ns))
    n = int(_ms(end_ns) // width) + 1
    latencies: list[list[int]] = [[] for _ in range(n)]
    done = {t: [0] * n for t in TYPES}
    for c in calls:
        latency = c.latency_ns
        if c.complete is None or latency is None:
            continue
        b = min(n - 1, int(_ms(c.complete.time) // width))
        done[c.type][b] += 1
        if c.type != INFO:
            latencies[min(n - 1, int(_ms(c.invoke.time) // width))].append(latency)
    out: dict[str, Any] = {"width": width, "per_second": {
        t: [round(v * 1000 / width, 2) for v in done[t]] for t in TYPES}}
    per_bucket = [ns_quantiles_ms(ls) for ls in latencies]
    for name in ("p50", "p95", "p99"):
        out[name] = [q[name] for q in per_bucket]
    return out


def _anomalies(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for checker, check in results.get("checkers", {}).items():
        for a in check.get("anomalies", []):
            if len(out) == MAX_ANOMALIES:
                return out
            ops = [i for i in a.get("ops", []) if isinstance(i, int)]
            out.append({"checker": text(checker), "kind": text(a.get("kind", "")),
                        "key": None if a.get("key") is None else text(a["key"]),
                        "message": str(a.get("message", "")),
                        "ops": ops})
    return out


def _key_window(anomaly: dict[str, Any], calls: Sequence[Call], by_index: Mapping[int, int],
                by_key: Mapping[Any, list[int]], end_ns: int) -> None:
    """Attach the calls of the anomaly's key around its ops (``calls``), its own marked."""
    mine = {by_index[i] for i in anomaly["ops"] if i in by_index}
    if not mine:
        anomaly["calls"] = []
        return
    key = calls[next(iter(mine))].invoke.key
    t0 = min(calls[i].invoke.time for i in mine)
    t1 = max((calls[i].complete or calls[i].invoke).time for i in mine)
    pad = max(200_000_000, (t1 - t0) // 5)
    near = [i for i in by_key[key] if calls[i].invoke.time <= t1 + pad
            and _end_ns(calls[i], end_ns) >= t0 - pad]
    others = [i for i in near if i not in mine]
    keep = sorted(mine | set(others[:max(0, MAX_KEY_CALLS - len(mine))]))
    anomaly["calls"] = [_key_call(calls[i], i in mine, end_ns) for i in keep]


def _end_ns(call: Call, end_ns: int) -> int:
    """When ``call`` completed; ``end_ns`` (the history's end) if it never did."""
    return call.complete.time if call.complete is not None else end_ns


def _key_call(call: Call, marked: bool, end_ns: int) -> dict[str, Any]:
    """One call on an anomaly's key timeline."""
    done = call.complete
    return {"t0": _ms(call.invoke.time), "t1": _ms(_end_ns(call, end_ns)),
            "type": TYPES.index(call.type), "process": call.process,
            "label": f"{text(call.invoke.f)} {text(call.invoke.value)}"
                     f" → {text(done.value) if done is not None else '?'}",
            "node": text(call.invoke.node), "marked": marked}


def _convergence(run_dir: Path, results: Mapping[str, Any], problems: list[str]
                 ) -> dict[str, Any]:
    """Per key of the final state: each node's replica in the last sample as a class letter
    (same letter, same versions, as the convergence checker compares them), and the checker's
    judgement of the key from ``results.json`` (``None`` where it did not judge it). Nothing
    when the database cannot report its replicas' states (no samples)."""
    path = run_dir / "final-state.json"
    if not path.exists():
        return {"nodes": [], "keys": []}
    try:
        state = read_final_state(path)
    except HistoryError as exc:
        problems.append(str(exc))
        return {"nodes": [], "keys": []}
    samples = state["samples"]
    if not samples:
        return {"nodes": [], "keys": []}
    last = samples[-1]["nodes"]
    replicas = state.get("replicas") or {}
    figures = (results.get("checkers", {}).get("convergence") or {}).get("figures") or {}
    judged = figures.get("by_key") or {}
    nodes = sorted(last)
    keys = sorted(set(replicas) | {k for s in samples for n in s["nodes"].values() if n for k in n},
                  key=lambda k: (k not in replicas, k))
    rows = []
    for key in keys:
        holders = replica_holders(last, key, replicas)
        cells: dict[str, str] = {}
        classes: dict[str, str] = {}
        for node in nodes:
            if last[node] is None:
                cells[node] = "?"
            elif node not in holders:
                cells[node] = ""
            else:
                versions = replica_versions(last[node].get(key))
                cells[node] = "-" if versions == ABSENT else classes.setdefault(
                    versions, chr(ord("A") + min(len(classes), 25)))
        verdict = judged.get(key) or {}
        rows.append({"key": text(key), "cells": cells, "replicas": verdict.get("replicas"),
                     "after_ms": verdict.get("converged_after_ms"),
                     "final_reads": verdict.get("final_reads")})
    rows.sort(key=lambda r: r["replicas"] == "converged" and r["final_reads"] != "disagree")
    return {"nodes": [text(n) for n in nodes], "keys": rows[:MAX_KEYS], "total": len(rows),
            "samples": len(samples)}
