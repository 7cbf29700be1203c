"""Stale reads of registers, judged against the quorum configuration.

Definition (``docs/checkers.md``): a read of key k is *stale* when some write to k completed
before the read began, and every value the read returned was written only by writes that
completed before that newer write began. Siblings count: one fresh sibling makes the read
fresh. A deleted key (a ``delete``, or a ``write`` of null) and a never-written key read as the
empty value (``null`` or ``[]``), which the initial state and every delete "write". A value some
write of which is indeterminate, or that no write wrote at all, is never judged stale (the
latter is the linearizability checker's business).

Order is history position (as in :mod:`kvcheck.checkers.linearizable`); durations use ``time``.

Verdict: where the test promises read-your-latest-write
(:attr:`~kvcheck.checkers.history.TestConfig.promises_latest_reads`: its declared guarantee, else
W + R > N with strict quorums) any stale read makes the result invalid; otherwise stale reads
are measured and the result is valid. ``figures["guarantee"]`` says which applied. The
evidence is the reads that *could* have been stale (``figures["reads_checked"]``): ok reads
that began after some write of their key had completed. Where the promise applies and there
is none, the result is unknown: nothing could have shown a stale read.

A read can also return an overwritten version as a sibling: with vector clocks, a write made
with the context of a read supersedes exactly what that read returned, so no read may return
one of those versions beside the new one — they are its ancestors, not its siblings. Where
``test.json`` says each write carries its process's last read's context
(:attr:`~kvcheck.checkers.history.TestConfig.write_context`) and no clock can have been pruned
(no more actors than ``vclock_max_entries``: the nodes, and one more per membership change, as
a node joins as a new actor; a pruned clock makes false siblings by design), every such read
is a ``superseded-sibling`` and makes the result invalid whatever the quorums
(:func:`_superseded_siblings`; values written once only, so that each names one version).
``figures["sibling_reads"]`` counts the ok reads that returned siblings.

Two figures measure staleness in the terms of the PBS model (:mod:`kvcheck.harness.pbs`), over
the checked reads. ``visibility`` buckets them by t, from the completion of the write a read
must see to the read's invocation (a read is stale exactly when it misses the write with the
latest invocation among those completed before it began): ``{"le_ms", "reads", "stale"}`` per
bucket, which holds the reads with t above the previous edge and up to its own
(:data:`VISIBILITY_EDGES_MS`; ``None``: no bound). ``versions_behind_counts`` counts them by
how many newer versions each missed (``"0"``: the fresh ones), so that the share that missed
at least k can be measured.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from kvcheck.checkers.history import (
    FAIL,
    NEMESIS,
    OK,
    Call,
    Op,
    TestConfig,
    by_key,
    pair_calls,
)
from kvcheck.checkers.result import Anomaly, CheckResult, Verdict
from kvcheck.checkers.stats import ns_quantiles_ms, quantiles

_EMPTY = ("kvcheck-empty-value",)
_NEVER = -2**62  # "completed before everything": the initial empty value
_OPEN = 2**62  # an indeterminate write never completes
_WRITES = ("write", "delete")
#: The upper edges (ms) of the ``visibility`` buckets; ``None``: no bound.
VISIBILITY_EDGES_MS: tuple[int | None, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, None)


def _s(ns: int) -> str:
    return f"{ns / 1e9:.3f} s"


def _completion(c: Call) -> Op:
    """The completion of ``c``, a call that completed ok."""
    assert c.complete is not None
    return c.complete


def _read_values(v: Any) -> tuple[Any, ...]:
    if v is None:
        return (_EMPTY,)
    if isinstance(v, list | tuple):
        return tuple(_EMPTY if x is None else x for x in v) or (_EMPTY,)
    return (v,)


def guarantee(config: TestConfig) -> str:
    """A one-line statement of which read guarantee applies, and why."""
    nwr = ("N, W, R unknown" if config.n is None or config.w is None or config.r is None
           else f"N={config.n} W={config.w} R={config.r}"
           + (" sloppy" if config.sloppy_quorum else ""))
    if config.guarantee is not None:
        kind = ("read-your-latest-write" if config.promises_latest_reads
                else "none (stale reads measured only)")
        quorums = "" if config.n is None else f" ({nwr})"  # a store without quorums says none
        return f"{kind}: the test declares {config.guarantee}{quorums}"
    if config.strict_quorum:
        return f"read-your-latest-write: W + R > N with strict quorums ({nwr})"
    if config.n is None or config.w is None or config.r is None:
        return f"none: {nwr} (stale reads measured only)"
    if config.sloppy_quorum:
        return f"none: sloppy quorums (stale reads measured only; {nwr})"
    return f"none: W + R <= N (stale reads measured only; {nwr})"


def check_stale_reads(history: Sequence[Op], config: TestConfig | None = None, *,
                      calls: Sequence[Call] | None = None, max_anomalies: int = 1000
                      ) -> CheckResult:
    """Find stale reads of register keys (see module docstring).

    Returns a :class:`CheckResult` named ``"stale-reads"`` with one ``stale-read`` anomaly per
    stale read (at most ``max_anomalies`` listed; all are counted), naming the read, the newer
    write it missed, and the latest write of the value it returned. Raises
    :class:`~kvcheck.checkers.history.HistoryError` for unpaired ops.
    """
    config = config or TestConfig()
    if calls is None:
        calls = pair_calls(history)
    groups = by_key(c for c in calls if c.type != FAIL and (c.f in _WRITES or c.f == "read"))
    anomalies: list[Anomaly] = []
    reads = checked = stale = 0
    behind: list[int] = []
    lags: list[int] = []
    seen: list[tuple[int, int]] = []
    unjudged = _siblings_unjudged(history, config)
    sibling_reads = superseded = 0
    for key, cs in groups.items():
        r, k, s = _check_key(key, cs, anomalies, behind, lags, seen, max_anomalies)
        reads += r
        checked += k
        stale += s
        if unjudged is None:
            with_siblings, bad = _superseded_siblings(key, cs, anomalies, max_anomalies)
            sibling_reads += with_siblings
            superseded += bad
    strict = config.promises_latest_reads
    keys = f"{len(groups):,} key{'s' if len(groups) != 1 else ''}"
    if superseded:
        valid = Verdict.INVALID
        basis = (f"{superseded:,} of {sibling_reads:,} reads that returned siblings returned "
                 f"an overwritten version beside its successor, over {keys}")
    elif strict and stale:
        valid = Verdict.INVALID
        basis = f"{stale:,} of {checked:,} reads that could have been stale were, over {keys}"
    elif strict and not checked:
        valid = Verdict.UNKNOWN
        basis = (f"no read could have been stale: of {reads:,} ok reads, none began after "
                 "a write of its key had completed")
    else:
        valid = Verdict.VALID
        basis = f"{checked:,} of {reads:,} reads could have been stale, over {keys}" + (
            "" if strict else f"; {stale:,} were (measured, not judged)")
    figures = {
        "guarantee": guarantee(config),
        "enforced": strict,
        "reads": reads,
        "reads_checked": checked,
        "stale_reads": stale,
        "stale_rate": round(stale / reads, 6) if reads else 0.0,
        "versions_behind": quantiles(behind),
        "since_newer_write_ms": ns_quantiles_ms(lags),
        "visibility": _visibility(seen),
        "versions_behind_counts": {str(n): count for n, count
                                   in sorted(Counter(missed for _, missed in seen).items())},
        "sibling_reads": sibling_reads,
        "superseded_siblings": superseded if unjudged is None else None,
        **({} if unjudged is None else {"superseded_siblings_unjudged": unjudged}),
        "anomalies_listed": len(anomalies),
    }
    return CheckResult("stale-reads", valid, figures, tuple(anomalies), basis=basis)


def _siblings_unjudged(history: Sequence[Op], config: TestConfig) -> str | None:
    """Why superseded siblings cannot be told in this history; None when they can."""
    if config.versioning != "vector-clock" or config.write_context != "last-read":
        return "test.json does not say which context each write carried"
    # Each node is one actor, and a membership change may add one: a node joins on an empty
    # disk, as a new actor.
    actors = len(config.nodes) + sum(op.process == NEMESIS and op.type == "invoke"
                                     and op.f == "start-membership" for op in history)
    limit = config.vclock_max_entries
    if limit is None or actors > limit:
        return (f"up to {actors} actors, more than the {limit} entries a vector clock keeps: "
                "clocks may have been pruned")
    return None


def _superseded_siblings(key: Any, cs: list[Call], anomalies: list[Anomaly],
                         max_anomalies: int) -> tuple[int, int]:
    """Judge the ok reads of ``key`` that returned siblings (module docstring): each write
    supersedes what its process's last ok read of the key returned. ``cs`` holds no failed
    call. Return how many such reads there are, and how many returned a version beside one
    that superseded it."""
    writes: Counter[Any] = Counter()  # value -> writes of it that may have happened
    #: value -> its write, the read it followed, and the values that read returned
    context_of: dict[Any, tuple[Call, Call, tuple[Any, ...]]] = {}
    last_read: dict[int | str, Call] = {}
    try:
        for c in sorted(cs, key=lambda c: c.inv_index):  # a process's calls are sequential
            if c.f == "read" and c.type == OK:
                last_read[c.process] = c
            elif c.f == "write" and c.value_in is not None:
                writes[c.value_in] += 1
                if (read := last_read.get(c.process)) is not None:
                    context_of[c.value_in] = c, read, _read_values(read.value_out)
    except TypeError:
        return 0, 0  # unhashable values: not a register
    nsiblings = nbad = 0
    for c in cs:
        if c.f != "read" or c.type != OK:
            continue
        try:
            vals = tuple(dict.fromkeys(_read_values(c.value_out)))  # once each, in order
        except TypeError:
            continue
        if len(vals) < 2:
            continue
        nsiblings += 1
        for b in (v for v in vals if writes[v] == 1 and v in context_of):
            write, read, overwritten = context_of[b]
            older = [a for a in vals if a != b and writes[a] == 1 and a in overwritten]
            if not older:
                continue
            nbad += 1
            if len(anomalies) < max_anomalies:
                via = f" through {c.invoke.node}" if c.invoke.node else ""
                anomalies.append(Anomaly(
                    "superseded-sibling", (*c.indexes, *write.indexes, *read.indexes),
                    f"read of {key!r}{via} at {_s(c.invoke.time)} returned {older[0]!r} "
                    f"beside {b!r}, but the write of {b!r} (process {write.process}) carried "
                    f"the context of its read that returned {older[0]!r}: it overwrote it",
                    key=key, details={"read": c.inv_index, "write": write.inv_index,
                                      "context_read": read.inv_index,
                                      "superseded": older, "node": c.invoke.node}))
            break
    return nsiblings, nbad


def _visibility(seen: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """The ``visibility`` buckets (module docstring) of reads given as (ns since the write
    they must see completed, versions missed)."""
    bounds = [math.inf if edge is None else edge * 1_000_000 for edge in VISIBILITY_EDGES_MS]
    reads = [0] * len(bounds)
    stale = [0] * len(bounds)
    for since, missed in seen:
        i = bisect.bisect_left(bounds, since)
        reads[i] += 1
        stale[i] += missed > 0
    return [{"le_ms": edge, "reads": n, "stale": m}
            for edge, n, m in zip(VISIBILITY_EDGES_MS, reads, stale, strict=True)]


def _check_key(key: Any, cs: list[Call], anomalies: list[Anomaly], behind: list[int],
               lags: list[int], seen: list[tuple[int, int]], max_anomalies: int
               ) -> tuple[int, int, int]:
    """Judge the reads of one key; return how many ok reads it has, how many of them could
    have been stale, and how many were. Appends to ``seen``, for each read that could have
    been, how long (ns) before it began the write it must see completed, and how many
    versions it missed."""
    maxret: dict[Any, int] = {_EMPTY: _NEVER}
    last_writer: dict[Any, Call] = {}
    done: list[Call] = []  # ok writes
    for c in cs:
        if c.f == "read":
            continue
        v = _EMPTY if (c.f == "delete" or c.value_in is None) else c.value_in
        ret = c.ret_index if c.type == OK else None
        r = _OPEN if ret is None else ret
        if r >= maxret.get(v, _NEVER):
            maxret[v] = r
            if ret is not None:
                last_writer[v] = c
        if ret is not None:
            done.append(c)
    done.sort(key=lambda c: _completion(c).index)
    rets = [_completion(c).index for c in done]
    best: list[Call] = []  # best[j]: the write with the latest invocation among done[:j+1]
    for c in done:
        best.append(c if not best or c.inv_index > best[-1].inv_index else best[-1])
    nreads = nchecked = nstale = 0
    for c in cs:
        if c.f != "read" or c.type != OK:
            continue
        nreads += 1
        j = bisect.bisect_left(rets, c.inv_index)
        if j == 0:
            continue
        newer = best[j - 1]
        vals = _read_values(c.value_out)
        try:
            m = max(maxret.get(v, _OPEN) for v in vals)
        except TypeError:
            continue  # unhashable value: not a register read
        nchecked += 1
        since = c.invoke.time - _completion(newer).time
        if m >= newer.inv_index:
            seen.append((since, 0))
            continue
        nstale += 1
        # Versions missed: completed writes that began after every returned value's writes
        # completed, and completed before the read began.
        lo = bisect.bisect_right(rets, m)
        missed = [w for w in done[lo:j] if w.inv_index > m]
        first = min(missed, key=lambda w: _completion(w).time)
        written = _completion(first).time
        lag = c.invoke.time - written
        behind.append(len(missed))
        lags.append(lag)
        seen.append((since, len(missed)))
        if len(anomalies) < max_anomalies:
            names = [*c.indexes, *newer.indexes]
            for v in vals:
                w = last_writer.get(v)
                if w is not None:
                    names.extend(w.indexes)
            shown = [None if v is _EMPTY else v for v in vals]
            via = f" through {c.invoke.node}" if c.invoke.node else ""
            anomalies.append(Anomaly(
                "stale-read", tuple(names),
                f"read of {key!r}{via} at {_s(c.invoke.time)} returned "
                f"{shown[0] if len(shown) == 1 else shown!r}, but the write of "
                f"{first.value_in!r} completed at {_s(written)}"
                f" ({len(missed)} newer version{'s' if len(missed) > 1 else ''} missed)",
                key=key,
                details={"read": c.inv_index, "newer_write": newer.inv_index,
                         "versions_behind": len(missed), "since_newer_write_ns": lag,
                         "node": c.invoke.node}))
    return nreads, nchecked, nstale
