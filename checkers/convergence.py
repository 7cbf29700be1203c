"""Eventual convergence: after the heal and the recovery wait, replicas agree.

Two sources, either or both:

* the final state (``final-state.json``, format in ``docs/history-format.md``): samples, taken
  after the heal, of the versions (or a digest of them) each node holds for each key. A key has
  *converged* when, in the last sample, every replica of it holds the same versions (a replica
  that lacks the key disagrees with one that has it). Its convergence time is the time from the
  heal (``heal_time``, else the history's last nemesis ``heal``/``stop`` event, else the first
  sample) to the first sample from which on its replicas agreed in every sample.
* the final reads (ops with ``"final": true``): reads of every key through every node after the
  recovery wait; they must all return the same value (siblings compared as sets).

Invalid if a key diverged or final reads disagree; unknown if a replica could not be sampled
(``null`` for its node in the last sample) or there is nothing to judge: no key that some
replica holds and no final read that returned a value (empty replicas trivially agree).
Besides the counts, ``figures["by_key"]`` gives each key's own judgement (the report shows
it): ``replicas`` (``converged``, ``diverged`` or ``undecided``, with ``converged_after_ms``)
where there is a final state, ``final_reads`` (``agree`` or ``disagree``) where the key has
final reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kvcheck.checkers.history import (
    NEMESIS,
    OK,
    Call,
    Op,
    TestConfig,
    by_key,
    pair_calls,
    validate_final_state,
)
from kvcheck.checkers.result import Anomaly, CheckResult, Verdict, combine
from kvcheck.checkers.stats import ns_quantiles_ms

#: What :func:`replica_versions` says of a replica that lacks the key.
ABSENT = "<absent>"


def replica_versions(replica: Mapping[str, Any] | None) -> str:
    """A replica's versions of a key in a comparable form: two replicas agree iff these are
    equal. Versions compare as a set, digests as strings; :data:`ABSENT` when the replica lacks
    the key (no entry, or no versions)."""
    if replica is None:
        return ABSENT
    if "digest" in replica:
        return "digest:" + str(replica["digest"])
    versions = replica.get("versions") or []
    if not versions:
        return ABSENT
    return "versions:" + json.dumps(sorted(json.dumps(v, sort_keys=True) for v in versions))


def replica_holders(nodes: Mapping[str, Any], key: str,
                    replicas: Mapping[str, list[str]]) -> list[str]:
    """The nodes that should hold ``key`` in a sample whose ``nodes`` are given: its preference
    list from ``final-state.json``'s ``replicas``, else the nodes that report the key."""
    holders = replicas.get(key)
    if holders is None:
        holders = [n for n, ks in nodes.items() if ks and key in ks]
    return holders


#: What :func:`_canon_value` gives for a read of nothing (null, or no siblings).
_NOTHING = "[]"


def _canon_value(v: Any) -> str:
    if isinstance(v, list | tuple | set | frozenset):
        return json.dumps(sorted(json.dumps(x, sort_keys=True, default=repr) for x in v))
    return json.dumps([json.dumps(v, sort_keys=True, default=repr)] if v is not None else [])


