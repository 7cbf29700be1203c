"""Probabilistically bounded staleness: what a partial quorum's model predicts, beside what a run
measured (Bailis et al., "Probabilistically Bounded Staleness for Practical Partial Quorums",
VLDB 2012).

Two predictions, for N replicas, a write quorum W and a read quorum R:

- **k-staleness** (:func:`k_staleness`), in closed form: the probability that a read misses all
  of the last k versions, when each write reached W replicas and each read asks R of the N
  chosen at random: ``(C(N-W, R) / C(N, R)) ** k``; 0 when W + R > N.
- **t-visibility** (:func:`t_visibility`), by the WARS model's Monte Carlo: the probability that
  a read begun t ms after a write committed misses it, given four delays per replica drawn
  from a run's measured samples (:class:`ReplicaLatencies`): W, the write reaching the replica;
  A, its acknowledgement coming back; R, a read request reaching it; S, its reply coming back.
  The write goes to all N replicas at once and commits at the W-th fastest W + A; replica i
  has it if ``W_i <= commit + t + R_i``; the read answers with the R replicas of smallest
  ``R_i + S_i``, and is stale if none of them had it.

:func:`cell_theory` puts both beside the stale-reads checker's figures (``visibility`` and
``versions_behind_counts``, :mod:`kvcheck.checkers.stale_reads`) for a cell of the consistency
matrix, with the model's assumptions and where the reference store differs from them.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvcheck.checkers.stale_reads import VISIBILITY_EDGES_MS
from kvcheck.store.sim import LATENCY_KINDS

#: The file a simulated run writes its replica latencies to (``docs/history-format.md``).
LATENCY_FILE = "replica-latency.json"
LATENCY_FORMAT = "kvcheck-replica-latency"
#: The k of the k-staleness that :func:`cell_theory` gives.
K_VALUES = (1, 2, 3, 4, 5)
#: What the model assumes, and where the reference store differs (:func:`cell_theory`).
ASSUMPTIONS = (
    "WARS: every replica's delays are drawn independently from the run's samples: the write "
    "reaching it (W), its acknowledgement back (A, with the replica's merge and sync), a read "
    "request reaching it (R) and the reply back (S).",
    "Like the model, the store asks all N replicas of a key and answers on the first W "
    "acknowledgements or R replies.",
    "But the store has one replica stamp a write first and sends it to the others only then "
    "(with fsync always, once the stamper has synced it): they get it later than in the "
    "model, where the write goes to all N at once.",
    "The coordinator is often one of the key's N replicas: it stamps the write and reads its "
    "own copy at once, without a message, so R = 1 can answer with no remote reply. The "
    "model has no local replica.",
    "The model has one write and no concurrent writers; the workload writes concurrently, and "
    "the checker counts a read stale against the newest write completed before it began, "
    "with t measured from that write's completion.",
    "No failures: a cell with a nemesis breaks the model's assumptions.",
    "Read repair and anti-entropy, which spread writes beside the write path, are absent "
    "from the model.",
    "Writes go to all N replicas in WARS; the closed-form k-staleness assumes a write "
    "reaches only W, so it is an upper bound.",
    "Predicted t-visibility is taken at each bucket's upper edge, and the open bucket's at "
    "its lower edge; reads inside a bucket came sooner than its upper edge.",
)


@dataclass(frozen=True, slots=True)
class ReplicaLatencies:
    """Samples (ms) of the model's four delays, from one run or several: ``write`` (W),
    ``ack`` (A), ``read`` (R), ``reply`` (S). Raises ValueError for a sample that is not a
    finite number >= 0."""

    write: tuple[float, ...]
    ack: tuple[float, ...]
    read: tuple[float, ...]
    reply: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in LATENCY_KINDS:
            for value in getattr(self, name):
                if isinstance(value, bool) or not isinstance(value, int | float) \
                        or not math.isfinite(value) or value < 0:
                    raise ValueError(f"{name} latency {value!r} is not a finite number >= 0")

    def counts(self) -> dict[str, int]:
        """How many samples of each kind, by name."""
        return {name: len(getattr(self, name)) for name in LATENCY_KINDS}


def write_latencies(run_dir: Path, samples: Mapping[str, Iterable[float]]) -> None:
    """Write a run's replica latencies (seconds, by kind: ``write``, ``ack``, ``read``,
    ``reply``) to ``run_dir`` (:data:`LATENCY_FILE`, in milliseconds). Raises OSError."""
    latencies = {kind: [round(s * 1000, 3) for s in samples.get(kind, ())]
                 for kind in LATENCY_KINDS}
    (run_dir / LATENCY_FILE).write_text(json.dumps(
        {"format": LATENCY_FORMAT, "version": 1, "unit": "ms", **latencies}), encoding="utf-8")


def read_latencies(run_dir: Path) -> ReplicaLatencies | None:
    """The replica latencies ``run_dir`` recorded (:data:`LATENCY_FILE`), or None when it has
    none (a Docker run). Raises ValueError, naming the file, when it is malformed."""
    path = run_dir / LATENCY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != LATENCY_FORMAT:
            raise ValueError(f"not a {LATENCY_FORMAT} file")
        if data.get("version") != 1 or data.get("unit") != "ms":
            raise ValueError(f"version {data.get('version')!r}, unit {data.get('unit')!r} "
                             "unknown (1, ms expected)")
        kinds: list[tuple[float, ...]] = []
        for kind in LATENCY_KINDS:
            samples = data.get(kind)
            if not isinstance(samples, list):
                raise ValueError(f"{kind} is not a list")
            kinds.append(tuple(samples))
        return ReplicaLatencies(*kinds)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def pooled(latencies: Iterable[ReplicaLatencies | None]) -> ReplicaLatencies | None:
    """The samples of several runs together (None entries skipped); None if there are none."""
    runs = [run for run in latencies if run is not None]
    if not runs:
        return None
    return ReplicaLatencies(*(tuple(x for run in runs for x in getattr(run, kind))
                              for kind in LATENCY_KINDS))


def k_staleness(n: int, w: int, r: int, k: int) -> float:
    """The closed-form probability that a read misses all of the last ``k`` versions:
    ``(C(N-W, R) / C(N, R)) ** k``, 0 when W + R > N. Raises ValueError unless
    1 <= W, R <= N and k >= 1."""
    _check_quorums(n, w, r)
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    return float((math.comb(n - w, r) / math.comb(n, r)) ** k)


def t_visibility(latencies: ReplicaLatencies, n: int, w: int, r: int, t_ms: Sequence[float],
                 *, trials: int = 10_000, seed: int = 0) -> list[float]:
    """The WARS model's probability that a read begun ``t`` ms after a write committed is
    stale, for each ``t`` of ``t_ms`` (module docstring), from ``trials`` trials drawn with a
    generator of its own seeded ``seed``: the same arguments give the same answer.

    Each trial gives the least t from which the read sees the write (it is stale exactly for
    smaller t, since which replicas answer does not depend on t), so one set of trials
    serves every t. Raises ValueError unless 1 <= W, R <= N, ``trials`` >= 1, every t >= 0
    and every kind of latency has samples."""
    _check_quorums(n, w, r)
    if trials < 1:
        raise ValueError(f"trials must be at least 1, not {trials}")
    if any(not t >= 0 for t in t_ms):
        raise ValueError(f"t must be >= 0 ms: {list(t_ms)}")
    if empty := [kind for kind, count in latencies.counts().items() if not count]:
        raise ValueError(f"no {', '.join(empty)} latency samples")
    rng = random.Random(seed)
    draws = trials * n
    writes = rng.choices(latencies.write, k=draws)
    acks = rng.choices(latencies.ack, k=draws)
    reads = rng.choices(latencies.read, k=draws)
    replies = rng.choices(latencies.reply, k=draws)
    visible_from: list[float] = []  # per trial: stale for every t below it
    replicas = range(n)
    for first in range(0, draws, n):
        commit = sorted(writes[first + i] + acks[first + i] for i in replicas)[w - 1]
        answering = sorted(replicas, key=lambda i: reads[first + i] + replies[first + i])[:r]
        visible_from.append(min(writes[first + i] - reads[first + i] for i in answering)
                            - commit)
    visible_from.sort()
    return [(trials - bisect.bisect_right(visible_from, t)) / trials for t in t_ms]


def cell_theory(run_dirs: Iterable[Path], n: int, w: int, r: int,
                visibility_buckets: Sequence[Mapping[str, Any]],
                versions_behind_counts: Mapping[str, int], *, trials: int = 10_000,
                seed: int = 0) -> dict[str, Any] | None:
    """The model's predictions for a matrix cell beside what its runs measured; None when its
    runs (``run_dirs``) recorded no replica latencies, or none of some kind.

    ``visibility_buckets`` and ``versions_behind_counts`` are the stale-reads checker's
    figures summed over the cell's runs (no buckets: the checker's edges, nothing measured).
    Predicted t-visibility is taken at each bucket's upper edge ``le_ms``, and for the open
    bucket (``le_ms`` None) at its lower edge, the largest finite one; measured, the bucket's
    stale share. Measured k-staleness is the share of the checked reads that missed at least
    k versions. A share with nothing to measure it on is None. Raises ValueError for a
    malformed latency file or quorums outside 1 <= W, R <= N.
    """
    latencies = pooled(read_latencies(run_dir) for run_dir in run_dirs)
    if latencies is None or not all(latencies.counts().values()):
        return None
    buckets = [dict(bucket) for bucket in visibility_buckets] or [
        {"le_ms": edge, "reads": 0, "stale": 0} for edge in VISIBILITY_EDGES_MS]
    finite = [b["le_ms"] for b in buckets if b["le_ms"] is not None]
    at = [b["le_ms"] if b["le_ms"] is not None else max(finite, default=0) for b in buckets]
    predicted = t_visibility(latencies, n, w, r, at, trials=trials, seed=seed)
    behind = {int(missed): count for missed, count in versions_behind_counts.items()}
    checked = sum(behind.values())
    return {
        "model": "WARS (Bailis et al., VLDB 2012)",
        "samples": latencies.counts(),
        "t_visibility": [
            {"le_ms": bucket["le_ms"], "predicted_stale": round(p, 6),
             "measured_stale": _share(bucket["stale"], bucket["reads"]),
             "reads": bucket["reads"]}
            for bucket, p in zip(buckets, predicted, strict=True)],
        "k_staleness": [
            {"k": k, "predicted": round(k_staleness(n, w, r, k), 6),
             "measured": _share(sum(c for missed, c in behind.items() if missed >= k), checked)}
            for k in K_VALUES],
        "assumptions": list(ASSUMPTIONS),
    }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def _check_quorums(n: int, w: int, r: int) -> None:
    if not (1 <= w <= n and 1 <= r <= n):
        raise ValueError(f"quorums must be 1 <= W, R <= N: N={n} W={w} R={r}")
