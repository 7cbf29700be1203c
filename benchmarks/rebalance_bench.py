"""What a join and a leave cost, in the simulator; prints JSON.

    python benchmarks/rebalance_bench.py [--keys 100000] [--nodes 5]

Loads ``--keys`` keys (one 100-byte version each) onto their N=3 replicas of a ``--nodes``
cluster, lets a new node join, then has it leave again, and reports for each change: the virtual
seconds from the request to the switch (gossip rounds of 500 ms included), the keys streamed
(sent by sources, received by gainers: a key a gainer receives from two sources counts twice),
the keys the changed node ends up replicating, and the CPU this process spent (the simulator
runs every node).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from store.config import ClusterConfig
from store.sim import Simulation
from store.versions import stamp


def loaded(nodes: int, keys: int) -> Simulation:
    sim = Simulation([f"n{i}" for i in range(1, nodes + 1)], ClusterConfig(), seed=1)
    for i in range(keys):
        key = b"key-%09d" % i
        replicas = sim.ring.preference_list(key, 3)
        _, versions = stamp(f"{replicas[0]}.1", [], {}, b"x" * 100, 1, 10)
        for node in replicas:
            sim.nodes[node].disk.put(key, versions)
    return sim


def counter(sim: Simulation, name: str) -> int:
    return sum(node.logic.counters.get(name, 0) for node in sim.nodes.values())


def measure(sim: Simulation, member: str, status: str,
            change: Callable[[], object]) -> dict[str, float]:
    sent, received = counter(sim, "stream_keys_sent"), counter(sim, "stream_keys_received")
    started, cpu = sim.now, time.process_time()
    change()
    while any(node.logic.placement.records.get(member) is None
              or node.logic.placement.records[member].status != status
              or node.logic.placement.in_transition
              for node in sim.nodes.values() if node.node_id != member or status != "left"):
        sim.run_for(0.1)
    placement = sim.nodes["n1"].logic.placement
    return {
        "virtual_s": round(sim.now - started, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "keys_sent": counter(sim, "stream_keys_sent") - sent,
        "keys_received": counter(sim, "stream_keys_received") - received,
        "members_after": len(placement.current),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=5)
    args = parser.parse_args()
    sim = loaded(args.nodes, args.keys)
    sim.run_for(3)  # gossip settles, anti-entropy trees built
    newcomer = f"n{args.nodes + 1}"
    join = measure(sim, newcomer, "normal", lambda: sim.join(newcomer, via="n1"))
    join["keys_replicated_by_newcomer"] = sim.nodes[newcomer].disk.stats()["keys"]
    leave = measure(sim, newcomer, "left", lambda: sim.leave(newcomer))
    print(json.dumps({"benchmark": "rebalance", "keys": args.keys, "nodes": args.nodes,
                      "join": join, "leave": leave}, indent=2))


if __name__ == "__main__":
    main()
