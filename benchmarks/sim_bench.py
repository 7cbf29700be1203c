"""How fast a simulated run goes, against the same test in Docker; prints JSON.

    python benchmarks/sim_bench.py [--nodes 5] [--seconds 60] [--rate 1000] [--seeds 3] [--docker]

Runs ``kvcheck run --backend sim`` with partitions, kills, pauses and clock faults overlapping,
once per seed, and reports the client calls recorded per wall-clock second of the run itself
(checking and the report excluded) and how many simulated seconds pass per wall-clock second.
With ``--docker``, the first seed's test also runs in Docker (as ``kvcheck run`` does, image
built beforehand), and the speed-up of the simulated run over it is reported.

It also reports the node logic's own speed, the ceiling of any simulated run's: the same nodes'
:class:`~kvcheck.store.sim.Simulation` driven directly, with no harness, no trio and no faults,
by as many closed-loop clients as the test has (``node_logic``).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from machine import machine

from kvcheck.harness.docker_cluster import DockerCluster
from kvcheck.harness.engine import connect
from kvcheck.harness.image import ensure_image
from kvcheck.harness.runner import Runner, new_run_dir
from kvcheck.harness.sim_cluster import SimCluster
from kvcheck.harness.spec import TestSpec
from kvcheck.harness.virtual_time import run_virtual
from kvcheck.store.config import ClusterConfig
from kvcheck.store.events import ClientGet, ClientPut, Found, Response
from kvcheck.store.sim import Simulation

NEMESIS = ("partition", "kill", "pause", "clock")
#: Client operations the node logic alone is timed over; and the keys they use.
NODE_LOGIC_OPS = 20_000
NODE_LOGIC_KEYS = 100


def spec_for(args: argparse.Namespace, seed: int, backend: str) -> TestSpec:
    return TestSpec(name=f"bench-{backend}", backend=backend,  # type: ignore[arg-type]
                    nodes=args.nodes, time_limit=args.seconds, rate=args.rate,
                    concurrency=4 * args.nodes, nemesis=NEMESIS, nemesis_interval=5,
                    recovery_time=5, seed=seed)


def calls(run_dir: Path) -> int:
    with (run_dir / "history.jsonl").open() as history:
        return sum('"type":"invoke"' in line and '"process":"nemesis"' not in line
                   for line in history)


def simulated(args: argparse.Namespace, seed: int, histories: Path) -> dict[str, Any]:
    spec = spec_for(args, seed, "sim")
    run_dir, run_id = new_run_dir(histories, spec.name)
    runner = Runner(spec, SimCluster(spec, run_id, run_dir), run_dir)
    started = time.perf_counter()
    run_virtual(runner.run, seed=seed)
    wall = time.perf_counter() - started
    virtual = spec.time_limit + spec.recovery_time
    return {"seed": seed, "wall_s": round(wall, 2), "calls": calls(run_dir),
            "calls_per_wall_s": round(calls(run_dir) / wall),
            "simulated_s_per_wall_s": round(virtual / wall, 1)}


def node_logic(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The node logic alone (module docstring): each client reads a random key, then writes it
    with that read's context (as the register workload does), one request at a time."""
    spec = spec_for(args, seed, "sim")
    rng = random.Random(seed)
    answers: list[tuple[int, Response]] = []
    sim = Simulation(spec.node_ids, ClusterConfig(**spec.store_settings()), seed=seed,
                     trace=False, answered=lambda request, response: answers.append(
                         (request, response)))
    sim.run_for(5.0)  # the nodes meet before the clock starts
    keys = [f"k{i}".encode() for i in range(NODE_LOGIC_KEYS)]
    reads: dict[int, tuple[int, bytes]] = {}  # request -> the client, the key it reads
    writes: dict[int, int] = {}  # request -> the client

    def submit(client: int, event: ClientGet | ClientPut) -> None:
        sim.submit(spec.node_ids[client % len(spec.node_ids)], event)

    def read(client: int) -> None:
        request, key = sim.new_request(), rng.choice(keys)
        reads[request] = client, key
        submit(client, ClientGet(request, key))

    started, operations = time.perf_counter(), 0
    for client in range(spec.concurrency):
        read(client)
    while operations < NODE_LOGIC_OPS:
        sim.step()
        for request, response in answers:
            operations += 1
            if request in reads:
                client, key = reads.pop(request)
                context = response.context if isinstance(response, Found) else {}
                writes[write := sim.new_request()] = client
                submit(client, ClientPut(write, key, str(operations).encode(), context))
            else:
                read(writes.pop(request))
        answers.clear()
    wall = time.perf_counter() - started
    return {"clients": spec.concurrency, "operations": operations, "wall_s": round(wall, 2),
            "ops_per_wall_s": round(operations / wall)}


def in_docker(args: argparse.Namespace, seed: int, histories: Path) -> dict[str, Any]:
    spec = spec_for(args, seed, "docker")
    client = connect()
    image = ensure_image(client, spec.database)
    run_dir, run_id = new_run_dir(histories, spec.name)
    runner = Runner(spec, DockerCluster(client, image, run_id, spec, spec.database, run_dir),
                    run_dir)
    started = time.perf_counter()
    trio.run(runner.run, None)
    wall = time.perf_counter() - started
    return {"seed": seed, "wall_s": round(wall, 2), "calls": calls(run_dir),
            "calls_per_wall_s": round(calls(run_dir) / wall)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0, help="simulated time limit")
    parser.add_argument("--rate", type=float, default=1000.0, help="operations per second")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--docker", action="store_true",
                        help="also run the first seed's test in Docker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        histories = Path(tmp)
        runs = [simulated(args, seed, histories) for seed in range(1, args.seeds + 1)]
        result: dict[str, Any] = {
            "benchmark": "sim", **machine(),
            "nodes": args.nodes, "seconds": args.seconds, "rate": args.rate,
            "nemesis": ",".join(NEMESIS), "simulated": runs,
            "calls_per_wall_s": round(sum(r["calls"] for r in runs)
                                      / sum(r["wall_s"] for r in runs)),
            "node_logic": node_logic(args, 1)}
        if args.docker:
            docker = in_docker(args, 1, histories)
            result["docker"] = docker
            result["speed_up"] = round(docker["wall_s"] / runs[0]["wall_s"], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
