"""The PBS model (k-staleness in closed form, t-visibility by WARS) against hand-computed cases,
and fed by what a simulated run measures without changing the run."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.harness.cli import main
from kvcheck.harness.pbs import (
    ASSUMPTIONS,
    LATENCY_FILE,
    ReplicaLatencies,
    cell_theory,
    k_staleness,
    pooled,
    read_latencies,
    t_visibility,
)
from kvcheck.store import sim as sim_module
from kvcheck.store.config import ClusterConfig
from kvcheck.store.sim import Simulation

EDGES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, None]


def constant(write: float, ack: float, read: float, reply: float) -> ReplicaLatencies:
    return ReplicaLatencies((write,), (ack,), (read,), (reply,))


# --- k-staleness ------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "w", "r", "k", "expected"), [
    (3, 1, 1, 1, 2 / 3),
    (3, 1, 1, 2, 4 / 9),
    (3, 2, 1, 1, 1 / 3),
    (3, 1, 2, 3, 1 / 27),
    (5, 2, 2, 1, 3 / 10),  # C(3, 2) / C(5, 2)
    (3, 2, 2, 1, 0.0),
    (1, 1, 1, 1, 0.0),
])
def test_k_staleness_matches_hand_values(n: int, w: int, r: int, k: int,
                                         expected: float) -> None:
    assert k_staleness(n, w, r, k) == pytest.approx(expected)


@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(1, n), st.integers(1, n), st.integers(1, 6))))
def test_k_staleness_is_zero_exactly_when_the_quorums_intersect(
        nwrk: tuple[int, int, int, int]) -> None:
    n, w, r, k = nwrk
    p = k_staleness(n, w, r, k)
    assert (p == 0) == (w + r > n)
    assert 0 <= p < 1
    assert k_staleness(n, w, r, k + 1) <= p


@pytest.mark.parametrize(("n", "w", "r", "k"), [(3, 0, 1, 1), (3, 4, 1, 1), (3, 1, 1, 0)])
def test_k_staleness_refuses_impossible_quorums(n: int, w: int, r: int, k: int) -> None:
    with pytest.raises(ValueError):
        k_staleness(n, w, r, k)


# --- t-visibility -----------------------------------------------------------------------------


def test_with_equal_latencies_every_replica_has_the_write_before_it_commits() -> None:
    assert t_visibility(constant(5, 1, 1, 1), 3, 1, 1, [0, 1, 10]) == [0.0, 0.0, 0.0]


def test_a_read_misses_the_write_only_where_the_hand_computation_says() -> None:
    # N=2 W=1 R=1; W is 0 or 10 ms, A = R = 0, S equal: the read asks replica 0 (ties go to
    # the first), independently of the writes. It is stale until t = 10 exactly when replica 0
    # got the write at 10 and the other, which committed it, at 0: 1/2 * 1/2.
    latencies = ReplicaLatencies((0.0, 10.0), (0.0,), (0.0,), (1.0,))
    p = t_visibility(latencies, 2, 1, 1, [0, 5, 9.9, 10, 100], trials=20_000)
    assert p[:3] == pytest.approx([0.25] * 3, abs=0.015)
    assert p[3:] == [0.0, 0.0]


def test_ack_and_read_delays_shift_when_the_read_sees_the_write() -> None:
    # N=3 W=1 R=1; W is 1 or 5 ms, A = R = S = 1: the commit is at the fastest W + 1, replica
    # 0 (asked, ties going first) has the write from commit + t + 1 >= W_0, so the read is
    # stale for t < W_0 - min W - 2: t < 2 when W_0 = 5 and another replica's W = 1
    # (1/2 * 3/4 = 3/8).
    latencies = ReplicaLatencies((1.0, 5.0), (1.0,), (1.0,), (1.0,))
    p = t_visibility(latencies, 3, 1, 1, [0, 1, 1.99, 2, 3], trials=20_000)
    assert p[:3] == pytest.approx([0.375] * 3, abs=0.015)
    assert p[3:] == [0.0, 0.0]


samples = st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=6).map(tuple)
quorums = st.integers(1, 5).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(1, n), st.integers(1, n)))


@settings(max_examples=100, deadline=None)
@given(st.builds(ReplicaLatencies, samples, samples, samples, samples), quorums,
       st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=8),
       st.integers(0, 2**32))
def test_t_visibility_falls_with_t_vanishes_for_intersecting_quorums_and_replays(
        latencies: ReplicaLatencies, nwr: tuple[int, int, int], ts: list[float],
        seed: int) -> None:
    n, w, r = nwr
    ts = sorted(ts)
    p = t_visibility(latencies, n, w, r, ts, trials=300, seed=seed)
    assert all(0 <= x <= 1 for x in p)
    assert all(a >= b for a, b in itertools.pairwise(p))
    if w + r > n:
        assert p == [0.0] * len(ts)
    # From the slowest write on, every replica has it whenever asked.
    assert t_visibility(latencies, n, w, r, [max(latencies.write)], trials=300,
                        seed=seed) == [0.0]
    assert t_visibility(latencies, n, w, r, ts, trials=300, seed=seed) == p


def test_t_visibility_refuses_what_it_cannot_model() -> None:
    good = constant(1, 1, 1, 1)
    with pytest.raises(ValueError, match="quorums"):
        t_visibility(good, 3, 4, 1, [0])
    with pytest.raises(ValueError, match=">= 0"):
        t_visibility(good, 3, 1, 1, [-1])
    with pytest.raises(ValueError, match="no ack"):
        t_visibility(ReplicaLatencies((1.0,), (), (1.0,), (1.0,)), 3, 1, 1, [0])
    with pytest.raises(ValueError, match="finite"):
        ReplicaLatencies((math.inf,), (1.0,), (1.0,), (1.0,))


# --- reading runs, and a cell's theory ---------------------------------------------------------


def write_latencies(run_dir: Path, **kinds: list[float]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"format": "kvcheck-replica-latency", "version": 1, "unit": "ms",
            **{kind: kinds.get(kind, [1.0]) for kind in ("write", "ack", "read", "reply")}}
    (run_dir / LATENCY_FILE).write_text(json.dumps(data))
    return run_dir


def test_runs_without_latencies_read_as_none_and_malformed_files_are_named(
        tmp_path: Path) -> None:
    assert read_latencies(tmp_path) is None
    assert cell_theory([tmp_path], 3, 1, 1, [], {}) is None
    assert cell_theory([write_latencies(tmp_path / "quiet", ack=[])], 3, 1, 1, [], {}) is None
    (tmp_path / LATENCY_FILE).write_text('{"format": "kvcheck-replica-latency", "version": 2}')
    with pytest.raises(ValueError, match=LATENCY_FILE):
        read_latencies(tmp_path)


def test_pooled_samples_are_every_runs_together() -> None:
    a = ReplicaLatencies((1.0,), (2.0,), (3.0,), (4.0,))
    b = ReplicaLatencies((5.0, 6.0), (7.0,), (8.0,), (9.0,))
    assert pooled([a, None, b]) == ReplicaLatencies((1.0, 5.0, 6.0), (2.0, 7.0), (3.0, 8.0),
                                                     (4.0, 9.0))
    assert pooled([None]) is None


def test_cell_theory_puts_the_measured_shares_beside_the_predicted(tmp_path: Path) -> None:
    runs = [write_latencies(tmp_path / "a", write=[0.0, 10.0], ack=[0.0], read=[0.0]),
            write_latencies(tmp_path / "b", write=[0.0, 10.0], ack=[0.0], read=[0.0]),
            tmp_path / "docker-run"]
    buckets = [{"le_ms": 5, "reads": 4, "stale": 1}, {"le_ms": 10, "reads": 0, "stale": 0},
               {"le_ms": None, "reads": 2, "stale": 0}]
    theory = cell_theory(runs, 2, 1, 1, buckets, {"0": 6, "1": 3, "3": 1})
    assert theory is not None
    assert theory["model"] == "WARS (Bailis et al., VLDB 2012)"
    assert theory["samples"] == {"write": 4, "ack": 2, "read": 2, "reply": 2}
    t_vis = theory["t_visibility"]
    assert [b["le_ms"] for b in t_vis] == [5, 10, None]
    assert [b["measured_stale"] for b in t_vis] == [0.25, None, 0.0]
    assert [b["reads"] for b in t_vis] == [4, 0, 2]
    assert t_vis[0]["predicted_stale"] == pytest.approx(0.25, abs=0.02)  # the case above
    assert t_vis[1]["predicted_stale"] == t_vis[2]["predicted_stale"] == 0.0  # at 10 ms
    assert theory["k_staleness"] == [
        {"k": 1, "predicted": 0.5, "measured": 0.4},
        {"k": 2, "predicted": 0.25, "measured": 0.1},
        {"k": 3, "predicted": 0.125, "measured": 0.1},
        {"k": 4, "predicted": 0.0625, "measured": 0.0},
        {"k": 5, "predicted": 0.03125, "measured": 0.0}]
    assert theory["assumptions"] == list(ASSUMPTIONS)
    json.dumps(theory, allow_nan=False)


def test_cell_theory_without_measurements_predicts_at_the_checkers_edges(
        tmp_path: Path) -> None:
    theory = cell_theory([write_latencies(tmp_path)], 3, 2, 2, [], {})
    assert theory is not None
    assert [b["le_ms"] for b in theory["t_visibility"]] == EDGES
    assert all(b["predicted_stale"] == 0.0 and b["measured_stale"] is None
               for b in theory["t_visibility"])
    assert all(k["predicted"] == 0.0 and k["measured"] is None
               for k in theory["k_staleness"])


# --- what the simulator measures ---------------------------------------------------------------


def test_the_simulator_samples_each_quorum_message_it_delivers() -> None:
    sim = Simulation(["n1", "n2", "n3"], ClusterConfig(n=3, w=3, r=3), seed=4, trace=False)
    sim.run_for(1.0)
    assert sim.latencies == {"write": [], "ack": [], "read": [], "reply": []}
    sim.wait_for(sim.put("n1", b"k", b"v"))  # n1 stamps it, and replicates it to n2 and n3
    sim.wait_for(sim.get("n1", b"k"))  # n1 reads its own copy, and asks n2 and n3
    low, high = sim.latency
    for kind in ("write", "read", "reply"):
        assert len(sim.latencies[kind]) == 2
        assert all(low <= s <= high for s in sim.latencies[kind])
    assert len(sim.latencies["ack"]) == 2
    assert all(s >= low + sim.fsync[0] for s in sim.latencies["ack"])  # merge, sync, way back
    sim.cut("n1", "n2")
    sim.run_for(sim.cluster.request_timeout_ms / 1000 + 1)
    sim.put("n1", b"k", b"w")
    sim.run_for(sim.cluster.request_timeout_ms / 1000 + 1)
    assert len(sim.latencies["write"]) == 3  # none for the message the cut dropped


def test_the_simulator_keeps_a_bounded_evenly_spread_share_of_the_samples(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_module, "MAX_LATENCY_SAMPLES", 4)
    sim = Simulation(["n1"], trace=False)
    for i in range(20):
        sim._sample("read", float(i))
    assert sim.latencies["read"] == [0.0, 8.0, 16.0]


@pytest.fixture(scope="module")
def sim_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two simulated runs of N=3 W=1 R=1, no nemesis, the same seed."""
    dirs = []
    for name in ("a", "b"):
        histories = tmp_path_factory.mktemp(name)
        main(["run", "--backend", "sim", "--nemesis", "none", "--time-limit", "10",
              "--seed", "1", "--w", "1", "--r", "1", "--histories", str(histories)])
        dirs.append((histories / "latest").resolve())
    return dirs[0], dirs[1]


