"""How fast the harness can drive a Docker cluster, and what each operation costs it; prints JSON.

    python benchmarks/harness_bench.py [--nodes 3] [--seconds 10] [--rates 100,300,1000,3000]

Starts one cluster of store containers (as ``kvcheck run`` does), then for each target rate runs
the register workload's client workers — recording every operation to a history file, exactly
as in a test — for ``--seconds``, with no nemesis. Reports, per target rate, the rate of
operations completed, their latency, and the harness process's own CPU time per operation; and
the highest target it sustained (completed at least 90% of the target); with the machine's
cores and the Python version, as every benchmark.

``floor`` gives the same figures for the same workers and rates driving an echo peer instead of
the cluster (:mod:`echo_peer`): everything the harness does per operation but a database's
protocol — pacing, the timeout, the workload, the history, trio's scheduling. The harness's
per-operation cost cannot fall below it however cheap a client is. ``trio_alone`` is the part
of that which is trio's: workers that only pace themselves, open the timeout's cancel scope
and make the exchange. ``wake`` is the machine's share: the CPU one wake-up of an idle process
costs at each rate, for a plain ``epoll`` loop that does nothing else and for one trio task's
``sleep_until`` — the price of every operation's two wake-ups (its arrival and its answer)
before any Python of the harness runs.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import select
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypedDict

import trio
from echo_peer import EchoClient, running_peer
from machine import machine

from kvcheck.checkers.stats import nearest_rank
from kvcheck.harness.clients import Worker, next_arrival, run_worker
from kvcheck.harness.databases import Client, Operation
from kvcheck.harness.databases.kvstore import KvStore
from kvcheck.harness.docker_cluster import DockerCluster
from kvcheck.harness.engine import connect
from kvcheck.harness.history import HistoryWriter
from kvcheck.harness.image import ensure_image
from kvcheck.harness.spec import TestSpec
from kvcheck.harness.workloads import RegisterWorkload

#: What a bare worker sends (the echo peer answers any operation alike).
OPERATION = Operation("read", "k")


class RateResult(TypedDict):
    """The figures of one target rate (module docstring); no latency without operations."""

    target_ops_per_s: float
    completed_ops_per_s: float
    ok: int
    fail: int
    info: int
    p50_ms: float | None
    p99_ms: float | None
    harness_cpu_us_per_op: float
    harness_cpu_share: float


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class BareResult(TypedDict):
    """The figures of trio's own share at one target rate."""

    target_ops_per_s: float
    completed_ops_per_s: float
    cpu_us_per_op: float


async def bare(port: int, rate: float, seconds: float, workers: int) -> BareResult:
    """Only what trio does per operation in a worker (:func:`run_worker`): a Poisson-paced
    sleep, a cancel scope for the timeout and an exchange with the echo peer on ``port`` — no
    workload, no history, no completion to match."""
    completed, each = 0, rate / workers

    async def worker(client: EchoClient, rng: random.Random) -> None:
        nonlocal completed
        next_at = trio.current_time()
        while True:
            next_at = next_arrival(next_at, each, rng)
            if next_at >= until:
                break
            await trio.sleep_until(next_at)
            with trio.move_on_after(5.0):
                await client.invoke(OPERATION)
                completed += 1
        await client.close()

    rng = random.Random(rate)
    cpu_before, started = cpu_seconds(), time.monotonic()
    until = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker, EchoClient(port), random.Random(rng.random()))
    elapsed = time.monotonic() - started
    return {"target_ops_per_s": rate,
            "completed_ops_per_s": round(completed / elapsed, 1),
            "cpu_us_per_op": round((cpu_seconds() - cpu_before) / max(completed, 1) * 1e6, 1)}


class WakeResult(TypedDict):
    """The CPU of one wake-up of an idle process at one rate of wake-ups."""

    wakes_per_s: float
    epoll_cpu_us: float
    trio_cpu_us: float


def wake_cost(rate: float, seconds: float) -> WakeResult:
    """CPU per wake-up, ``rate`` wake-ups a second for ``seconds``, of a plain epoll loop and of
    a trio task's ``sleep_until``."""
    wakes, gap = int(rate * seconds), 1 / rate
    poller, cpu_before = select.epoll(), cpu_seconds()
    next_at = time.monotonic()
    for _ in range(wakes):
        next_at += gap
        if (wait := next_at - time.monotonic()) > 0:
            poller.poll(wait)
    epoll_cpu = cpu_seconds() - cpu_before
    poller.close()

    async def sleeper() -> float:
        cpu_before, wake_at = cpu_seconds(), trio.current_time()
        for _ in range(wakes):
            wake_at += gap
            await trio.sleep_until(wake_at)
        return cpu_seconds() - cpu_before

    return {"wakes_per_s": rate, "epoll_cpu_us": round(epoll_cpu / wakes * 1e6, 1),
            "trio_cpu_us": round(trio.run(sleeper) / wakes * 1e6, 1)}


