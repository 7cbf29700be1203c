"""Reading histories: kvcheck JSONL, EDN, Jepsen histories, test.json, final-state.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcheck.checkers import (
    HistoryError,
    Keyword,
    Op,
    Symbol,
    TestConfig,
    check_linearizable,
    pair_calls,
    read_final_state,
    read_history,
    read_jepsen_history,
    read_test_config,
    write_history,
)
from kvcheck.checkers.edn import EDNError, dumps, is_keyword_name, loads, loads_all, loads_some

# --- kvcheck JSONL ----------------------------------------------------------------------------


def line(**kw: object) -> str:
    base = {"index": 0, "time": 0, "process": 0, "type": "invoke", "f": "read", "key": "k",
            "value": None, "node": "n1"}
    base.update(kw)
    return json.dumps(base)


def test_round_trip_with_header_siblings_and_extra_fields(tmp_path: Path) -> None:
    ops = [
        Op(0, 5, 0, "invoke", "read", "k", None, "n1"),
        Op(1, 9, 0, "ok", "read", "k", (1, 2), "n1", None, {"final": True}),
        Op(2, 12, "nemesis", "info", "start", None, {"fault": "partition",
                                                     "targets": ("n1",)}),
    ]
    path = tmp_path / "history.jsonl"
    write_history(path, ops)
    assert path.read_text().splitlines()[0] == '{"format": "kvcheck-history", "version": 1}'
    back = read_history(path)
    assert back == ops
    assert back[1].final and back[1].value == (1, 2)
    (call,) = pair_calls(back)
    assert call.latency_ns == 4 and call.value_out == (1, 2)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    (line(type="done"), "type must be one of"),
    (line(process=-1), "process must be"),
    (line(time=1.5), "time must be"),
    (json.dumps({"index": 0}), "missing field"),
    (line(f=""), "f must be"),
])
def test_malformed_line_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(line() + "\n" + line(index=1, type="ok") + "\n\n" + text + "\n")
    with pytest.raises(HistoryError, match=message) as e:
        read_history(path)
    assert e.value.line == 4
    assert str(e.value).startswith(f"{path}:4: ")


def test_indexes_must_increase_and_header_version_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(line(index=3) + "\n" + line(index=3, type="ok") + "\n")
    with pytest.raises(HistoryError, match="indexes must increase"):
        read_history(path)
    path.write_text('{"format": "kvcheck-history", "version": 99}\n')
    with pytest.raises(HistoryError, match="version 99"):
        read_history(path)
    with pytest.raises(HistoryError, match="cannot read"):
        read_history(tmp_path / "missing.jsonl")


def test_pairing_rejects_orphans_and_double_invokes() -> None:
    inv = Op(0, 0, 1, "invoke", "read", "k")
    with pytest.raises(HistoryError, match="without an invocation"):
        pair_calls([Op(0, 0, 1, "ok", "read", "k")])
    with pytest.raises(HistoryError, match="still open"):
        pair_calls([inv, Op(1, 0, 1, "invoke", "read", "k")])
    with pytest.raises(HistoryError, match="does not match"):
        pair_calls([inv, Op(1, 0, 1, "ok", "write", "k")])
    (c,) = pair_calls([inv])
    assert c.type == "info" and c.ret_index is None


def test_test_config_fields_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "test.json"
    p.write_text(json.dumps({"n": 3, "w": 2, "r": 2, "workload": "set", "nodes": ["n1"],
                             "sloppy_quorum": False, "versioning": "lww", "other": 1}))
    cfg = read_test_config(p)
    assert cfg.strict_quorum and cfg.workload == "set" and cfg.raw["other"] == 1
    assert not TestConfig(n=3, w=1, r=2).strict_quorum
    assert not TestConfig(n=3, w=2, r=2, sloppy_quorum=True).strict_quorum
    assert cfg.expected == "no-stale-reads" and cfg.promises_latest_reads
    assert TestConfig(n=3, w=1, r=2).expected == "eventual-convergence"
    assert TestConfig().expected is None and not TestConfig().promises_latest_reads
    assert TestConfig(n=3, w=1, r=1, guarantee="linearizable").promises_latest_reads
    p.write_text(json.dumps({"n": 0}))
    with pytest.raises(HistoryError, match="n must be"):
        read_test_config(p)
    p.write_text(json.dumps({"versioning": "magic"}))
    with pytest.raises(HistoryError, match="versioning"):
        read_test_config(p)


def test_final_state_validation(tmp_path: Path) -> None:
    p = tmp_path / "final-state.json"
    good = {"format": "kvcheck-final-state", "version": 1,
            "samples": [{"time": 1, "nodes": {"n1": {"k": {"digest": "ab"}}, "n2": None}}]}
    p.write_text(json.dumps(good))
    assert read_final_state(p)["samples"][0]["nodes"]["n2"] is None
    good["samples"][0]["nodes"]["n1"]["k"] = {"value": 1}
    p.write_text(json.dumps(good))
    with pytest.raises(HistoryError, match="needs digest or versions"):
        read_final_state(p)


# --- EDN --------------------------------------------------------------------------------------


def test_edn_values() -> None:
    assert loads("nil") is None
    assert loads("[1 -2 3.5 nil true false]") == (1, -2, 3.5, None, True, False)
    assert loads("(1 2)") == (1, 2)
    assert loads('{:a "x\\ny" :b [1 [2]]}') == {Keyword("a"): "x\ny", Keyword("b"): (1, (2,))}
    assert loads("#{1 2}") == frozenset({1, 2})
    assert loads("foo/bar") == Symbol("foo/bar")
    assert loads(":jepsen.history/op") == Keyword("jepsen.history/op")
    assert loads("42N") == 42 and loads("1.5M") == 1.5 and loads("1/4") == 0.25
    assert loads("[\\a \\newline \\space]") == ("a", "\n", " ")
    assert loads('#inst "2020-01-01"') == "2020-01-01"
    assert loads("#jepsen.history.Op{:index 0}") == {Keyword("index"): 0}
    assert loads("[1 #_ 2 3]") == (1, 3)
    assert loads("[1, 2 ; comment\n 3]") == (1, 2, 3)
    assert loads("##Inf") == math.inf
    assert loads('"\\u00e9"') == "é"
    assert loads_all("1 2 #_3 4") == [1, 2, 4]


@pytest.mark.parametrize("text", ["[1 2", "{:a}", "{:a 1 :a 2}", '"abc', "#{1 1}", "1 2",
                                  "#?(:clj 1)", ")", "1x", '"\\q"', "#{[1 2] {:a 1}}"])
def test_edn_rejects_malformed(text: str) -> None:
    with pytest.raises(EDNError):
        loads(text)


def test_edn_error_position() -> None:
    with pytest.raises(EDNError) as e:
        loads("[1\n 2 )")
    assert (e.value.line, e.value.column) == (2, 4)


def test_edn_dumps_writes_what_clojure_prints() -> None:
    value = {Keyword("a"): (1, -2.5, None, True, 'q"b\\n\n\x01é'), "k": frozenset({10, 2, 1}),
             Keyword("s"): Symbol("foo/bar"), Keyword("inf"): -math.inf, Keyword("e"): ()}
    text = dumps(value)
    assert text == ('{:a [1 -2.5 nil true "q\\"b\\\\n\\n\\u0001é"], "k" #{1 2 10}, '
                    ':s foo/bar, :inf ##-Inf, :e []}')
    assert loads(text) == value
    assert dumps([1, frozenset({"b", 2})]) == '[1 #{"b" 2}]'  # by text: types differ
    with pytest.raises(TypeError, match="no EDN form"):
        dumps(b"bytes")


_KEYWORDS = st.builds(Keyword, st.from_regex(r"[a-z][a-z0-9.\-]*", fullmatch=True))
_EDN_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | _KEYWORDS,
    lambda inner: (st.lists(inner, max_size=4).map(tuple)
                   | st.dictionaries(st.integers() | st.text(max_size=4) | _KEYWORDS, inner,
                                     max_size=4)
                   | st.frozensets(st.integers() | st.text(max_size=4), max_size=4)),
    max_leaves=12)


@given(_EDN_VALUES)
def test_edn_reads_back_what_it_writes(value: object) -> None:
    assert loads(dumps(value)) == value


def test_edn_loads_some_reads_columns_and_leaves_the_rest() -> None:
    assert loads_some("1 :ok [2 3]\tconnection refused", 3) == (
        [1, Keyword("ok"), (2, 3)], "\tconnection refused")
    assert loads_some("1 #_ 2 nil", 3) == ([1, None], "")
    assert is_keyword_name("start-partition") and is_keyword_name("jepsen.history/op")
    assert not any(map(is_keyword_name, ["", "two words", "9lives", "a:"]))


# --- Jepsen histories -------------------------------------------------------------------------


def test_jepsen_edn_lines(tmp_path: Path) -> None:
    p = tmp_path / "history.edn"
    p.write_text(
        "{:type :invoke, :f :cas, :value [3 4], :process 0, :time 10, :index 0}\n"
        "{:type :info, :f :cas, :value [3 4], :process 0, :time 20, :index 1, "
        ":error [:timeout \"x\"]}\n"
        "{:type :info, :f :start, :value nil, :process :nemesis, :index 2}\n"
        "#jepsen.history.Op{:type :invoke, :f :read, :value nil, :process 1, :index 3}\n")
    ops = read_jepsen_history(p)
    assert [o.type for o in ops] == ["invoke", "info", "info", "invoke"]
    assert ops[0].value == (3, 4) and ops[0].time == 10 and ops[0].key is None
    assert ops[1].error == '[:timeout "x"]'
    assert ops[2].process == "nemesis"
    assert ops[3].value is None


def test_jepsen_independent_keys_are_split(tmp_path: Path) -> None:
    p = tmp_path / "h.edn"
    p.write_text(
        "{:type :invoke, :f :cas, :value [7 [1 2]], :process 0}\n"
        "{:type :ok, :f :cas, :value [7 [1 2]], :process 0}\n"
        "{:type :invoke, :f :read, :value [8 nil], :process 1}\n"
        "{:type :ok, :f :read, :value [8 nil], :process 1}\n")
    ops = read_jepsen_history(p)
    assert [(o.key, o.value) for o in ops] == [(7, (1, 2)), (7, (1, 2)), (8, None), (8, None)]
    assert [o.index for o in ops] == [0, 1, 2, 3]
    plain = read_jepsen_history(p, independent="no")
    assert plain[0].key is None and plain[0].value == (7, (1, 2))


def test_plain_cas_register_is_not_mistaken_for_independent(tmp_path: Path) -> None:
    p = tmp_path / "h.edn"
    p.write_text("{:type :invoke, :f :cas, :value [1 2], :process 0}\n"
                 "{:type :invoke, :f :read, :value nil, :process 1}\n")
    assert read_jepsen_history(p)[0].value == (1, 2)


def test_jepsen_log_lines(tmp_path: Path) -> None:
    p = tmp_path / "jepsen.log"
    p.write_text(
        "2017-03-01 12:00:00,000{GMT}\tINFO\t[main] jepsen.core: Running test\n"
        "INFO  jepsen.util - 3\t:invoke\t:cas\t[3 0]\n"
        "INFO  jepsen.util - 3\t:ok\t:cas\t[3 0]\n"
        "INFO  jepsen.util - 4\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 4\t:fail\t:read\tnil\tconnection refused\n"
        "INFO  jepsen.util - :nemesis\t:info\t:start\t{\"n1\" #{\"n2\"}}\n")
    ops = read_jepsen_history(p)
    assert [(o.process, o.type, o.f, o.value) for o in ops] == [
        (3, "invoke", "cas", (3, 0)), (3, "ok", "cas", (3, 0)), (4, "invoke", "read", None),
        (4, "fail", "read", None), ("nemesis", "info", "start", {"n1": frozenset({"n2"})})]
    assert ops[3].error == "connection refused"
    assert [o.index for o in ops] == [0, 1, 2, 3, 4]


def test_jepsen_vector_layout_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "h.edn"
    p.write_text("[{:type :invoke :f :write :value 1 :process 0}\n"
                 " {:type :ok :f :write :value 1 :process 0}]\n")
    assert len(read_jepsen_history(p)) == 2
    p.write_text("{:type :invoke :f :write :value 1 :process 0}\n"
                 "{:type :bogus :f :write :value 1 :process 0}\n")
    with pytest.raises(HistoryError, match="type must be") as e:
        read_jepsen_history(p)
    assert e.value.line == 2
    p.write_text("{:type :invoke :f :write :value 1 :process 0}\n{:type :ok ]\n")
    with pytest.raises(HistoryError, match="malformed EDN") as e:
        read_jepsen_history(p)
    assert e.value.line == 2
    p.write_text("just some log\n")
    with pytest.raises(HistoryError, match=r"no jepsen\.util op lines"):
        read_jepsen_history(p)
    p.write_text("{:type :invoke :f :write :value 1}\n")
    with pytest.raises(HistoryError, match=":process"):
        read_jepsen_history(p)


def test_jepsen_list_layout_with_comments_and_multiline_maps(tmp_path: Path) -> None:
    p = tmp_path / "h.edn"
    p.write_text(
        "; a history as Knossos keeps its examples\n"
        "({:type :invoke, :f :write, :value 0, :process 0}\n"
        " {:type :ok, :f :write, :value 0, :process 0}\n"
        " ; the register holds 0; a write of 4 and a read run concurrently\n"
        " {:type :invoke, :f :read, :value nil, :process 1}\n"
        " {:type :invoke, :f :write, :value 4, :process 2}\n"
        " {:process :nemesis,\n  :type :info,\n  :f :start,\n  :value\n"
        "  \"Cut off [:n3 #[:n4 :n5], :n2 #[:n1]]\"}\n"
        " {:type :ok, :f :read, :value 3, :process 1}\n"
        " {:type :ok, :f :write, :value 4, :process 2}\n"
        " {:type :invoke, :f :read, :value nil, :process 3}\n"
        " {:type :ok, :f :read, :value 4, :process 3})\n")
    ops = read_jepsen_history(p)
    assert len(ops) == 9
    assert ops[4].process == "nemesis" and ops[4].value.startswith("Cut off")
    res = check_linearizable(ops, "cas-register")
    assert not res.valid.to_json()
    # the read of 3 is named, not the innocent read after it
    assert res.anomalies[0].ops == (2, 5)
