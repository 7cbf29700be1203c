"""The simulator's disk as a real device and the server treat it: a power loss keeps what was
synced and a prefix of the rest; a failed sync loses what it should have made durable; writes
are acknowledged only once synced (group commit), unless the ``ack-before-fsync`` bug is on; a
failed group commit stops the node; a failing hint log is counted, never raised."""

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
from kvcheck.store.storage import LsmStorage, StorageError
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


def test_a_failed_sync_loses_what_it_should_have_made_durable_though_a_later_one_succeeds(
        ) -> None:
    disk = SimDisk(lambda: 0.0)
    disk.put(b"k", version(1))
    disk.sync()
    disk.put(b"k", version(2))
    disk.error = "fsync"
    with pytest.raises(StorageError, match="sync failed"):
        disk.sync()
    assert disk.get(b"k") == list(version(2))  # still readable, from the page cache
    disk.error = None
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


def test_a_hint_log_that_cannot_be_written_is_counted_and_the_hint_kept_while_running(
        ) -> None:
    disk = SimDisk(lambda: 0.0)
    hints = SimHints(disk)
    hints.add("n2", b"k")
    hints.sync()
    disk.error = "write"
    seq = hints.add("n3", b"k")
    assert hints.log_errors == 1 and hints.owners() == ["n2", "n3"]
    disk.error = None
    hints.lose_power(random.Random(0))
    assert hints.owners() == ["n2"]  # the unlogged hint did not survive the power loss
    assert seq == 2


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


def test_a_failed_group_commit_stops_the_node_and_its_write_is_not_acknowledged() -> None:
    sim = Simulation(NODES, ClusterConfig(n=3, w=3, r=1), seed=1, trace=False)
    sim.run_for(1)
    sim.fail_disk("n2", "fsync")
    answer = sim.wait_for(sim.put("n1", b"k", b"v"))
    assert isinstance(answer, Failed)
    assert [(node, why) for node, why in sim.halts] == [
        ("n2", "stopped: commit log sync failed: [Errno 5] Input/output error")]
    assert sim.nodes["n2"].state == "crashed"


def test_with_fsync_on_a_timer_a_failed_sync_is_counted_and_the_node_goes_on() -> None:
    sim = Simulation(NODES, ClusterConfig(fsync="interval"), seed=1, trace=False)
    sim.run_for(1)
    sim.fail_disk("n2", "fsync")
    assert isinstance(sim.wait_for(sim.put("n1", b"k", b"v")), Written)
    sim.run_for(1)
    assert not sim.halts and sim.nodes["n2"].state == "up"
    assert sim.nodes["n2"].logic.counters["storage_errors"] > 0


def test_the_engine_reports_a_failing_device_read_as_a_storage_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = LsmStorage(tmp_path)
    engine.put(b"k", version(1))
    engine.flush()  # now the key is read from an SSTable file

    def failing_pread(fd: int, length: int, offset: int) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "pread", failing_pread)
    with pytest.raises(StorageError, match="read failed"):
        engine.get(b"k")
    monkeypatch.undo()
    assert engine.get(b"k") == list(version(1))
    engine.close()
