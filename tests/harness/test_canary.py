"""A canary passes only when caught for the right reason; every other outcome fails it with a
message that names what was expected and what happened."""

from __future__ import annotations

from typing import Any

import pytest

from kvcheck.harness.canary import judge_canary


def results(valid: Any = False, **checkers: tuple[Any, dict[str, int]]) -> dict[str, Any]:
    """``results.json`` content: each checker's verdict and anomaly counts."""
    return {"valid": valid, "checkers": {
        name.replace("_", "-"): {"valid": v, "anomaly_counts": counts, "basis": f"{name} basis"}
        for name, (v, counts) in checkers.items()}}


def test_caught_with_the_expected_anomaly() -> None:
    outcome = judge_canary("stale-read", results(stale_reads=(False, {"stale-read": 3})), 1)
    assert outcome.caught
    assert outcome.message == "caught: stale-reads found 3 stale-read anomalies"


@pytest.mark.parametrize(("found", "exit_code", "crashed", "message"), [
    (results(lost_writes=(False, {"lost": 2})), 1, ("n2", "n1"),
     "expected lost (from lost-writes), but the store crashed on n1, n2 during the test; lost "
     "was found too: a crash is not the anomaly"),
    (results(stats=(True, {}), lost_writes=(True, {})), 1, ("n3",),
     "expected lost (from lost-writes), but the store crashed on n3 during the test: a crash "
     "is not the anomaly"),
    (results(lost_writes=(False, {"unexpected": 1, "stale": 4})), 1, (),
     "expected lost (from lost-writes), found instead unexpected: 1 (lost-writes), "
     "stale: 4 (lost-writes)"),
    (results(True, lost_writes=(True, {"lost": 5})), 0, (),
     "expected lost (from lost-writes): lost-writes found 5, but judged the run valid (the "
     "test's guarantee does not forbid them: declare one that does with expect)"),
    (results("unknown", stats=(True, {}), lost_writes=("unknown", {})), 2, (),
     "expected lost (from lost-writes), but the checkers could not decide (lost-writes: "
     "lost_writes basis)"),
    (results(True, stats=(True, {}), lost_writes=(True, {})), 0, (),
     "expected lost (from lost-writes), found no anomaly: the run was judged valid; the "
     "checkers (or the nemesis) no longer catch what they must"),
    (None, 255, (),
     "expected lost (from lost-writes), but the test did not finish (exit 255: the test could "
     "not run (no Docker engine, no image, a node would not start), or kvcheck crashed)"),
])
def test_every_other_outcome_fails_the_canary(found: dict[str, Any] | None, exit_code: int,
                                              crashed: tuple[str, ...], message: str) -> None:
    outcome = judge_canary("lost", found, exit_code, crashed)
    assert not outcome.caught
    assert outcome.message == message


def test_an_unknown_anomaly_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not an anomaly kind: 'slow'"):
        judge_canary("slow", results(), 1)
