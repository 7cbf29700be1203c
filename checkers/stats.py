"""Statistics of a history: counts, siblings, latencies, throughput, availability.

Statistics measure; they judge one thing only, as Jepsen's stats checker does: whether the
test exercised the store at all. Every operation type (``f``) the clients invoked during the
test (final reads aside) must have succeeded at least once, else the result is invalid with a
``never-succeeded`` anomaly per type: a run in which, say, no write was ever acknowledged
shows nothing about lost writes or stale reads, whatever the other checkers say. A history
without client operations is unknown. Durations come from the ``time`` fields (ns); "inside a
nemesis window" is decided by history position (see :func:`nemesis_windows`).

Availability is the share of calls that succeeded, final reads aside, each call placed by its
invocation: over the whole test, outside every fault window, and in each window. When the test
has zones (two or more in ``test.json``'s ``zones``: :func:`~.history.zone_groups`), the whole
test and each window also count by zone -- the zone of the node a call was sent through (its
invocation's ``node``) -- in ``by_zone``, every zone of the test listed, and ``no_zone`` counts
the calls sent through no node or a node ``zones`` does not name. So a zone outage shows
whether only the clients bound to the lost zone's nodes failed, or the calls through the
other zones' nodes too.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kvcheck.checkers.history import (
    FAIL,
    INFO,
    NEMESIS,
    OK,
    Call,
    Op,
    TestConfig,
    pair_calls,
    zone_groups,
)
from kvcheck.checkers.result import Anomaly, CheckResult, Verdict

#: The quantiles every checker and the report give, by name.
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-quantile (0 < q <= 1) of ascending, non-empty ``sorted_values``:
    the smallest value that at least a ``q`` share of the values do not exceed. This is the
    one definition of a quantile in kvcheck; raises ``IndexError`` when there are no values."""
    n = len(sorted_values)
    return sorted_values[max(0, min(n - 1, math.ceil(q * n) - 1))]


def quantiles(values: Iterable[float]) -> dict[str, float | None]:
    """:func:`nearest_rank` p50/p95/p99/max (and count) of ``values``; ``None`` when there
    are none."""
    xs = sorted(values)
    out: dict[str, Any] = {"count": len(xs)}
    for name, q in QUANTILES:
        out[name] = nearest_rank(xs, q) if xs else None
    return out


def ns_quantiles_ms(values_ns: Iterable[int]) -> dict[str, float | None]:
    """:func:`quantiles` of nanosecond durations, in milliseconds rounded to 0.001."""
    q = quantiles(values_ns)
    return {k: (v if k == "count" or v is None else round(v / 1e6, 3)) for k, v in q.items()}


def nemesis_windows(ops: Sequence[Op]) -> list[dict[str, Any]]:
    """Fault windows from nemesis events.

    Only nemesis events that are not ``invoke`` count (an ``info`` line says the nemesis has
    acted). An event whose ``f`` starts with ``start`` opens a window for its fault (``value``'s
    ``fault`` field, else the rest of ``f``: ``start-partition`` -> ``partition``); one whose
    ``f`` starts with ``stop`` closes the open window of the same fault (without a fault name,
    every open window); ``heal`` closes every open window. A window never closed ends with the
    history.
    """
    windows: list[dict[str, Any]] = []
    open_: dict[str, dict[str, Any]] = {}
    for op in ops:
        if op.process != NEMESIS or op.type == "invoke":
            continue
        fault = targets = None
        if isinstance(op.value, dict):
            fault, targets = op.value.get("fault"), op.value.get("targets")
        if op.f.startswith("start"):
            name = fault or op.f[5:].strip("-_") or "fault"
            if name not in open_:
                open_[name] = {"fault": name, "targets": targets, "start_index": op.index,
                               "start_ns": op.time, "end_index": None, "end_ns": None}
        elif op.f.startswith("stop") or op.f == "heal":
            name = None if op.f == "heal" else fault or op.f[4:].strip("-_") or None
            for n in [name] if name in open_ else list(open_) if name is None else []:
                w = open_.pop(n)
                w["end_index"], w["end_ns"] = op.index, op.time
                windows.append(w)
    if ops:
        for w in open_.values():
            w["end_index"], w["end_ns"] = ops[-1].index, ops[-1].time
            windows.append(w)
    windows.sort(key=lambda w: w["start_index"])
    return windows


