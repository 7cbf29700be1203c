"""What anti-entropy costs, in the simulator; prints JSON.

    python benchmarks/antientropy_bench.py [--keys 100000] [--nodes 5] [--rounds 200]

Loads ``--keys`` keys (one 100-byte version each) onto their N=3 replicas of a ``--nodes``
cluster, then reports (CPU is this process's, the simulator running every node):

- ``build``: CPU to build one node's trees at start (one scan of its keys);
- ``write_overhead_us``: CPU the trees add to one write (``SharedHashes.update``);
- ``round_in_sync``: CPU of one anti-entropy round between replicas in sync (both sides), and
  for comparison what the previous design paid per round on each side: one filtered scan of the
  store for a sixteenth of the keys shared with the peer (of the in-memory store, and of the
  same keys in the LSM engine, flushed to one SSTable);
- ``wiped_replica``: after one node's disk is wiped, the virtual seconds until it holds every
  key it replicates again, the CPU spent meanwhile, and the anti-entropy traffic.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from machine import machine

from kvcheck.store.antientropy import FANOUT, leaf_of
from kvcheck.store.config import ClusterConfig
from kvcheck.store.node import Tick
from kvcheck.store.sim import Simulation
from kvcheck.store.storage import LsmStorage, Storage
from kvcheck.store.versions import stamp


def loaded(nodes: int, keys: int) -> tuple[Simulation, list[bytes]]:
    """A cluster whose disks hold ``keys`` keys on their replicas; trees not yet built."""
    sim = Simulation([f"n{i}" for i in range(1, nodes + 1)], ClusterConfig(), seed=1)
    names = [b"key-%09d" % i for i in range(keys)]
    for key in names:
        replicas = sim.ring.preference_list(key, 3)
        _, versions = stamp(f"{replicas[0]}.1", [], {}, b"x" * 100, 1, 10)
        for node in replicas:
            sim.nodes[node].disk.put(key, versions)
    return sim, names


def cpu(action: Callable[[], object]) -> float:
    """This process's CPU seconds to run ``action``."""
    start = time.process_time()
    action()
    return time.process_time() - start


def counter(sim: Simulation, name: str) -> int:
    return sum(node.logic.counters.get(name, 0) for node in sim.nodes.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    sim, names = loaded(args.nodes, args.keys)
    n1 = sim.nodes["n1"]
    build_s = cpu(lambda: sim.run_for(0.5)) / args.nodes  # every node builds at once
    assert all(node.logic.shared.ready for node in sim.nodes.values())
    sim.run_for(5)  # gossip settles

    key = next(k for k in names if "n1" in sim.ring.preference_list(k, 3))
    old, new = n1.disk.get(key), stamp("n1.1", n1.disk.get(key), {}, b"y" * 100, 2, 10)[1]
    updates = 10_000  # there and back, so the trees end as they were

    def writes() -> None:
        for _ in range(updates):
            n1.logic.shared.update(key, old, new)
            n1.logic.shared.update(key, new, old)

    write_us = cpu(writes) / (2 * updates) * 1e6

    peer = next(p for p in sim.nodes if p != "n1")

    def rounds(fire: bool) -> None:
        for _ in range(args.rounds):
            if fire:
                sim.fire("n1", Tick.ANTIENTROPY)
            sim.run_for(0.05)

    idle_s = cpu(lambda: rounds(False))  # everything else the cluster does meanwhile
    in_sync_before = counter(sim, "antientropy_in_sync")
    rounds_before = counter(sim, "antientropy_rounds")
    round_s = (cpu(lambda: rounds(True)) - idle_s) / args.rounds
    in_sync = counter(sim, "antientropy_in_sync") - in_sync_before
    all_rounds = counter(sim, "antientropy_rounds") - rounds_before
    shared = n1.logic.shared

    def previous_design_round(storage: Storage) -> None:
        list(storage.scan(where=lambda k: leaf_of(k) // FANOUT ** 2 == 0
                          and peer in shared.peers_sharing(k)))

    previous_round_s = cpu(lambda: previous_design_round(n1.disk))
    with tempfile.TemporaryDirectory() as root:
        lsm = LsmStorage(Path(root))
        for key, versions in n1.disk.scan():
            lsm.put(key, versions)
        lsm.flush()
        previous_round_lsm_s = cpu(lambda: previous_design_round(lsm))
        lsm.close()

    mine = [k for k in names if "n3" in sim.ring.preference_list(k, 3)]
    sim.wipe("n3")
    before = {name: counter(sim, name) for name in (
        "antientropy_rounds", "antientropy_hashes_sent", "antientropy_keys_sent",
        "antientropy_repairs_sent")}
    started, elapsed, whole_cpu = sim.now, None, 0.0
    while elapsed is None and sim.now - started < 600:
        whole_cpu += cpu(lambda: sim.run_for(0.5))
        disk = sim.nodes["n3"].disk
        if all(disk.get(k) for k in mine):
            elapsed = sim.now - started
    print(json.dumps({
        "benchmark": "antientropy", **machine(), "keys": args.keys, "nodes": args.nodes,
        "build": {"cpu_s_per_node": round(build_s, 3),
                  "keys_per_node": len(list(n1.disk.keys()))},
        "write_overhead_us": round(write_us, 1),
        "round_in_sync": {"cpu_ms": round(round_s * 1000, 3), "rounds": all_rounds,
                          "in_sync": in_sync,
                          "previous_design_cpu_ms": round(previous_round_s * 1000, 1),
                          "previous_design_cpu_ms_lsm": round(previous_round_lsm_s * 1000, 1)},
        "wiped_replica": {"keys_to_restore": len(mine),
                          "virtual_s_to_whole": elapsed, "cpu_s": round(whole_cpu, 2),
                          **{name: counter(sim, name) - value for name, value in before.items()}},
    }, indent=2))


if __name__ == "__main__":
    main()
