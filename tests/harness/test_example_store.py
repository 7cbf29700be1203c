"""The example of a user's own store (``examples/primary_store``), as a user runs it: loaded by
``--db primary_store.adapter:PrimaryStore`` with ``examples/`` on the import path.

First the adapter's pure parts (its command lines, options, declarations and error mapping),
then ``kvcheck run`` in real containers: reads through the primary are linearizable under
partitions, kills and pauses; reads from a backup's copy are stale, and the stale-reads checker
says so. (Its processes on loopback, and the error mapping against them:
``databases/test_primary_store.py``.)
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from leftovers import leftovers
from primary_store.adapter import (
    SERVER,
    PrimaryStore,
    PrimaryStoreClient,
    completion_of,
)

from kvcheck.checkers import read_history
from kvcheck.harness.databases import Completion, Fail, Info, Ok, Operation, describe, load
from kvcheck.harness.spec import SpecError, TestSpec

DB = "primary_store.adapter:PrimaryStore"
EXAMPLES = Path(__file__).parents[2] / "examples"

# -- the adapter, without processes ---------------------------------------------------------------


class Nodes:
    """The cluster a database sees, without a backend: nodes n1..n3 at 10.0.0.1..3."""

    def __init__(self, **options: str) -> None:
        self.spec = TestSpec(db=DB, nodes=3, nemesis=(), db_options=tuple(options.items()))
        self.options = dict(self.spec.db_options)
        self.run_id = "unit"
        self.down: frozenset[str] = frozenset()

    @property
    def members(self) -> list[str]:
        return self.spec.node_ids

    def host(self, node: str) -> str:
        return f"10.0.0.{node.removeprefix('n')}"


def test_each_node_runs_the_server_with_its_address_and_the_primary_first() -> None:
    [process] = load(DB).processes("n2", Nodes())
    assert process.name == "primary-store" and process.faults
    assert process.argv == (
        "python3", SERVER, "--listen", "10.0.0.2:8000",
        "--nodes", "10.0.0.1:8000,10.0.0.2:8000,10.0.0.3:8000",
        "--data-dir", "/var/lib/primary-store", "--reads", "primary")
    [local] = load(DB).processes("n1", Nodes(reads="local"))
    assert local.argv[-2:] == ("--reads", "local")


def test_the_option_and_what_the_store_declares() -> None:
    database = load(DB)
    assert isinstance(database, PrimaryStore) and database.name == "primary-store"
    assert dict(TestSpec(db=DB, nemesis=()).db_options) == {"reads": "primary"}
    with pytest.raises(SpecError, match="reads must be one of primary, local, not 'stale'"):
        TestSpec(db=DB, db_options=(("reads", "stale"),))
    with pytest.raises(SpecError, match=r"takes no option read \(--db-opt; it takes: reads\)"):
        TestSpec(db=DB, db_options=(("read", "local"),))
    with pytest.raises(SpecError, match="registers only, not --workload set"):
        TestSpec(db=DB, workload="set")
    with pytest.raises(SpecError, match="--nemesis membership is not supported for --db "
                                        f"{DB}: its nodes are fixed"):
        TestSpec(db=DB, nemesis=("partition", "membership"))
    for reads in ("primary", "local"):  # what users rely on, whatever the configuration
        spec = TestSpec(db=DB, nemesis=("partition", "kill", "pause", "clock"),
                        partition_topologies=("isolate-primary",),
                        db_options=(("reads", reads),))
        assert spec.guarantee == "linearizable"
        assert spec.checkers == ("stats", "stale-reads", "linearizable")
        assert "cannot report what each replica stores" in spec.skipped_checkers["convergence"]
    assert "not membership: its nodes are fixed" in describe([DB])


def test_the_image_ships_the_server_and_the_server_needs_only_python() -> None:
    server = EXAMPLES / "primary_store" / "server.py"
    image = load(DB).image
    assert image.files == {SERVER: server.read_text()}
    assert image.packages == () and not image.kvcheck
    tree = ast.parse(server.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - {"__future__"} <= sys.stdlib_module_names


REQUEST = httpx.Request("PUT", "http://10.0.0.2:8000/kv/r1")
READ, WRITE = Operation("read", "r1"), Operation("write", "r1", 7)


def answer(status: int, text: str = "") -> httpx.Response:
    return httpx.Response(status, text=text, request=REQUEST)


@pytest.mark.parametrize(("op", "came_back", "completion"), [
    (READ, answer(200, "7"), Ok(7)),
    (READ, answer(200, "seven"), Ok("unexpected:seven")),
    (READ, answer(404), Ok(None)),
    (WRITE, answer(204), Ok(7)),
    # never sent: nothing happened
    (WRITE, httpx.ConnectError("refused", request=REQUEST), Fail("could not connect")),
    (WRITE, httpx.ConnectTimeout("", request=REQUEST), Fail("timed out connecting after 3 s")),
    (WRITE, answer(502, "primary unreachable: timed out"),
     Fail("the backup could not reach the primary")),
    # sent, no answer: a write may have happened, a read is forgotten
    (WRITE, answer(504, "primary did not answer: timed out"),
     Info("the primary did not answer the backup")),
    (READ, answer(504, "primary did not answer: timed out"),
     Fail("the primary did not answer the backup")),
    (WRITE, httpx.ReadTimeout("", request=REQUEST), Info("timed out after 3 s")),
    (READ, httpx.ReadTimeout("", request=REQUEST), Fail("timed out after 3 s")),
    (WRITE, httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                      request=REQUEST),
     Info("connection closed before the reply")),
    (WRITE, httpx.RemoteProtocolError("", request=REQUEST), Info("malformed reply")),
    (WRITE, httpx.ReadError("", request=REQUEST), Info("connection lost")),
    (WRITE, answer(500), Info("HTTP 500")),
])
def test_the_error_mapping(op: Operation, came_back: httpx.Response | httpx.HTTPError,
                           completion: Completion) -> None:
    assert completion_of(op, came_back) == completion


def test_an_operation_the_store_does_not_have_is_a_bug() -> None:
    async def main() -> None:
        client = PrimaryStoreClient("10.0.0.1")
        with pytest.raises(ValueError, match="primary-store has no operation 'cas'"):
            await client.invoke(Operation("cas", "r1", [1, 2]))
        await client.close()
        await client.close()

    trio.run(main)


# -- kvcheck run, in containers -------------------------------------------------------------------


def kvcheck_run(*args: str, histories: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvcheck", "run", "--db", DB, "--nodes", "3", "--rate", "50",
         "--recovery-time", "2", *args, "--histories", str(histories)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(EXAMPLES)})


@pytest.mark.integration
def test_reads_through_the_primary_are_linearizable_under_partitions_kills_and_pauses(
        tmp_path: Path) -> None:
    run = kvcheck_run("--time-limit", "15", "--nemesis", "partition,kill,pause",
                      "--nemesis-interval", "3", "--seed", "4", histories=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    run_dir = (tmp_path / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    checkers = results["checkers"]
    # convergence needs each replica's state, which this store cannot report: not run, and
    # the run says why
    assert set(checkers) == {"stats", "stale-reads", "linearizable"}
    assert all(c["valid"] is True for c in checkers.values())
    assert checkers["linearizable"]["figures"]["calls"] > 150
    assert "convergence: not run (" in run.stdout
    assert "convergence" in json.loads((run_dir / "test.json").read_text())["skipped_checkers"]
    history = read_history(run_dir / "history.jsonl")
    faults = {op.f for op in history if op.process == "nemesis" and op.f.startswith("start-")}
    assert len(faults) >= 2, faults  # the faults really overlapped the load
    assert any(op.type == "fail" and op.f == "write" for op in history)  # and were felt
    assert (run_dir / "nodes" / "n1" / "primary-store.log").read_text().startswith(
        "serving on ")
    assert leftovers(tmp_path) == []


@pytest.mark.integration
def test_local_reads_are_stale_and_the_stale_reads_checker_finds_them(tmp_path: Path) -> None:
    run = kvcheck_run("--db-opt", "reads=local", "--time-limit", "10", "--nemesis", "none",
                      "--seed", "1", histories=tmp_path)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    run_dir = (tmp_path / "latest").resolve()
    stale = json.loads((run_dir / "results.json").read_text())["checkers"]["stale-reads"]
    assert stale["valid"] is False and stale["figures"]["stale_reads"] > 0
    assert {a["kind"] for a in stale["anomalies"]} == {"stale-read"}
    # only backups serve stale reads: the primary holds the truth
    assert {a["details"]["node"] for a in stale["anomalies"]} <= {"n2", "n3"}
    assert "stale-reads: stale-read key=" in run.stdout
    assert leftovers(tmp_path) == []