async def drive(nodes: Sequence[str], connect: Callable[[str], Client], rate: float,
                seconds: float, workers: int, history_path: Path) -> RateResult:
    """Run ``workers`` register workers, spread over ``nodes`` and connected to a node by
    ``connect``, at ``rate`` operations per second in all for ``seconds``."""
    history = HistoryWriter(history_path)
    workload = RegisterWorkload()
    rng = random.Random(rate)
    cpu_before, started = cpu_seconds(), time.monotonic()
    until = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for index in range(workers):
            node = nodes[index % len(nodes)]
            nursery.start_soon(run_worker, Worker(index, node, workers), workload,
                               partial(connect, node), history, rate / workers, until,
                               random.Random(rng.random()), 5.0)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds() - cpu_before
    history.close()
    latencies = sorted(latencies_ms(history_path))
    completed = history.counts["ok"] + history.counts["fail"] + history.counts["info"]
    return {
        "target_ops_per_s": rate,
        "completed_ops_per_s": round(completed / elapsed, 1),
        "ok": history.counts["ok"], "fail": history.counts["fail"],
        "info": history.counts["info"],
        "p50_ms": round(nearest_rank(latencies, 0.50), 2) if latencies else None,
        "p99_ms": round(nearest_rank(latencies, 0.99), 2) if latencies else None,
        "harness_cpu_us_per_op": round(cpu / max(completed, 1) * 1e6, 1),
        "harness_cpu_share": round(cpu / elapsed, 3),
    }


def latencies_ms(path: Path) -> list[float]:
    invoked: dict[int, int] = {}
    out = []
    for line in path.read_text().splitlines()[1:]:
        op = json.loads(line)
        if op["type"] == "invoke":
            invoked[op["process"]] = op["time"]
        else:
            out.append((op["time"] - invoked.pop(op["process"])) / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=0, help="default: 8 per node")
    parser.add_argument("--rates", default="100,300,1000,3000")
    args = parser.parse_args()
    workers = args.workers or 8 * args.nodes
    rates = [float(rate) for rate in args.rates.split(",")]
    client = connect()
    image = ensure_image(client, KvStore())
    with tempfile.TemporaryDirectory(prefix="kvcheck-bench-") as tmp:
        run_dir = Path(tmp)
        spec = TestSpec(nodes=args.nodes, n=3, w=2, r=2)
        cluster = DockerCluster(client, image, f"bench-{int(time.time())}", spec, KvStore(),
                                run_dir)

        async def run() -> list[RateResult]:
            try:  # a setup that fails part way has made containers too
                await cluster.setup()
                return [await drive(cluster.nodes, partial(cluster.database.client,
                                                           cluster=cluster),
                                    rate, args.seconds, workers,
                                    run_dir / f"history-{rate:g}.jsonl")
                        for rate in rates]
            finally:
                with trio.CancelScope(shield=True):
                    await cluster.teardown()

        async def floor(port: int) -> list[RateResult]:
            return [await drive(["echo"], lambda _: EchoClient(port), rate, args.seconds,
                                workers, run_dir / f"floor-{rate:g}.jsonl")
                    for rate in rates]

        async def trio_alone(port: int) -> list[BareResult]:
            return [await bare(port, rate, args.seconds, workers) for rate in rates]

        results = trio.run(run)
        with running_peer() as port:
            floors = trio.run(floor, port)
            bares = trio.run(trio_alone, port)
        wakes = [wake_cost(2 * rate, min(args.seconds, 4.0)) for rate in rates]
    sustained = [r["target_ops_per_s"] for r in results
                 if r["completed_ops_per_s"] >= 0.9 * r["target_ops_per_s"]]
    print(json.dumps({
        "benchmark": "harness", **machine(),
        "nodes": args.nodes, "workers": workers,
        "seconds_per_rate": args.seconds, "runs": results,
        "floor": floors, "trio_alone": bares, "wake": wakes,
        "highest_sustained_ops_per_s": max(sustained) if sustained else None,
        "highest_completed_ops_per_s": max(r["completed_ops_per_s"] for r in results),
    }, indent=2))


if __name__ == "__main__":
    main()
