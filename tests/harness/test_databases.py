"""The database contract at its seams: loading adapters, their options, the faults they refuse,
the checkers they cannot serve, and ``--db help``. Nothing here starts a node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvcheck.checkers import TestConfig
from kvcheck.harness.databases import BUILTIN, DatabaseError, describe, load, resolve_options
from kvcheck.harness.databases.kvstore import KvStore
from kvcheck.harness.spec import SpecError, TestSpec

HERE = Path(__file__).parent
PLAIN = "sample_databases:Plain"


def test_the_reference_store_is_the_default_and_a_builtin() -> None:
    spec = TestSpec()
    assert spec.db == "kvstore" and isinstance(spec.database, KvStore)
    assert load("kvstore") is load("kvstore")  # one instance per name
    assert "kvstore" in BUILTIN


def test_a_users_database_loads_by_module_and_factory() -> None:
    spec = TestSpec(db=PLAIN, nodes=3)
    assert spec.database.name == "plain"
    assert dict(spec.db_options) == {"reads": "linearizable", "label": "x"}  # defaults filled


@pytest.mark.parametrize(("name", "message"), [
    ("cassandra", "unknown database 'cassandra': the built-in ones are kvstore"),
    ("no_such_module:Db", "cannot import no_such_module for --db no_such_module:Db"),
    ("sample_databases:Missing", "sample_databases has no callable Missing"),
    ("sample_databases:raising", r"sample_databases:raising\(\) raised RuntimeError: the "
     "factory is broken"),
    ("sample_databases:not_a_database", "returned dict, not a Database"),
    ("sample_databases:Nameless", "returned Nameless, not a Database with a name"),
])
def test_a_database_that_cannot_be_loaded_is_a_clear_refusal(name: str, message: str) -> None:
    with pytest.raises(DatabaseError, match=message):
        load(name)
    with pytest.raises(SpecError, match=message):
        TestSpec(db=name)


def test_options_are_checked_and_completed() -> None:
    plain = load(PLAIN)
    assert resolve_options(plain, {"reads": "serializable"}) == {"reads": "serializable",
                                                                  "label": "x"}
    with pytest.raises(DatabaseError, match=r"plain takes no option colour \(--db-opt; it takes: "
                       r"reads, label\)"):
        resolve_options(plain, {"colour": "red"})
    with pytest.raises(DatabaseError, match="reads must be one of linearizable, serializable"):
        resolve_options(plain, {"reads": "stale"})
    with pytest.raises(SpecError, match=r"kvstore takes no option reads \(--db-opt; it "
                       r"takes: none\)"):
        TestSpec(db_options=(("reads", "x"),))


def test_a_fault_the_database_cannot_undergo_is_refused_before_anything_starts() -> None:
    with pytest.raises(SpecError, match="--nemesis clock is not supported for --db "
                       f"{PLAIN}: its clock cannot be moved"):
        TestSpec(db=PLAIN, nemesis=("partition", "clock"))
    TestSpec(db=PLAIN, nemesis=("partition", "kill", "pause"))


def test_the_reference_stores_own_settings_are_checked_by_it_alone() -> None:
    with pytest.raises(SpecError, match="--n must be from 1 to the number of nodes"):
        TestSpec(nodes=2, n=3)
    TestSpec(db=PLAIN, nodes=2)  # N/W/R mean nothing to another database


def test_checkers_a_database_cannot_serve_are_skipped_with_the_reason() -> None:
    spec = TestSpec(db=PLAIN, workload="register")
    assert spec.guarantee == "linearizable"  # the contract's default for registers
    assert "convergence" not in spec.checkers
    assert set(spec.checkers) >= {"stats", "stale-reads", "linearizable"}
    assert spec.skipped_checkers == {
        "convergence": f"{PLAIN} cannot report what each replica stores, which the "
                       "convergence checker needs"}
    assert TestSpec(db=PLAIN, workload="set").guarantee == "no-lost-writes"
    assert TestSpec().skipped_checkers == {}


def test_test_json_names_the_database_and_only_its_own_settings() -> None:
    data = TestSpec(db=PLAIN, db_options=(("reads", "serializable"),)).to_json()
    assert (data["db"], data["db_options"]) == (PLAIN, {"reads": "serializable", "label": "x"})
    assert not {"n", "w", "r", "sloppy_quorum", "versioning"} & set(data)
    assert "convergence" in data["skipped_checkers"]
    config = TestConfig.from_json(data)
    assert (config.n, config.expected) == (None, "linearizable")
    store = TestSpec().to_json()
    assert (store["n"], store["w"], store["r"], store["db_options"]) == (3, 2, 2, {})


def test_db_help_lists_each_database_with_its_options_and_faults() -> None:
    text = describe(["kvstore", PLAIN])
    assert "kvstore: kvcheck's reference Dynamo-style store" in text
    assert "--db-opt reads=VALUE (linearizable | serializable): how reads are served " \
           "(default: linearizable)" in text
    assert "faults: partition, kill, pause, packet, zone\n  not clock: its clock cannot be moved" \
        in text
    assert "can also: report what each replica stores, add and remove members" in text
    shown = subprocess.run([sys.executable, "-m", "kvcheck", "run", "--db", "help"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert all(f"{name}: " in shown.stdout for name in BUILTIN)


def test_the_command_line_refuses_a_bad_database_with_exit_254(tmp_path: Path) -> None:
    env_path = {"PYTHONPATH": str(HERE)}
    for argv, message in [
        (["--db", "cassandra"], "unknown database 'cassandra'"),
        (["--db", PLAIN, "--nemesis", "clock"], "--nemesis clock is not supported"),
        (["--db", PLAIN, "--db-opt", "colour=red"], "plain takes no option colour"),
        (["--db-opt", "novalue"], "expected KEY=VALUE, not 'novalue'"),
    ]:
        run = subprocess.run([sys.executable, "-m", "kvcheck", "run", *argv, "--histories",
                              str(tmp_path)], capture_output=True, text=True, timeout=60,
                             env={**os.environ, **env_path})
        assert run.returncode == 254, (argv, run.stderr)
        assert message in run.stderr, (argv, run.stderr)


def test_partition_topologies_are_checked_against_the_database_and_the_nemesis() -> None:
    with pytest.raises(SpecError, match="isolate-primary topology needs a database that names "
                       "its primary, which this one cannot"):
        TestSpec(partition_topologies=("isolate-primary",))
    with pytest.raises(SpecError, match="needs the partition nemesis"):
        TestSpec(db="etcd", nemesis=("kill",), partition_topologies=("halves",))
    spec = TestSpec(db="etcd", partition_topologies=("isolate-primary",))
    assert spec.to_json()["partition_topologies"] == ["isolate-primary"]
