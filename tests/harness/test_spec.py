"""Test specifications: defaults, the derived guarantee, and clear refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvcheck.checkers import GUARANTEES, TestConfig
from kvcheck.harness.spec import SpecError, TestSpec


def test_the_guarantee_follows_the_quorums_unless_overridden() -> None:
    assert TestSpec(n=3, w=2, r=2, sloppy_quorum=False).guarantee == "no-stale-reads"
    assert TestSpec(n=3, w=2, r=2, sloppy_quorum=True).guarantee == "eventual-convergence"
    assert TestSpec(n=3, w=1, r=2, sloppy_quorum=False).guarantee == "eventual-convergence"
    assert TestSpec(n=3, w=1, r=1, expect="linearizable").guarantee == "linearizable"
    assert "linearizable" in TestSpec(expect="linearizable").checkers
    assert "lost-writes" in TestSpec(workload="set").checkers


@pytest.mark.parametrize("sloppy", [False, True])
@pytest.mark.parametrize(("expect", "workload"), [
    (expect, workload) for expect in ("", *GUARANTEES) for workload in ("register", "set")
    if not expect or workload in GUARANTEES[expect].checkers])
def test_the_checkers_read_the_guarantee_the_run_expects(expect: str, workload: str,
                                                         sloppy: bool) -> None:
    spec = TestSpec(expect=expect, workload=workload, sloppy_quorum=sloppy)  # type: ignore[arg-type]
    config = TestConfig.from_json(spec.to_json())
    guarantee = GUARANTEES[config.expected or ""]
    assert guarantee.name == spec.guarantee
    assert set(guarantee.checkers[workload]) <= set(spec.checkers) == set(config.checkers or ())
    assert config.promises_latest_reads is guarantee.latest_reads


@pytest.mark.parametrize(("workload", "expect", "can"), [
    ("register", "no-lost-writes", "set"), ("set", "linearizable", "register")])
def test_a_guarantee_the_workload_cannot_show_is_refused(workload: str, expect: str,
                                                         can: str) -> None:
    with pytest.raises(SpecError, match=f"--expect {expect} cannot be judged on the {workload} "
                                        f"workload: use --workload {can}"):
        TestSpec(workload=workload, expect=expect)  # type: ignore[arg-type]


def test_test_json_records_what_the_checkers_read() -> None:
    spec = TestSpec(nodes=3, seed=5, versioning="lww", sloppy_quorum=False)
    data = spec.to_json()
    assert data["nodes"] == ["n1", "n2", "n3"] and data["concurrency"] == 6
    assert (data["seed"], data["versioning"], data["sloppy_quorum"]) == (5, "lww", False)
    assert "--no-sloppy-quorum" in spec.store_flags()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nodes": 0}, "--nodes"),
    ({"nodes": 3, "n": 4}, "--n must be"),
    ({"w": 4}, "--w and --r"),
    ({"rate": 0}, "--rate"),
    ({"nemesis": ("partition", "flood")}, "unknown nemesis kind"),
    ({"nodes": 1, "n": 1, "w": 1, "r": 1, "nemesis": ("partition",)}, "at least 2 nodes"),
    ({"name": "../escape"}, "--name"),
    ({"expect": "perfection"}, "--expect"),
])
def test_impossible_specs_are_refused_naming_the_option(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        TestSpec(**kwargs)  # type: ignore[arg-type]


def test_run_refuses_a_histories_path_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = subprocess.run([sys.executable, "-m", "kvcheck", "run", "--histories",
                          str(blocker / "runs")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 254
    assert "cannot keep runs in" in run.stderr and "--histories" in run.stderr
