"""The simulator's disk as a real device and the server treat it: a power loss keeps what was
synced and a prefix of the rest; a failed sync loses what it should have made durable; writes
are acknowledged only once synced (group commit), unless the ``ack-before-fsync`` bug is on; a
failed sync stops the node's writes until it restarts (fail-stop for writes), in every fsync
mode; a hint the log cannot record is refused."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcheck.nemesis import DISK_ERRORS
from kvcheck.store.config import ClusterConfig
from kvcheck.store.node import Failed, Found, Written
from kvcheck.store.sim import Simulation
from kvcheck.store.sim_disk import DISK_ERRORS as SIM_DISK_ERRORS
from kvcheck.store.sim_disk import SimDisk, SimHints
from kvcheck.store.storage import LsmStorage, StorageError, faults
from kvcheck.store.versions import Dot, Version

NODES = ["n1", "n2", "n3"]


def version(value: int) -> tuple[Version, ...]:
    return (Version(Dot(f"a{value}", 1), {}, str(value).encode(), value),)


def stored(disk: SimDisk) -> dict[bytes, tuple[Version, ...]]:
    return {key: tuple(versions) for key, versions in disk.scan()}


# A disk's life: ("put", key, value) or ("sync",).
steps = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from([b"a", b"b", b"c"]), st.integers(0, 99)),
    st.just(("sync",))), max_size=30)


@given(steps, st.integers(0, 2**32))
def test_a_power_loss_keeps_every_synced_write_and_a_prefix_of_the_others(
        life: list[tuple[object, ...]], seed: int) -> None:
    disk = SimDisk(lambda: 0.0)
    states = [stored(disk)]  # the state after each put since the last sync
    for step in life:
        if step[0] == "put":
            disk.put(step[1], version(step[2]))  # type: ignore[arg-type]
            states.append(stored(disk))
        else:
            disk.sync()
            states = [stored(disk)]
    disk.lose_power(random.Random(seed))
    assert stored(disk) in states
    assert not disk.unsynced


def test_the_kernel_writes_back_what_waited_long_enough_before_the_power_went() -> None:
    now = [0.0]
    for seed in range(20):
        now[0] = 0.0
        disk = SimDisk(lambda: now[0])
        disk.put(b"old", version(1))
        now[0] = 31.0
        disk.put(b"new", version(2))
        disk.lose_power(random.Random(seed))
        assert b"old" in stored(disk)


def test_a_failed_sync_loses_what_it_should_have_made_durable_and_stops_writes_until_restart(
        ) -> None:
    disk = SimDisk(lambda: 0.0)
    hints = SimHints(disk)
    disk.put(b"k", version(1))
    disk.sync()
    disk.put(b"k", version(2))
    disk.error = "fsync"
    with pytest.raises(StorageError, match="sync failed"):
        disk.sync()
    assert disk.get(b"k") == list(version(2))  # still readable, from the page cache
    disk.error = None
    for refused in (disk.sync, lambda: disk.put(b"k", version(3)), hints.sync,
                    lambda: hints.add("n2", b"k")):
        with pytest.raises(StorageError, match="refused until the node restarts"):
            refused()
    assert disk.stats()["fail_stopped"] == "commit log sync failed: [Errno 5] Input/output error"
    disk.restart()
    disk.sync()  # succeeds, and writes nothing: the pages were marked clean
    disk.lose_power(random.Random(0))
    assert disk.get(b"k") == list(version(1))


def test_a_failing_disk_refuses_writes_or_reads_and_changes_nothing() -> None:
    disk = SimDisk(lambda: 0.0)
    disk.put(b"k", version(1))
    disk.error = "write"
    with pytest.raises(StorageError, match="No space left"):
        disk.put(b"k", version(2))
    disk.error = "read"
    with pytest.raises(StorageError, match="Input/output error"):
        disk.get(b"k")
    disk.error = None
    assert disk.get(b"k") == list(version(1))


def test_the_nemesis_and_the_simulated_disk_know_the_same_errors() -> None:
    assert tuple(DISK_ERRORS) == tuple(SIM_DISK_ERRORS)


def test_a_hint_the_log_cannot_record_is_refused_and_a_delivery_it_cannot_is_counted(
        ) -> None:
    disk = SimDisk(lambda: 0.0)
    hints = SimHints(disk)
    first = hints.add("n2", b"k")
    hints.sync()
    disk.error = "write"
    with pytest.raises(StorageError, match="No space left"):
        hints.add("n3", b"k")
    assert hints.owners() == ["n2"] and hints.log_errors == 0
    assert hints.done("n2", b"k", first)  # dropped all the same: a redelivery is harmless
    assert hints.owners() == [] and hints.log_errors == 1
    disk.error = None
    assert hints.add("n3", b"k") == first + 1
    hints.sync()
    hints.lose_power(random.Random(0))
    assert hints.owners() == ["n2", "n3"]  # the unlogged delivery comes back, to go again


def acknowledged_then_power_lost(cluster: ClusterConfig, seed: int) -> Found:
    """Put a key, cut the power of every node as soon as the put is acknowledged, restart
    them, and read the key back."""
    sim = Simulation(NODES, cluster, seed=seed, trace=False)
    sim.run_for(1.01)  # between two ticks of a timer that syncs every 50 ms
    assert isinstance(sim.wait_for(sim.put("n1", b"k", b"v")), Written)
    for node in NODES:
        sim.power_off(node)
    for node in NODES:
        sim.restart(node)
    sim.run_for(3)
    answer = sim.wait_for(sim.get("n2", b"k"))
    assert isinstance(answer, Found)
    return answer


def test_an_acknowledged_write_survives_losing_power_everywhere() -> None:
    for seed in range(10):
        assert [v.value for v in acknowledged_then_power_lost(ClusterConfig(), seed).versions] \
            == [b"v"]


def test_with_ack_before_fsync_losing_power_everywhere_can_lose_an_acknowledged_write() -> None:
    cluster = ClusterConfig(bugs=("ack-before-fsync",))
    lost = [seed for seed in range(30)
            if not acknowledged_then_power_lost(cluster, seed).versions]
    assert lost  # each replica keeps an unsynced write or not, as the seed has it


STOPPED = ("n2", "writes stopped: commit log sync failed: [Errno 5] Input/output error")


def writes_stay_stopped_until_a_restart(sim: Simulation) -> None:
    """n2's writes were stopped: a write needing it fails, a read through it works; healing
    its disk stops it, and once restarted it takes writes again."""
    assert sim.nodes["n2"].state == "up"
    refused = sim.wait_for(sim.put("n1", b"other", b"v", w=3))
    assert isinstance(refused, Failed) and refused.applied == "unknown"  # n1 stamped it
    assert isinstance(sim.wait_for(sim.get("n2", b"k", r=1)), Found)
    sim.fail_disk("n2", None)
    assert sim.nodes["n2"].state == "crashed"
    sim.restart("n2")
    sim.run_for(3)
    assert isinstance(sim.wait_for(sim.put("n1", b"other", b"v", w=3)), Written)
    assert sim.halts == [STOPPED]


def test_a_failed_group_commit_takes_back_its_acknowledgements_and_stops_the_nodes_writes(
        ) -> None:
    sim = Simulation(NODES, ClusterConfig(n=3, w=3, r=1), seed=1, trace=False)
    sim.run_for(1)
    sim.fail_disk("n2", "fsync")
    answer = sim.wait_for(sim.put("n1", b"k", b"v"))
    assert isinstance(answer, Failed) and answer.applied == "unknown"
    assert sim.halts == [STOPPED]
    writes_stay_stopped_until_a_restart(sim)


def test_with_fsync_on_a_timer_a_failed_sync_stops_the_nodes_writes_the_same_way() -> None:
    sim = Simulation(NODES, ClusterConfig(fsync="interval"), seed=1, trace=False)
    sim.run_for(1)
    sim.fail_disk("n2", "fsync")
    assert isinstance(sim.wait_for(sim.put("n1", b"k", b"v")), Written)
    sim.run_for(1)
    assert sim.halts == [STOPPED]
    assert sim.nodes["n2"].logic.counters["storage_errors"] > 0
    writes_stay_stopped_until_a_restart(sim)


def test_the_engine_reports_a_failing_device_read_as_a_storage_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = LsmStorage(tmp_path)
    engine.put(b"k", version(1))
    engine.flush()  # now the key is read from an SSTable file

    def failing_pread(fd: int, length: int, offset: int) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(faults, "pread", failing_pread)
    with pytest.raises(StorageError, match="read failed"):
        engine.get(b"k")
    monkeypatch.undo()
    assert engine.get(b"k") == list(version(1))
    engine.close()
