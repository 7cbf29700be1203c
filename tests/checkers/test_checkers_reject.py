"""Every checker is shown to fail: hand-written run directories in ``histories/``, in twins.

Each pair ``<name>-valid/`` and ``<name>-invalid/`` is a kvcheck run directory (``test.json``,
``history.jsonl``, ``final-state.json`` where convergence needs one); the twins differ in one
line of one file, and ``test.json``'s ``note`` says how. Every checker a valid twin lists must
accept it; on the invalid twin exactly the checkers of :data:`OBJECTIONS` must object, each with
an anomaly of the kind given that names the ops given. Valid twins carry evidence for every
verdict (each ``f`` succeeds once, a read begins after a completed write of its key, set
histories have acknowledged adds and a final read, convergence pairs a ``final-state.json``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvcheck.checkers import Results, Verdict, check_run, read_test_config

HISTORIES = Path(__file__).parent / "histories"


@dataclass(frozen=True, slots=True)
class Objection:
    """On ``<pair>-invalid``, ``checker`` is invalid with a ``kind`` anomaly naming ``ops``."""

    pair: str
    checker: str
    kind: str
    ops: tuple[int, ...] = ()


OBJECTIONS = (
    Objection("read-unwritten", "linearizable", "nonlinearizable", (2, 3)),
    Objection("stale-read", "stale-reads", "stale-read", (0, 1, 2, 3, 4, 5)),
    Objection("stale-read", "linearizable", "nonlinearizable", (4, 5)),
    Objection("reverted-write", "linearizable", "nonlinearizable", (6, 7)),
    Objection("cas-wrong-old", "linearizable", "nonlinearizable", (4, 5, 6, 7)),
    Objection("concurrent-writes", "stale-reads", "stale-read", (0, 1, 2, 4, 5, 6)),
    Objection("concurrent-writes", "linearizable", "nonlinearizable", (5, 6)),
    Objection("info-write", "linearizable", "nonlinearizable", (6, 7)),
    Objection("lost-add", "lost-writes", "lost", (2, 3, 4, 5)),
    Objection("failed-add-read", "lost-writes", "unexpected", (2, 3, 6, 7)),
    Objection("vanished-element", "lost-writes", "stale", (4, 5, 6, 7)),
    Objection("diverged-replicas", "convergence", "diverged"),
    Objection("final-reads-disagree", "convergence", "final-reads-disagree", (7, 8, 9, 10)),
    Objection("no-successful-write", "stats", "never-succeeded", (2,)),
)

PAIRS = sorted({o.pair for o in OBJECTIONS})


def check(pair: str, twin: str) -> Results:
    """``check_run`` over ``histories/<pair>-<twin>/``, writing nothing."""
    return check_run(HISTORIES / f"{pair}-{twin}", write=False)


def test_every_fixture_pair_is_in_the_table() -> None:
    names = sorted(p.name for p in HISTORIES.iterdir() if p.is_dir())
    assert names == sorted(f"{p}-{t}" for p in PAIRS for t in ("valid", "invalid"))


@pytest.mark.parametrize("pair", PAIRS)
def test_twins_differ_in_one_line(pair: str) -> None:
    valid, invalid = HISTORIES / f"{pair}-valid", HISTORIES / f"{pair}-invalid"
    files = sorted(p.name for p in valid.iterdir())
    assert files == sorted(p.name for p in invalid.iterdir())
    changed = []
    for name in files:
        a = Counter((valid / name).read_text(encoding="utf-8").splitlines())
        b = Counter((invalid / name).read_text(encoding="utf-8").splitlines())
        if a != b:
            changed.append((name, a - b, b - a))
    assert len(changed) == 1, [c[0] for c in changed]
    _, gone, added = changed[0]
    assert sum(gone.values()) == sum(added.values()) == 1


@pytest.mark.parametrize("pair", PAIRS)
def test_valid_twin_is_accepted_by_every_checker(pair: str) -> None:
    res = check(pair, "valid")
    listed = read_test_config(HISTORIES / f"{pair}-valid" / "test.json").checkers
    assert listed is not None
    assert {o.checker for o in OBJECTIONS if o.pair == pair} <= set(listed)
    assert {c.checker: c.valid for c in res.checks} == dict.fromkeys(listed, Verdict.VALID)


@pytest.mark.parametrize("objection", OBJECTIONS, ids=lambda o: f"{o.pair}:{o.checker}")
def test_invalid_twin_is_rejected(objection: Objection) -> None:
    res = check(objection.pair, "invalid")[objection.checker]
    assert res.valid is Verdict.INVALID
    found = res.anomalies_of(objection.kind)
    assert found, res.anomaly_counts
    named = {i for a in found for i in a.ops}
    assert set(objection.ops) <= named


@pytest.mark.parametrize("pair", PAIRS)
def test_only_the_right_checkers_object(pair: str) -> None:
    must = {o.checker for o in OBJECTIONS if o.pair == pair}
    res = check(pair, "invalid")
    assert {c.checker for c in res.checks if c.valid is Verdict.INVALID} == must


def test_diverged_replica_is_named() -> None:
    (a,) = check("diverged-replicas", "invalid")["convergence"].anomalies_of("diverged")
    replicas = a.details["replicas"]
    assert a.key == "k"
    assert replicas["n1"] == replicas["n2"] != replicas["n3"]


def test_reverted_write_is_measured_not_judged_under_eventual_convergence() -> None:
    res = check("reverted-write", "invalid")["stale-reads"]
    assert res.valid is Verdict.VALID
    assert res.figures["stale_reads"] == 1
    assert [a.details["read"] for a in res.anomalies_of("stale-read")] == [6]
