"""Results combining and writing, running a run directory, and ``kvcheck check``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from checker_builders import H

from kvcheck.checkers import (
    Anomaly,
    CheckResult,
    HistoryError,
    Results,
    Verdict,
    check_history,
    check_run,
    combine,
    write_history,
    write_results,
)
from kvcheck.checkers.history import TestConfig
from kvcheck.harness.cli import main

V, X, U = Verdict.VALID, Verdict.INVALID, Verdict.UNKNOWN


def test_combine_false_beats_unknown_beats_true() -> None:
    assert combine([]) is V
    assert combine([V, V]) is V
    assert combine([V, U]) is U
    assert combine([U, X, V]) is X
    assert [v.to_json() for v in (V, X, U)] == [True, False, "unknown"]
    assert Verdict.from_json("unknown") is U


def test_results_json_is_strict_and_written_atomically(tmp_path: Path) -> None:
    res = Results((
        CheckResult("a", V, {"x": float("nan"), "s": {1, 2}, "t": (1,)}),
        CheckResult("b", X, {}, (Anomaly("lost", (5, 3, 3), "m", key="k"),)),
    ))
    path = write_results(tmp_path / "results.json", res)
    data = json.loads(path.read_text())
    assert data["valid"] is False
    assert data["checkers"]["a"]["figures"] == {"x": None, "s": [1, 2], "t": [1]}
    assert data["checkers"]["b"]["anomalies"] == [
        {"kind": "lost", "ops": [3, 5], "key": "k", "message": "m"}]
    assert data["checkers"]["b"]["anomaly_counts"] == {"lost": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_crashing_checker_is_unknown_with_error() -> None:
    h = H()
    h.call(0, "read", out=5)  # a set read must return a list: the lost-writes checker raises
    res = check_history(h.ops, TestConfig(workload="set"), checkers=["lost-writes", "stats"])
    assert res["lost-writes"].valid is U
    assert "HistoryError" in (res["lost-writes"].error or "")
    assert res["stats"].valid is V
    assert res.valid is U


def make_run(tmp: Path, ops: list[Any], **config: Any) -> Path:
    d = tmp / "run"
    d.mkdir()
    write_history(d / "history.jsonl", ops)
    (d / "test.json").write_text(json.dumps({"n": 3, "w": 2, "r": 2, **config}))
    return d


def stale_history() -> list[Any]:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "write", 2)
    h.call(1, "read", out=[1], final=True)
    return h.ops


def test_check_run_writes_results(tmp_path: Path) -> None:
    d = make_run(tmp_path, stale_history())
    res = check_run(d)
    assert [c.checker for c in res.checks] == ["stats", "stale-reads", "convergence"]
    assert res.valid is X
    data = json.loads((d / "results.json").read_text())
    assert data["checkers"]["stale-reads"]["valid"] is False
    assert data["meta"]["ops"] == 6


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_run_dir_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_run(tmp_path, stale_history())
    code, out, _ = run_cli(["check", str(d)], capsys)
    assert code == 1
    assert "INVALID" in out and "stale-read" in out
    code, out, _ = run_cli(["check", "--checkers", "stats", "--json", str(d)], capsys)
    assert code == 0
    assert json.loads(out)["checkers"] == {"stats": True}


def test_cli_jepsen_files_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.edn"
    good.write_text("{:type :invoke :f :write :value 1 :process 0}\n"
                    "{:type :ok :f :write :value 1 :process 0}\n"
                    "{:type :invoke :f :cas :value [1 2] :process 1}\n"
                    "{:type :ok :f :cas :value [1 2] :process 1}\n")
    bad = tmp_path / "bad.log"
    bad.write_text("INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"
                   "INFO  jepsen.util - 0\t:ok\t:read\t3\n")
    code, out, _ = run_cli(["check", "--format", "jepsen", "--model", "cas-register", "--json",
                            str(good), str(bad)], capsys)
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 1
    assert [(x["file"], x["valid"], x["ops"]) for x in lines] == [
        (str(good), True, 4), (str(bad), False, 2)]
    assert all(isinstance(x["seconds"], float) for x in lines)
    code, _, _ = run_cli(["check", "--format", "jepsen", str(good)], capsys)
    assert code == 0


def test_cli_unreadable_input_is_unknown_without_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "h.jsonl"
    p.write_text('{"index": 0}\n')
    code, out, err = run_cli(["check", str(p)], capsys)
    assert code == 2
    assert f"{p}:1: malformed op" in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("args", [[], ["check"], ["check", "--format", "xml", "f"],
                                  ["check", "--checkers", "nope", "f"],
                                  ["check", "--time-limit", "-1", "f"], ["frobnicate"]])
def test_cli_bad_arguments_exit_254(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 254


def test_cli_missing_path_exits_254(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["check", str(tmp_path / "nope")], capsys)
    assert code == 254
    assert "no such file" in err


def test_cli_crash_exits_255(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from kvcheck.harness.cli import check

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(check, "check_run", boom)
    d = make_run(tmp_path, stale_history())
    code, _, err = run_cli(["check", str(d)], capsys)
    assert code == 255
    assert "internal error" in err


def test_run_with_linearizable_reads_lists_and_deletes(tmp_path: Path) -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "delete")
    h.call(1, "read", out=[])
    ok_run = make_run(tmp_path, h.ops, checkers=["linearizable"])
    assert check_run(ok_run, write=False).valid is V
    bad = h.call(1, "read", out=[1])
    (tmp_path / "run" / "history.jsonl").unlink()
    write_history(tmp_path / "run" / "history.jsonl", h.ops)
    res = check_run(ok_run, write=False)
    assert res.valid is X
    assert set(bad) <= set(res["linearizable"].anomalies[0].ops)


def test_set_run_with_final_state(tmp_path: Path) -> None:
    h = H("s")
    h.call(0, "add", 1)
    add2 = h.call(1, "add", 2)
    h.call(0, "read", out=[1], final=True, node="n1")
    d = make_run(tmp_path, h.ops, workload="set", nodes=["n1"])
    (d / "final-state.json").write_text(json.dumps({
        "format": "kvcheck-final-state", "version": 1,
        "samples": [{"time": 1, "nodes": {"n1": {"s": {"digest": "a"}},
                                           "n2": {"s": {"digest": "a"}}}}]}))
    res = check_run(d)
    assert [c.checker for c in res.checks] == ["stats", "lost-writes", "convergence"]
    assert res["convergence"].valid is V
    assert res["lost-writes"].valid is X
    assert set(add2) <= set(res["lost-writes"].anomalies_of("lost")[0].ops)
    (d / "final-state.json").write_text("{}")
    with pytest.raises(HistoryError, match=r"final-state\.json"):
        check_run(d)
