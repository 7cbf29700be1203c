"""Reading Jepsen's histories wherever Jepsen leaves them: text logs with any whitespace between
columns, store directories, and inputs that are not histories at all (one-line errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcheck.checkers import HistoryError, read_jepsen_history
from kvcheck.checkers.edn import Keyword
from kvcheck.checkers.jepsen import _parse_edn_columns, _parse_log_line
from kvcheck.checkers.jepsen_store import jepsen_histories
from kvcheck.harness.cli import main

# --- text: history.txt and jepsen.log ----------------------------------------------------------

COLUMNS = [
    ("0", ":invoke", ":read", "nil", ""),
    ("0", ":ok", ":read", "[3 {:from 8, :to 2}]", ""),
    ("1", ":invoke", ":cas", "[3 [0 1]]", ""),
    ("1", ":fail", ":cas", "[3 [0 1]]", ":conn-closed"),
    (":nemesis", ":info", ":start", '"Cut off [:n3 #{:n4}]"', ""),
    ("2", ":invoke", ":write", "[7 4]", ""),
    ("2", ":info", ":write", "[7 4]", "indeterminate: timed out"),
]
PREFIXES = {
    "history.txt": "",
    "jepsen 0.1": "INFO  jepsen.util - ",
    "jepsen 0.3": "2025-01-20 12:08:03,850{GMT}\tINFO\t[jepsen worker 0] jepsen.util: ",
}


@pytest.mark.parametrize("sep", ["\t", " ", "    ", " \t  ", "\t\t"],
                         ids=["tab", "space", "spaces", "mixed", "tabs"])
@pytest.mark.parametrize("prefix", list(PREFIXES), ids=list(PREFIXES))
def test_text_columns_may_be_separated_by_any_whitespace(tmp_path: Path, sep: str,
                                                         prefix: str) -> None:
    p = tmp_path / "history.txt"
    p.write_text("2025-01-20 12:08:03,839{GMT}\tINFO\t[jepsen test runner] jepsen.core: "
                 "Relative time begins now\n"
                 + "".join(PREFIXES[prefix] + sep.join(c for c in cols if c) + "\n"
                           for cols in COLUMNS))
    ops = read_jepsen_history(p, independent="no")
    assert [(o.process, o.type, o.f, o.error) for o in ops] == [
        (0, "invoke", "read", None), (0, "ok", "read", None), (1, "invoke", "cas", None),
        (1, "fail", "cas", ":conn-closed"), ("nemesis", "info", "start", None),
        (2, "invoke", "write", None), (2, "info", "write", "indeterminate: timed out")]
    assert ops[1].value == (3, {Keyword("from"): 8, Keyword("to"): 2})
    assert ops[4].value == "Cut off [:n3 #{:n4}]"
    assert [o.index for o in ops] == list(range(7))


def test_text_lines_that_are_not_ops_are_skipped_and_malformed_ops_are_named(
        tmp_path: Path) -> None:
    p = tmp_path / "jepsen.log"
    p.write_text("INFO  jepsen.util - Waiting for nodes\n"
                 "INFO  jepsen.util - 0  :invoke  :write  [1 2]\n"
                 "INFO  jepsen.util - 0  :ok      :write  [1 2]\n")
    assert [(o.key, o.value) for o in read_jepsen_history(p)] == [(1, 2), (1, 2)]
    p.write_text("0 :invoke :write [1 2]\n0 :ok :write [1 2\n")
    with pytest.raises(HistoryError, match=r"malformed jepsen\.util line") as e:
        read_jepsen_history(p)
    assert e.value.line == 2


SEPARATOR = st.sampled_from([" ", "\t", "  ", " \t ", ", ", ","])
ATOM = st.one_of(st.just("nil"), st.integers(-10**12, 10**12).map(str))
COLUMN = st.one_of(
    ATOM, st.tuples(ATOM, ATOM).map(lambda pair: f"[{pair[0]} {pair[1]}]"),
    st.sampled_from([":timed-out", '"a string"', "[1 [2 3]]", "{:a 1}", "#{1}", "1.5", "-0",
                     ":ns/kw", "007", "[nil]", "[1 2 3]"]))


@given(process=st.one_of(st.integers(0, 10**6).map(str), st.just(":nemesis")),
       kind=st.sampled_from([":invoke", ":ok", ":fail", ":info"]),
       f=st.sampled_from([":read", ":write", ":cas", ":add", ":start", ":a.b-c?", ":ns/op"]),
       value=st.one_of(st.none(), COLUMN), error=st.sampled_from(["", ":timed-out", "oops"]),
       separators=st.lists(SEPARATOR, min_size=5, max_size=5))
def test_a_plain_line_reads_as_the_edn_reader_reads_it(
        process: str, kind: str, f: str, value: str | None, error: str,
        separators: list[str]) -> None:
    """The fast path for the common shape of line gives the op the EDN reader gives."""
    columns = [process, kind, f] + ([value] if value is not None else []) \
        + ([error] if error and value is not None else [])
    line = separators[0] + "".join(c + sep for c, sep in zip(columns, separators[1:],
                                                             strict=False)).rstrip()
    try:
        expected = _parse_edn_columns(line, 7)
    except ValueError as e:  # EDNError too: the fast path must refuse the same way
        with pytest.raises(type(e)):
            _parse_log_line(line, 7)
        return
    assert _parse_log_line(line, 7) == expected


# --- Jepsen's store ----------------------------------------------------------------------------

REGISTER_OK = ("{:index 0, :time 5, :type :invoke, :process 0, :f :write, :value 1}\n"
               "{:index 1, :time 9, :type :ok, :process 0, :f :write, :value 1}\n"
               "{:index 2, :time 11, :type :invoke, :process 1, :f :read, :value nil}\n"
               "{:index 3, :time 14, :type :ok, :process 1, :f :read, :value 1}\n")
STALE_TXT = "0\t:invoke\t:write\t1\n0\t:ok\t:write\t1\n1\t:invoke\t:read\tnil\n1\t:ok\t:read\t0\n"


def make_store(root: Path) -> Path:
    """store/ with two tests: register (two runs, one with history.txt only) and crashy (a run
    that died leaving jepsen.log, and one that left no history at all)."""
    store = root / "store"
    reg = store / "register"
    (reg / "20240101T000000.000Z").mkdir(parents=True)
    (reg / "20240101T000000.000Z" / "history.edn").write_text(REGISTER_OK)
    (reg / "20240101T000000.000Z" / "history.txt").write_text(STALE_TXT)  # not read: .edn wins
    (reg / "20240101T000000.000Z" / "test.fressian").write_bytes(b"\xca\xfe\x00\x01")
    (reg / "20240102T000000.000Z").mkdir()
    (reg / "20240102T000000.000Z" / "history.txt").write_text(STALE_TXT)
    (reg / "latest").symlink_to("20240102T000000.000Z")
    crashy = store / "crashy"
    (crashy / "20240103T000000.000Z" / "n1").mkdir(parents=True)
    (crashy / "20240103T000000.000Z" / "jepsen.log").write_text(
        "INFO [2024-01-03] jepsen.util - 0\t:invoke\t:read\tnil\n")
    (crashy / "20240104T000000.000Z").mkdir()
    (crashy / "20240104T000000.000Z" / "test.jepsen").write_bytes(b"\x00JEPSEN")
    (store / "latest").symlink_to("register/20240102T000000.000Z")
    (store / "current").symlink_to("crashy/20240104T000000.000Z")
    return store


def test_store_paths_stand_for_their_runs(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    reg = store / "register"
    assert jepsen_histories(store) == [
        store / "crashy/20240103T000000.000Z/jepsen.log",
        reg / "20240101T000000.000Z/history.edn", reg / "20240102T000000.000Z/history.txt"]
    assert jepsen_histories(reg) == [reg / "20240101T000000.000Z/history.edn",
                                     reg / "20240102T000000.000Z/history.txt"]
    assert jepsen_histories(store / "latest") == [store / "latest/history.txt"]
    assert jepsen_histories(reg / "latest" / "history.txt") == [
        reg / "latest" / "history.txt"]
    assert len(read_jepsen_history(reg / "20240101T000000.000Z")) == 4
    with pytest.raises(HistoryError, match="not a Jepsen run directory"):
        read_jepsen_history(store / "current")
    with pytest.raises(HistoryError, match="no Jepsen history"):
        jepsen_histories(store / "crashy/20240103T000000.000Z/n1")


def test_check_reads_a_whole_store_without_being_told(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path)
    assert main(["check", "--json", str(store)]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(Path(x["file"]).relative_to(store).as_posix(), x["valid"], x["ops"])
            for x in lines] == [
        ("crashy/20240103T000000.000Z/jepsen.log", "unknown", 1),  # a read never answered
        ("register/20240101T000000.000Z/history.edn", True, 4),
        ("register/20240102T000000.000Z/history.txt", False, 4)]
    assert main(["check", "--format", "jepsen", str(store / "register" / "latest")]) == 1
    assert main(["check", str(store / "register" / "20240101T000000.000Z")]) == 0


# --- inputs that are not histories: one line, no traceback --------------------------------------

def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


BINARY = {"png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
          "latin-1": "{:f :café}\n".encode("latin-1"),
          "nul": b"{:type :invoke}\x00\x00\x01\x02",
          "gzip": b"\x1f\x8b\x08\x00\x00\x00\x00\x00"}


@pytest.mark.parametrize("fmt", ["auto", "kvcheck", "jepsen"])
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_input_is_unknown_with_one_line(tmp_path: Path, fmt: str, name: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "history.edn"
    p.write_bytes(BINARY[name])
    assert main(["check", "--format", fmt, str(p)]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"unknown {p} (0 ops")
    message = one_line_error(err)
    assert str(p) in message and ("not UTF-8" in message or "binary" in message)


def test_binary_file_in_a_kvcheck_run_is_named(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "test.json").write_text("{}")
    (run / "history.jsonl").write_bytes(b'{"format": "kvcheck-history", "version": 1}\n'
                                        + b"\xff" * 10)
    assert main(["check", str(run)]) == 2
    assert f"{run / 'history.jsonl'}:2: not UTF-8" in one_line_error(capsys.readouterr().err)
    (run / "history.jsonl").write_bytes(b'{"format": "kvcheck-history", "version": 1}\n'
                                        + b" " * 70_000 + b"\xff\n")  # past what is sniffed
    assert main(["check", str(run)]) == 2
    assert "not UTF-8" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(("content", "message"), [
    ("", "empty file"), ("  \n\n", "empty file"),
    ("{:type :invoke, :f :read, :process 0}\n{:type :ok, :f :re", "cut short"),
    ("[{:type :invoke, :f :read, :process 0}", "cut short"),
    ("#{1 2}\n", "expected an op map"),
    ("just words\n", "no jepsen.util op lines")])
def test_not_a_history_is_unknown_with_one_line(tmp_path: Path, content: str, message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "h.edn"
    p.write_text(content)
    assert main(["check", str(p)]) == 2
    assert message in one_line_error(capsys.readouterr().err)


def test_a_directory_with_nothing_recognisable(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    assert main(["check", str(tmp_path)]) == 2
    assert "neither a kvcheck run" in one_line_error(capsys.readouterr().err)
    assert main(["check", "--format", "jepsen", str(tmp_path)]) == 2
    assert "no Jepsen history" in one_line_error(capsys.readouterr().err)
    assert main(["check", str(tmp_path / "missing")]) == 254
    assert "no such file or directory" in one_line_error(capsys.readouterr().err)


def test_binary_input_through_the_installed_command(tmp_path: Path) -> None:
    p = tmp_path / "test.fressian"
    p.write_bytes(BINARY["gzip"])
    result = subprocess.run([sys.executable, "-m", "kvcheck", "check", str(p)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "not UTF-8" in one_line_error(result.stderr)
