"""The reference store's adapter words its own errors: the node's quorum failures with their
counts, its refusals and answers that are not the store's, then real ``kvstore serve`` processes
on loopback that cannot gather a quorum. (Broken connections and timeouts:
``test_client_errors.py``.)"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from loopback import LoopbackCluster

from kvcheck.harness.databases import Fail, Info, Operation
from kvcheck.harness.databases.kvstore import failure
from kvcheck.store.client import RequestRejected, StoreError, TooManySiblings, Unavailable

MakeCluster = Callable[..., LoopbackCluster]


def test_the_nodes_own_errors_in_words_and_the_answer_in_the_detail() -> None:
    quorum = failure(Unavailable("write quorum unreachable: 1 of 2 acknowledgements", "unknown",
                                 503), timeout=10)
    assert quorum == Info("write quorum unreachable: 1 of 2 acknowledgements")
    assert quorum.detail == ("Unavailable: write quorum unreachable: 1 of 2 acknowledgements "
                             "(HTTP 503, applied: unknown)")
    assert failure(Unavailable("read timed out: 1 of 2 replies", "no", 503), timeout=10) \
        == Fail("read timed out: 1 of 2 replies")
    rejected = failure(RequestRejected("400: bad x-kv-context header: not base64", "no", 400),
                       timeout=10)
    assert rejected == Fail("rejected by the node (HTTP 400)")
    assert "not base64" in (rejected.detail or "")
    assert failure(TooManySiblings("409: too many siblings: the key has 100", "no", 409),
                   timeout=10) == Fail("too many siblings (HTTP 409)")
    assert failure(StoreError("500: boom", "unknown", 500), timeout=10) \
        == Info("node error (HTTP 500)")
    assert failure(StoreError("malformed siblings from node: no boundary", "no", 300),
                   timeout=10) == Fail("malformed reply")


@pytest.mark.integration
def test_a_node_cut_off_from_its_replicas_says_how_many_answered(
        loopback: MakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """N=3, W=2, R=2 with two of three nodes killed: the write is indeterminate, the read
    fails, and each says how many replicas answered of the two it needed."""
    bin_dir = Path(sys.executable).parent  # where ``kvstore`` is installed
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cluster = loopback("kvstore", 3)
    cluster.start()
    trio.run(cluster.wait_ready)
    cluster.kill("n2")
    cluster.kill("n3")

    async def main() -> None:
        client = cluster.database.client("n1", cluster)
        try:
            write = await client.invoke(Operation("write", "r1", 1))
            read = await client.invoke(Operation("read", "r1"))
        finally:
            await client.close()
        assert isinstance(write, Info), write
        assert re.fullmatch(r"write (quorum unreachable|timed out): 1 of 2 acknowledgements",
                            write.error), write
        assert isinstance(read, Fail), read
        assert re.fullmatch(r"read (quorum unreachable|timed out): 1 of 2 replies",
                            read.error), read
        assert "HTTP 503" in (write.detail or "") and "HTTP 503" in (read.detail or "")

    trio.run(main)