def check_convergence(history: Sequence[Op], config: TestConfig | None = None,
                      final_state: Mapping[str, Any] | None = None, *,
                      calls: Sequence[Call] | None = None, max_anomalies: int = 1000
                      ) -> CheckResult:
    """Check that every replica of every key, and every final read, agree (module docstring).

    ``diverged`` anomalies carry the per-node representation of the key in ``details`` (they
    name no ops); ``final-reads-disagree`` anomalies name the final reads of the key. Raises
    ``ValueError`` for a malformed ``final_state`` and
    :class:`~kvcheck.checkers.history.HistoryError` for unpaired ops.
    """
    config = config or TestConfig()
    if calls is None:
        calls = pair_calls(history)
    anomalies: list[Anomaly] = []
    verdicts: list[Verdict] = []
    figures: dict[str, Any] = {}
    per_key: dict[str, dict[str, Any]] = {}
    if final_state is not None:
        validate_final_state(final_state)
        heal = final_state.get("heal_time")
        if heal is None:
            heal = heal_time(history)
        if final_state["samples"]:
            verdicts.append(_check_replicas(final_state, heal, anomalies, figures, per_key,
                                            max_anomalies))
    finals = by_key(c for c in calls if c.type == OK and c.f == "read"
                    and (c.invoke.final or c.complete.final))  # type: ignore[union-attr]
    disagree = read_back = 0
    for key, cs in finals.items():
        vals = {_canon_value(c.value_out) for c in cs}
        read_back += bool(vals - {_NOTHING})
        per_key.setdefault(str(key), {})["final_reads"] = "agree" if len(vals) == 1 else "disagree"
        if len(vals) > 1:
            disagree += 1
            if len(anomalies) < max_anomalies:
                anomalies.append(Anomaly(
                    "final-reads-disagree", tuple(i for c in cs for i in c.indexes),
                    f"{len(cs)} final reads of {key!r} returned {len(vals)} different values",
                    key=key, details={"by_node": {str(c.invoke.node): c.value_out for c in cs}}))
    if finals:
        verdicts.append(Verdict.INVALID if disagree else Verdict.VALID)
    figures["final_read_keys"] = len(finals)
    figures["final_read_keys_disagreeing"] = disagree
    if config.nodes and finals:
        missing = {str(k): sorted(set(config.nodes) - {c.invoke.node for c in cs})
                   for k, cs in finals.items()}
        figures["final_reads_missing_nodes"] = {k: v for k, v in missing.items() if v}
    held = figures.get("keys_held", 0)
    basis = (f"{held:,} key(s) held by replicas, {read_back:,} key(s) read back by final reads"
             + (f" through {len(config.nodes)} nodes" if config.nodes and finals else ""))
    if not held and not read_back:
        figures["note"] = basis = ("nothing to judge: no replica holds a key and no final read "
                                   "returned a value")
        verdicts.append(Verdict.UNKNOWN)
    figures["anomalies_listed"] = len(anomalies)
    figures["by_key"] = per_key
    return CheckResult("convergence", combine(verdicts), figures, tuple(anomalies), basis=basis)


def heal_time(history: Sequence[Op]) -> int | None:
    """When the nemesis last finished healing: the time of its last non-invoke ``heal`` or
    ``stop*`` event (``None`` without nemesis events)."""
    t = None
    for op in history:
        if (op.process == NEMESIS and op.type != "invoke"
                and (op.f == "heal" or op.f.startswith("stop"))):
            t = op.time
    return t


def _check_replicas(fs: Mapping[str, Any], heal: int | None, anomalies: list[Anomaly],
                    figures: dict[str, Any], per_key: dict[str, dict[str, Any]],
                    max_anomalies: int) -> Verdict:
    """Judge every key of the final state; fill ``figures`` and each key's ``per_key`` entry."""
    samples = fs["samples"]
    replicas: Mapping[str, list[str]] = fs.get("replicas") or {}
    keys: set[str] = set(replicas)
    for s in samples:
        for node_keys in s["nodes"].values():
            if node_keys:
                keys.update(node_keys)

    def state_of(sample: Mapping[str, Any], key: str) -> dict[str, str] | None:
        nodes = sample["nodes"]
        out = {}
        for n in replica_holders(nodes, key, replicas):
            ks = nodes.get(n)
            if ks is None:
                return None  # a replica could not be sampled
            out[n] = replica_versions(ks.get(key))
        return out

    diverged = undecided = 0
    times: list[int] = []
    never: list[str] = []
    for key in sorted(keys):
        last = state_of(samples[-1], key)
        if last is None:
            undecided += 1
            per_key[key] = {"replicas": "undecided"}
            continue
        if len(set(last.values())) > 1:
            diverged += 1
            never.append(key)
            per_key[key] = {"replicas": "diverged"}
            if len(anomalies) < max_anomalies:
                anomalies.append(Anomaly(
                    "diverged", (), f"replicas of {key!r} disagree in the last sample",
                    key=key, details={"replicas": last}))
            continue
        since = samples[-1]["time"]
        for s in reversed(samples):
            st = state_of(s, key)
            if st is None or len(set(st.values())) > 1:
                break
            since = s["time"]
        base = heal if heal is not None else samples[0]["time"]
        times.append(max(0, since - base))
        per_key[key] = {"replicas": "converged", "converged_after_ms": round(times[-1] / 1e6, 3)}
    figures.update({
        "keys": len(keys),
        "keys_held": sum(1 for key in keys if any(
            replica_versions(held.get(key)) != ABSENT
            for held in samples[-1]["nodes"].values() if held)),
        "converged_keys": len(keys) - diverged - undecided,
        "diverged_keys": diverged,
        "undecided_keys": undecided,
        "never_converged": never[:100],
        "convergence_ms": ns_quantiles_ms(times),
        "samples": len(samples),
    })
    if diverged:
        return Verdict.INVALID
    return Verdict.UNKNOWN if undecided else Verdict.VALID
