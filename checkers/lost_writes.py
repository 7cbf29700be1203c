"""Lost writes in the set workload: elements added by read-modify-write, read back as sets.

Per key (one set per key), with ok reads ordered by history position:

* **lost** -- an acknowledged element (its ``add`` completed ``ok``) missing from an ok final
  read. Invalid.
* **unexpected** -- an element some read returned that no ``add`` attempted, or that only
  failed adds attempted (``fail`` means it did not happen). Invalid.
* **stale** -- an element missing from a read that began after another read that returned it
  had completed. Invalid only where the configuration promises read-your-latest-write
  (:attr:`~kvcheck.checkers.history.TestConfig.promises_latest_reads`); otherwise measured:
  ``stale`` counts the elements, ``stale_reads`` the reads that missed at least one.
* **never read** -- acknowledged elements no read ever returned (counted).
* **recovered** -- indeterminate adds whose element some read returned (counted; fine).
* **stable latency** -- for each acknowledged element, the time from its add's invocation to
  the invocation of the first read from which on every read (invoked after the add) contains
  it.

Without final reads, lost elements cannot be told, and without acknowledged adds nothing can
be lost: either way the verdict is at best unknown (a key with acknowledged adds and no final
read of it, too).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from kvcheck.checkers.history import (
    FAIL,
    OK,
    Call,
    HistoryError,
    Op,
    TestConfig,
    by_key,
    pair_calls,
)
from kvcheck.checkers.result import Anomaly, CheckResult, Verdict, combine
from kvcheck.checkers.stale_reads import guarantee
from kvcheck.checkers.stats import ns_quantiles_ms


def check_lost_writes(history: Sequence[Op], config: TestConfig | None = None, *,
                      calls: Sequence[Call] | None = None, max_anomalies: int = 1000
                      ) -> CheckResult:
    """Check the set workload for lost, unexpected and stale elements (module docstring).

    Returns a :class:`CheckResult` named ``"lost-writes"``; each ``lost`` anomaly names the add
    and the final reads missing the element, each ``unexpected`` one the first read returning
    it, each ``stale`` one the read that saw it and the later read that did not. Raises
    :class:`~kvcheck.checkers.history.HistoryError` for unpaired ops or a read whose value is
    not a list.
    """
    config = config or TestConfig(workload="set")
    if calls is None:
        calls = pair_calls(history)
    groups = by_key(c for c in calls if c.f in ("add", "read"))
    anomalies: list[Anomaly] = []
    totals: dict[str, int] = dict.fromkeys(
        ("attempted", "acknowledged", "lost", "unexpected", "stale", "stale_reads",
         "never_read", "recovered", "final_reads", "reads"), 0)
    latencies: list[int] = []
    verdicts = []
    for key, cs in groups.items():
        verdicts.append(_check_key(key, cs, config, anomalies, totals, latencies,
                                   max_anomalies))
    figures = {
        "guarantee": guarantee(config),
        **totals,
        "stable_latency_ms": ns_quantiles_ms(latencies),
        "anomalies_listed": len(anomalies),
    }
    if not totals["acknowledged"]:
        verdicts.append(Verdict.UNKNOWN)
        basis = "no add was acknowledged: no write could have been lost"
    elif not totals["final_reads"]:
        verdicts.append(Verdict.UNKNOWN)
        basis = "no final read succeeded: lost elements cannot be told"
    else:
        basis = (f"{totals['acknowledged']:,} acknowledged element(s) over {len(groups):,} "
                 f"key(s), {totals['final_reads']:,} final read(s), {totals['reads']:,} reads "
                 "in all")
    return CheckResult("lost-writes", combine(verdicts), figures, tuple(anomalies), basis=basis)


def _s(ns: int) -> str:
    return f"{ns / 1e9:.3f} s"


def _elements(c: Call) -> frozenset[Any]:
    v = c.value_out
    if v is None:
        return frozenset()
    if not isinstance(v, list | tuple | set | frozenset):
        raise HistoryError(f"op {c.complete.index if c.complete else c.inv_index}: a set read "
                           f"must return a list of elements, got {v!r}")
    return frozenset(v)


def _check_key(key: Any, cs: list[Call], config: TestConfig, anomalies: list[Anomaly],
               totals: dict[str, int], latencies: list[int], max_anomalies: int) -> Verdict:
    adds: dict[Any, Call] = {}  # element -> the add that decides its status
    rank = {OK: 2, "info": 1, FAIL: 0}
    for c in cs:
        if c.f == "add":
            e = c.value_in
            prev = adds.get(e)
            if prev is None or rank[c.type] > rank[prev.type]:
                adds[e] = c
    reads = [c for c in cs if c.f == "read" and c.type == OK]
    reads.sort(key=lambda c: c.inv_index)
    finals = [c for c in reads if c.invoke.final or (c.complete and c.complete.final)]
    sets = [_elements(c) for c in reads]
    acked = {e for e, c in adds.items() if c.type == OK}
    totals["attempted"] += len(adds)
    totals["acknowledged"] += len(acked)
    totals["reads"] += len(reads)
    totals["final_reads"] += len(finals)

    def add(kind: str, ops: list[int], msg: str, **details: Any) -> None:
        if len(anomalies) < max_anomalies:
            anomalies.append(Anomaly(kind, tuple(ops), msg, key=key, details=details))

    verdict = Verdict.VALID
    seen: set[Any] = set().union(*sets) if sets else set()
    # unexpected
    first_reader: dict[Any, Call] = {}
    for c, s in zip(reads, sets, strict=True):
        for e in s:
            if e not in first_reader:
                first_reader[e] = c
    for e in sorted(seen, key=repr):
        a = adds.get(e)
        if a is None or a.type == FAIL:
            totals["unexpected"] += 1
            verdict = Verdict.INVALID
            ops = [*first_reader[e].indexes, *(a.indexes if a else ())]
            r = first_reader[e]
            why = "no add attempted" if a is None else "only a failed add attempted"
            add("unexpected", ops, f"read of {key!r} at {_s(r.invoke.time)} returned element "
                f"{e!r}, which {why}", element=e)
    totals["recovered"] += sum(1 for e, a in adds.items() if a.type == "info" and e in seen)
    totals["never_read"] += len(acked - seen)
    # lost
    if finals:
        final_sets = [_elements(c) for c in finals]
        for e in sorted(acked, key=repr):
            missing = [f for f, s in zip(finals, final_sets, strict=True) if e not in s]
            if missing:
                totals["lost"] += 1
                verdict = Verdict.INVALID
                ops = [*adds[e].indexes, *(i for f in missing for i in f.indexes)]
                nodes = ", ".join(sorted({str(f.invoke.node) for f in missing}))
                add("lost", ops, f"element {e!r} of {key!r}, added at "
                    f"{_s(adds[e].invoke.time)} and acknowledged, is missing from "
                    f"{len(missing)} of {len(finals)} final read(s) (through {nodes})",
                    element=e)
    elif acked:
        verdict = combine([verdict, Verdict.UNKNOWN])
    # stale: seen by a read that completed before a later read began, missing from that one.
    stale_pairs: dict[Any, tuple[Call, Call]] = {}
    by_ret = sorted(range(len(reads)), key=lambda i: reads[i].ret_index or 0)
    known: dict[Any, Call] = {}
    k = 0
    for c, s in zip(reads, sets, strict=True):
        while k < len(by_ret) and (reads[by_ret[k]].ret_index or 0) < c.inv_index:
            r = reads[by_ret[k]]
            for e in sets[by_ret[k]]:
                known.setdefault(e, r)
            k += 1
        absent = known.keys() - s
        totals["stale_reads"] += bool(absent)
        for e in absent:
            if e not in stale_pairs:
                stale_pairs[e] = (known[e], c)
    totals["stale"] += len(stale_pairs)
    for e, (saw, missed) in sorted(stale_pairs.items(), key=lambda kv: repr(kv[0])):
        add("stale", [*saw.indexes, *missed.indexes],
            f"element {e!r} of {key!r}, returned by a read completed at "
            f"{_s(saw.complete.time)}, is missing from a read begun at "  # type: ignore[union-attr]
            f"{_s(missed.invoke.time)}", element=e)
    if stale_pairs and config.promises_latest_reads:
        verdict = Verdict.INVALID
    # stable latency
    invs = [c.inv_index for c in reads]
    last_absent: dict[Any, int] = {}
    pending = sorted(((adds[e].inv_index, e) for e in acked), reverse=True)
    attempted: set[Any] = set()
    for q, (c, s) in enumerate(zip(reads, sets, strict=True)):
        while pending and pending[-1][0] < c.inv_index:
            attempted.add(pending.pop()[1])
        for e in attempted - s:
            last_absent[e] = q
    for e in acked:
        a = adds[e]
        start = last_absent.get(e, -1) + 1
        # the first read invoked after the add, at or after `start`
        q = max(start, bisect.bisect_right(invs, a.inv_index))
        if q < len(reads):
            latencies.append(max(0, reads[q].invoke.time - a.invoke.time))
    return verdict
