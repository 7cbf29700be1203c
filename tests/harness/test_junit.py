"""JUnit XML: one case per checker; failures carry the anomalies; canaries invert."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from report_runs import SCRIPT, make_run

from kvcheck.harness.junit import RunRecord, write_junit


def cases(path: Path) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in ET.parse(path).getroot().iter("testcase")}


def record(tmp_path: Path, expect_anomaly: str | None = None, **kw: bool) -> RunRecord:
    run = tmp_path / "run"
    make_run(run, **kw)
    return RunRecord("synthetic", run, json.loads((run / "results.json").read_text()),
                     expect_anomaly)


def test_one_case_per_checker_failures_say_why(tmp_path: Path) -> None:
    path = write_junit(tmp_path / "out" / "junit.xml", [record(tmp_path)])
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "2"
    found = cases(path)
    assert set(found) == {"stats", "stale-reads", "convergence"}
    assert found["stats"].find("failure") is None
    failure = found["stale-reads"].find("failure")
    assert failure is not None and "stale-read: 1" in (failure.get("message") or "")
    assert "read of 'k1' through n2" in (failure.text or "")
    assert SCRIPT in (found["convergence"].find("failure").text or "")  # type: ignore[union-attr]


def test_unknown_is_an_error_and_control_characters_are_replaced(tmp_path: Path) -> None:
    results = {"valid": "unknown", "checkers": {"linearizable": {
        "valid": "unknown", "error": "budget\x00exceeded", "figures": {}}}}
    path = write_junit(tmp_path / "j.xml", [RunRecord("t\x01", tmp_path, results)])
    error = cases(path)["linearizable"].find("error")
    assert error is not None and error.get("message") == "unknown: budget?exceeded"


def test_a_canary_passes_only_when_caught_for_its_reason(tmp_path: Path) -> None:
    caught = record(tmp_path, expect_anomaly="stale-read")
    path = write_junit(tmp_path / "caught.xml", [caught])
    assert list(cases(path)) == ["canary: stale-read"]
    assert cases(path)["canary: stale-read"].find("failure") is None
    wrong = dataclasses.replace(caught, expect_anomaly="lost")
    failure = cases(write_junit(tmp_path / "wrong.xml", [wrong]))["canary: lost"].find("failure")
    assert failure is not None
    assert (failure.get("message") or "").startswith(
        "expected lost (from lost-writes), found instead stale-read: 1 (stale-reads)")
    quiet = RunRecord(caught.name, caught.run_dir, {"valid": True, "checkers": {}}, "lost")
    path = write_junit(tmp_path / "quiet.xml", [quiet])
    assert cases(path)["canary: lost"].find("failure") is not None


def test_a_store_that_crashed_is_a_failing_case(tmp_path: Path) -> None:
    crashed = dataclasses.replace(record(tmp_path, stale=False), crashed=("n3",))
    found = cases(write_junit(tmp_path / "j.xml", [crashed]))
    failure = found["store"].find("failure")
    assert failure is not None and "crashed on n3" in (failure.get("message") or "")


def test_a_run_that_did_not_finish_is_an_error(tmp_path: Path) -> None:
    path = write_junit(tmp_path / "j.xml", [RunRecord("t", tmp_path, None, exit_code=255)])
    error = cases(path)["run"].find("error")
    assert error is not None and error.get("message") == "the test did not finish (exit 255)"