def check_stats(history: Sequence[Op], config: TestConfig | None = None, *,
                calls: Sequence[Call] | None = None) -> CheckResult:
    """Counts per op kind, siblings, latency quantiles, throughput and availability; invalid
    if an operation type never succeeded (module docstring).

    Siblings are counted for the register workload only (a register read returning a list of
    two or more values). Final reads are left out of latency, throughput and availability;
    availability is counted by zone too when ``config`` has zones (module docstring).
    Raises :class:`~kvcheck.checkers.history.HistoryError` for unpaired ops.
    """
    config = config or TestConfig()
    if calls is None:
        calls = pair_calls(history)
    counts: dict[str, dict[str, int]] = {}
    lat: dict[str, list[int]] = {}
    sib_reads = 0
    sib_hist: dict[int, int] = {}
    ok_reads = 0
    ok_times: list[int] = []
    for c in calls:
        t = c.type
        per = counts.setdefault(c.f, {OK: 0, FAIL: 0, INFO: 0})
        per[t] += 1
        latency = c.latency_ns
        if latency is not None and t != INFO:
            lat.setdefault(c.f, []).append(latency)
        if t == OK:
            if c.complete is not None and not c.complete.final and not c.invoke.final:
                ok_times.append(c.complete.time)
            if c.f == "read" and config.workload == "register":
                ok_reads += 1
                v = c.value_out
                if isinstance(v, list | tuple) and len(v) >= 2:
                    sib_reads += 1
                    sib_hist[len(v)] = sib_hist.get(len(v), 0) + 1
    client_ops = [op for op in history if op.process != NEMESIS]
    duration_ns = (client_ops[-1].time - client_ops[0].time) if client_ops else 0
    buckets: dict[int, int] = {}
    for done_ns in ok_times:
        second = done_ns // 1_000_000_000
        buckets[second] = buckets.get(second, 0) + 1
    throughput = {
        "ok_per_second_mean": round(len(ok_times) / (duration_ns / 1e9), 3)
        if duration_ns > 0 else None,
        "ok_per_second_peak": max(buckets.values(), default=0),
        "ok_per_second_min": min(buckets.values(), default=0) if buckets else 0,
        "seconds": round(duration_ns / 1e9, 3),
        # ok completions in each second of the test, capped in length
        "ok_per_second_series": [buckets.get(i, 0)
                                 for i in range(min(max(buckets, default=-1) + 1, 100_000))],
    }
    windows = nemesis_windows(history)
    figures: dict[str, Any] = {
        "ops": len(history),
        "calls": len(calls),
        "counts": counts,
        "latency_ms": {f: ns_quantiles_ms(v) for f, v in sorted(lat.items())},
        "throughput": throughput,
        "availability": _availability(calls, windows, config.zones),
    }
    if config.workload == "register":
        figures["siblings"] = {
            "reads": ok_reads,
            "reads_with_siblings": sib_reads,
            "rate": round(sib_reads / ok_reads, 6) if ok_reads else 0.0,
            "max": max(sib_hist, default=0),
            "histogram": {str(k): v for k, v in sorted(sib_hist.items())},
        }
    return _judge(figures, [c for c in calls if not c.invoke.final])


def _judge(figures: dict[str, Any], test_calls: Sequence[Call]) -> CheckResult:
    """The verdict on whether every operation type the test invoked succeeded at least once."""
    by_f: dict[str, list[Call]] = {}
    for c in test_calls:
        by_f.setdefault(c.f, []).append(c)
    if not by_f:
        return CheckResult("stats", Verdict.UNKNOWN, figures,
                           basis="no client operation was invoked during the test")
    anomalies = tuple(
        Anomaly("never-succeeded", tuple(c.inv_index for c in cs[:20]),
                f"none of the {len(cs)} {f} operation(s) succeeded", details={"f": f})
        for f, cs in sorted(by_f.items()) if not any(c.type == OK for c in cs))
    ok = sum(1 for c in test_calls if c.type == OK)
    basis = (f"{ok:,} of {len(test_calls):,} operations succeeded, every type at least once "
             f"({', '.join(sorted(by_f))})" if not anomalies else
             f"{len(anomalies)} of {len(by_f)} operation types never succeeded")
    return CheckResult("stats", Verdict.INVALID if anomalies else Verdict.VALID, figures,
                       anomalies, basis=basis)


def _availability(calls: Sequence[Call], windows: list[dict[str, Any]],
                  zones: Mapping[str, str]) -> dict[str, Any]:
    """Shares of ok calls overall, outside every window and in each window; by zone too when
    the test has zones (module docstring)."""
    groups = zone_groups(zones)

    def by_zone(cs: list[Call]) -> dict[str, Any]:
        if not groups:
            return {}
        per_zone: dict[str, list[Call]] = {z: [] for z in groups}
        no_zone: list[Call] = []
        for c in cs:
            node = c.invoke.node
            zone = zones.get(node) if node is not None else None
            (per_zone[zone] if zone is not None else no_zone).append(c)
        return {"by_zone": {z: _share(zc) for z, zc in per_zone.items()},
                "no_zone": _share(no_zone)}

    client = sorted((c for c in calls if not c.invoke.final), key=lambda c: c.inv_index)
    invs = [c.inv_index for c in client]
    inside_any: set[int] = set()
    per_window = []
    for w in windows:
        lo = bisect.bisect_left(invs, w["start_index"])
        hi = bisect.bisect_right(invs, w["end_index"])
        cs = client[lo:hi]
        inside_any.update(range(lo, hi))
        per_window.append({"fault": w["fault"], "targets": w["targets"],
                           "start_ns": w["start_ns"], "end_ns": w["end_ns"], **_share(cs),
                           **by_zone(cs)})
    outside = [c for i, c in enumerate(client) if i not in inside_any]
    return {"overall": _share(client), "outside_faults": _share(outside),
            "windows": per_window, **by_zone(client)}


def _share(cs: Sequence[Call]) -> dict[str, Any]:
    """How many of ``cs`` there are, how many succeeded, and that share (``None``: no calls)."""
    ok = sum(1 for c in cs if c.type == OK)
    return {"calls": len(cs), "ok": ok,
            "availability": round(ok / len(cs), 6) if cs else None}