def test_a_simulated_run_records_its_latencies_and_the_same_history(
        sim_runs: tuple[Path, Path]) -> None:
    run, again = sim_runs
    data = json.loads((run / LATENCY_FILE).read_text())
    assert (data["format"], data["version"], data["unit"]) == (
        "kvcheck-replica-latency", 1, "ms")
    latencies = read_latencies(run)
    assert latencies is not None
    for kind in ("write", "ack", "read", "reply"):
        assert data[kind], kind
        assert getattr(latencies, kind) == tuple(data[kind])
    for kind in ("write", "read", "reply"):  # links take 0.5 to 2 ms
        assert all(0.5 <= ms <= 2.0 for ms in data[kind]), kind
    assert min(data["ack"]) >= 0.5
    assert (run / "history.jsonl").read_bytes() == (again / "history.jsonl").read_bytes()
    assert (run / LATENCY_FILE).read_bytes() == (again / LATENCY_FILE).read_bytes()


def test_a_cells_theory_from_a_simulated_run(sim_runs: tuple[Path, Path]) -> None:
    run, _ = sim_runs
    results: dict[str, Any] = json.loads((run / "results.json").read_text())
    figures = results["checkers"]["stale-reads"]["figures"]
    theory = cell_theory([run], 3, 1, 1, figures["visibility"],
                         figures["versions_behind_counts"])
    assert theory is not None
    assert [b["le_ms"] for b in theory["t_visibility"]] == EDGES
    assert sum(b["reads"] for b in theory["t_visibility"]) == figures["reads_checked"]
    assert theory["k_staleness"][0]["predicted"] == pytest.approx(2 / 3, abs=1e-6)
    assert theory["k_staleness"][0]["measured"] == pytest.approx(
        figures["stale_reads"] / figures["reads_checked"], abs=1e-6)
