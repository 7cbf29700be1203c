"""Exporting kvcheck histories as Jepsen EDN: the mapping, ``kvcheck export``, and the round
trip back through the Jepsen reader, which must reach the same linearizability verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from checker_builders import H
from hypothesis import HealthCheck, given, settings
from lin_strategies import register_histories

from kvcheck.checkers import Op, check_linearizable, read_jepsen_history, write_history
from kvcheck.checkers.edn import Keyword, loads
from kvcheck.checkers.jepsen_export import jepsen_lines
from kvcheck.harness.cli import main


def export(ops: list[Op], workload: str = "register") -> list[str]:
    return [line.rstrip("\n") for line in jepsen_lines(ops, workload)]


# --- the mapping -----------------------------------------------------------------------------


def test_register_ops_become_independent_jepsen_ops() -> None:
    h = H("k3")
    h.invoke(0, "write", 17, node="n1")
    h.ok(0, "write", 17, node="n1")
    h.call(1, "read", out=[17, 12])
    h.call(1, "read", out=[17])
    h.call(1, "read", out=[])
    h.call(0, "cas", (17, 18))
    h.call(0, "delete")
    h.nemesis("start-partition", {"fault": "partition", "targets": ["n1"]})
    h.call(2, "read", out=[18], final=True)
    ops = [*h.ops, Op(len(h.ops), 99, 3, "info", "write", "k3", 5, None, "timeout")]
    lines = export(ops)
    assert lines[0] == ('{:index 0, :time 0, :type :invoke, :process 0, :f :write, '
                        ':value ["k3" 17], :node "n1"}')
    values = [loads(line)[Keyword("value")] for line in lines]
    assert values[1:14] == [
        ("k3", 17), ("k3", None), ("k3", frozenset({12, 17})), ("k3", None), ("k3", 17),
        ("k3", None), ("k3", None), ("k3", (17, 18)), ("k3", (17, 18)), ("k3", None),
        ("k3", None), {Keyword("fault"): "partition", Keyword("targets"): ("n1",)},
        ("k3", None)]
    assert lines[3].endswith(':type :ok, :process 1, :f :read, :value ["k3" #{12 17}]}')
    assert ":f :write, :value [\"k3\" nil]" in lines[11]  # the delete
    assert lines[12] == ('{:index 12, :time 12000000, :type :info, :process :nemesis, '
                         ':f :start-partition, :value {:fault "partition", :targets ["n1"]}}')
    assert lines[14].endswith(':value ["k3" 18], :final true}')
    assert lines[15] == ('{:index 15, :time 99, :type :info, :process 3, :f :write, '
                         ':value ["k3" 5], :error "timeout"}')


def test_set_reads_are_sets_unless_an_element_repeats() -> None:
    h = H(7)
    h.call(0, "add", 1)
    h.call(1, "read", out=[3, 1, 2])
    h.call(1, "read", out=[1, 1])
    h.call(1, "read", out=[])
    values = [loads(line)[Keyword("value")] for line in export(h.ops, "set")]
    assert values == [(7, 1), (7, 1), (7, None), (7, frozenset({1, 2, 3})), (7, None),
                      (7, (1, 1)), (7, None), (7, frozenset())]


def test_ops_without_keys_keep_plain_values() -> None:
    h = H(key=None)
    h.call(0, "write", 1)
    h.call(0, "cas", (1, 2))
    assert [loads(line)[Keyword("value")] for line in export(h.ops)] == [1, 1, (1, 2), (1, 2)]


def test_unknown_workload_is_refused() -> None:
    with pytest.raises(ValueError, match="workload"):
        jepsen_lines([], "counter")


# --- round trip: export, read back, same verdict ---------------------------------------------


def verdicts(ops: list[Op], tmp: Path, model: str = "cas-register") -> tuple[Any, Any]:
    """The verdict on ``ops`` as kvcheck runs judge them, and on their Jepsen export."""
    original = check_linearizable(ops, model, sibling_reads=True).valid
    path = tmp / "history.edn"
    path.write_text("".join(jepsen_lines(ops)))
    back = read_jepsen_history(path)
    assert [(o.index, o.process, o.type, o.key) for o in back] == [
        (o.index, o.process, o.type, o.key) for o in ops]
    return original, check_linearizable(back, model).valid


def _stale() -> list[Op]:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "write", 2)
    h.call(1, "read", out=[1])
    return h.ops


def _siblings() -> list[Op]:
    h = H()
    h.call(0, "write", 1)
    h.call(1, "write", 2)
    h.call(2, "read", out=[1, 2])
    return h.ops


def _deleted_then_read() -> list[Op]:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "delete")
    h.call(1, "read", out=[])
    return h.ops


def _concurrent_and_indeterminate() -> list[Op]:
    h = H("a")
    h.invoke(0, "write", 1)
    h.invoke(1, "read")
    h.ok(1, "read", [1])
    h.info(0, "write", 1)
    h.call(2, "cas", (1, 3), key="b", type_="fail")
    h.call(3, "read", out=[], key="b")
    return h.ops


@pytest.mark.parametrize(("history", "valid"), [
    (_stale, False), (_siblings, False), (_deleted_then_read, True),
    (_concurrent_and_indeterminate, True)])
def test_round_trip_keeps_the_verdict(history: Any, valid: bool, tmp_path: Path) -> None:
    original, exported = verdicts(history(), tmp_path)
    assert original.to_json() is valid
    assert exported == original


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(register_histories(cas=True, unique=False, siblings=True, keys=("a", "b")))
def test_round_trip_keeps_the_verdict_of_generated_histories(
        tmp_path_factory: pytest.TempPathFactory, ops: list[Op]) -> None:
    original, exported = verdicts(ops, tmp_path_factory.mktemp("rt"))
    assert exported == original


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(register_histories(siblings=True, max_calls=10))
def test_round_trip_keeps_the_verdict_of_unique_value_histories(
        tmp_path_factory: pytest.TempPathFactory, ops: list[Op]) -> None:
    original, exported = verdicts(ops, tmp_path_factory.mktemp("rt"), "register")
    assert exported == original


# --- kvcheck export ---------------------------------------------------------------------------


def make_run(d: Path, ops: list[Op], **config: Any) -> Path:
    d.mkdir()
    write_history(d / "history.jsonl", ops)
    (d / "test.json").write_text(json.dumps({"checkers": ["linearizable"], **config}))
    return d


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("history", "code"), [(_stale, 1), (_deleted_then_read, 0)])
def test_export_then_check_gives_the_runs_verdict(
        history: Any, code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run", history())
    assert cli(capsys, "check", "--no-write", str(run))[0] == code
    exit_code, out, err = cli(capsys, "export", "--format", "jepsen", str(run))
    assert (exit_code, err) == (0, "")
    edn = tmp_path / "history.edn"
    edn.write_text(out)
    assert out.count("\n") == len(history())
    assert cli(capsys, "check", str(edn))[0] == code  # told to be Jepsen's by its content
    written = tmp_path / "out.edn"
    exit_code, out, _ = cli(capsys, "export", "-o", str(written), str(run / "history.jsonl"))
    assert exit_code == 0 and f"to {written}" in out
    assert written.read_text() == edn.read_text()


def test_export_reads_the_workload_of_the_run(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    h = H("s")
    h.call(0, "read", out=[2])
    run = make_run(tmp_path / "run", h.ops, workload="set")
    _, out, _ = cli(capsys, "export", str(run))
    assert out.splitlines()[1].endswith(':value ["s" #{2}]}')


def test_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "export", str(tmp_path / "nope"))
    assert code == 254 and "no such file" in err
    binary = make_run(tmp_path / "run", [])
    (binary / "history.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    code, out, err = cli(capsys, "export", str(binary))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "not UTF-8" in err and "Traceback" not in err
    (binary / "history.jsonl").write_text("")
    code, _, err = cli(capsys, "export", str(binary))
    assert code == 2 and "no ops to export" in err
    write_history(binary / "history.jsonl", _stale())
    code, _, err = cli(capsys, "export", "-o", str(tmp_path / "no" / "dir.edn"), str(binary))
    assert code == 254 and "cannot write" in err


def test_export_help_says_what_it_writes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("RUN_DIR", "-o FILE", "--format {jepsen}", "one op map per line",
                   "jepsen.independent [key value]", "Knossos"):
        assert phrase in text
