"""Throughput and latency of the reference store and of etcd, side by side; prints JSON.

    python benchmarks/store_bench.py [--db kvstore|etcd|both] [--seconds 20] [--clients 32]
        [--client-processes 1] [--fsync always] [--etcd-reads linearizable] [--etcd-client http1]

Each database runs as a 3-node cluster of local processes (``--db both``: the reference store,
then etcd, in one invocation, with the same parameters), gets the same load and the same
durability, and is reported the same way:

- Cluster: the reference store's ``kvstore serve`` with N=3, W=2, R=2 and ``--fsync``
  (default ``always``: every replica syncs its commit log before it acknowledges a write;
  :mod:`bench_kvstore`); etcd's members as kvcheck's etcd adapter starts them, which sync their
  write-ahead log before a write is acknowledged — 3.4 cannot be told not to, and the report
  shows the lines of ``etcd --help`` that mention fsync (none) and the syncs each member made
  (:mod:`bench_etcd`). Data in a temporary directory; every server process is killed at the
  end whatever happens, and the report lists any left behind (then the exit status is 1).
- Load (:mod:`bench_load`): ``--keys`` keys (default 10,000) preloaded with ``--value-bytes``
  (default 100) bytes, then ``--clients`` concurrent clients spread over ``--client-processes``
  processes, each bound to one node round-robin, issue 50% reads and 50% writes of that value
  over uniformly drawn keys, one after another, for ``--seconds``.
- Clients: the lightest of each protocol, on the same HTTP/1.1 machinery (the store client's
  ``HttpConnection`` over trio, one keep-alive connection each): the store's own
  ``StoreClient``, and a small client of etcd's JSON gateway (``--etcd-client httpx`` uses the
  etcd adapter's httpx client instead). Reads of etcd are linearizable unless
  ``--etcd-reads serializable``. The clients run on the same cores as the servers, so the
  report gives the CPU each side's clients and servers used per operation, and warns when a
  client process was close to a full core (the clients, not the database, would then set the
  pace: add ``--client-processes``).

The JSON has, per database: the server's version and configuration, its durability, the client
protocol and library, ops/s, errors (with the most frequent messages), p50/p99/p99.9 latency per
operation and overall, and CPU seconds of every server and client process over the window;
with ``--db both``, the ratios etcd / kvstore of ops/s, of each latency quantile and of CPU per
operation.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_etcd
import bench_kvstore
import trio
from bench_load import KINDS, QUANTILES, ClientReport, Clients, latency_summary, preload, run_load
from bench_processes import LocalProcesses, cpu_used, machine_cpu
from machine import machine

#: Seconds between forking the client processes and the start of the measured window: time to
#: start, connect and make one warm-up read.
WARMUP = 2.0
#: A client process busier than this share of a core may be what limits the throughput.
BUSY_CLIENT = 0.8
#: Other processes busier than this share of the machine disturb the figures.
BUSY_OTHERS = 0.05

DATABASES = ("kvstore", "etcd")


@dataclass(frozen=True, slots=True)
class Side:
    """A database's cluster, started: its clients, what the report says of it, and counters
    read at both ends of the window (their differences go into its ``durability``)."""

    clients: Clients
    description: dict[str, Any]
    counters: Callable[[], dict[str, list[float]]]


def start_kvstore(servers: LocalProcesses, args: argparse.Namespace) -> Side:
    ports = bench_kvstore.start_cluster(servers, args.fsync)
    trio.run(bench_kvstore.wait_ready, ports, servers)
    return Side(bench_kvstore.KvStoreClients(tuple(ports)), bench_kvstore.describe(args.fsync),
                dict)


def start_etcd(servers: LocalProcesses, args: argparse.Namespace) -> Side:
    cluster = bench_etcd.start_cluster(servers, args.etcd_reads)
    trio.run(bench_etcd.wait_ready, cluster, servers)
    clients = bench_etcd.EtcdClients(tuple(cluster.host(n) for n in cluster.members),
                                     serializable=args.etcd_reads == "serializable",
                                     library=args.etcd_client)
    description = bench_etcd.describe(trio.run(bench_etcd.server_version, cluster),
                                      args.etcd_reads, args.etcd_client, bench_etcd.fsync_flags())
    return Side(clients, description,
                lambda: {"wal_fsyncs": trio.run(bench_etcd.wal_fsyncs, cluster)})


START = {"kvstore": start_kvstore, "etcd": start_etcd}


def measure(database: str, args: argparse.Namespace, value: bytes) -> dict[str, Any]:
    """Run ``database``'s cluster under the load; return its part of the report."""
    load_average = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix=f"{database}-bench-") as tmp, \
            LocalProcesses(Path(tmp)) as servers:
        side = START[database](servers, args)
        trio.run(preload, side.clients, args.keys, value)
        start_at = time.monotonic() + WARMUP
        end_at = start_at + args.seconds
        wait = run_load(side.clients, workers=args.clients, processes=args.client_processes,
                        keys=args.keys, value=value, start_at=start_at, end_at=end_at)
        time.sleep(max(0.0, start_at - time.monotonic()))
        cpu_before, machine_before = servers.cpu_seconds(), machine_cpu()
        counters_before = side.counters()
        time.sleep(max(0.0, end_at - time.monotonic()))
        cpu_after, machine_after = servers.cpu_seconds(), machine_cpu()
        counters_after = side.counters()
        reports = wait()
    result = summarize(side.description, reports, args.seconds,
                       [a - b for a, b in zip(cpu_after, cpu_before, strict=True)],
                       cpu_used(machine_before, machine_after))
    result["durability"].update(
        {f"{name}_during_window": [round(a - b) for a, b in
                                   zip(counters_after[name], counters_before[name], strict=True)]
         for name in counters_after})
    result["load_average_before"] = [round(x, 2) for x in load_average]
    result["leftover_processes"] = servers.leftovers
    return result


def summarize(description: dict[str, Any], reports: list[ClientReport], seconds: float,
              server_cpu: list[float], machine: dict[str, float]) -> dict[str, Any]:
    """One database's figures from the client processes' reports, the CPU its servers used,
    and the CPU each kind of process on the machine used (:func:`cpu_used`), over the
    window."""
    latencies = {kind: [v for r in reports for v in r.latencies[kind]] for kind in KINDS}
    errors = {kind: sum(r.errors[kind] for r in reports) for kind in KINDS}
    ops = sum(len(values) for values in latencies.values())
    client_cpu = [r.cpu_seconds for r in reports]
    result: dict[str, Any] = {
        **description, "seconds": seconds, "ops": ops, "ops_per_s": round(ops / seconds, 1),
        "errors": sum(errors.values()),
    }
    messages = sum((r.messages for r in reports), Counter[str]())
    if messages:
        result["most_frequent_errors"] = dict(messages.most_common(3))
    for kind in KINDS:
        result[kind] = {"ops": len(latencies[kind]), "errors": errors[kind],
                        **latency_summary(latencies[kind])}
    result["all"] = latency_summary([v for values in latencies.values() for v in values])
    capacity = seconds * (os.cpu_count() or 1)
    others = machine["other_processes"] / capacity
    result["cpu"] = {
        "servers_s": [round(c, 2) for c in server_cpu],
        "clients_s": [round(c, 2) for c in client_cpu],
        "server_ms_per_op": _per_op(sum(server_cpu), ops),
        "client_ms_per_op": _per_op(sum(client_cpu), ops),
        "machine_share": {kind: round(used / capacity, 2) for kind, used in machine.items()},
    }
    warnings = []
    busy = [c / seconds for c in client_cpu if c / seconds > BUSY_CLIENT]
    if busy:
        warnings.append(f"a client process used {max(busy):.0%} of a core: the clients may be "
                        "what limits the throughput (add --client-processes)")
    if others > BUSY_OTHERS:
        warnings.append(f"other processes used {others:.0%} of the machine's CPU during the "
                        "window: the figures are disturbed")
    if warnings:
        result["warnings"] = warnings
    return result


def _per_op(cpu_seconds: float, ops: int) -> float | None:
    return round(1000 * cpu_seconds / ops, 3) if ops else None


def ratios(kvstore: dict[str, Any], etcd: dict[str, Any]) -> dict[str, Any]:
    """etcd's figures divided by the reference store's (None where one is missing)."""
    def ratio(ours: float | None, theirs: float | None) -> float | None:
        return round(theirs / ours, 3) if ours and theirs is not None else None

    return {
        "of": "etcd / kvstore",
        "ops_per_s": ratio(kvstore["ops_per_s"], etcd["ops_per_s"]),
        **{kind: {name: ratio(kvstore[kind][f"{name}_ms"], etcd[kind][f"{name}_ms"])
                  for name in QUANTILES} for kind in (*KINDS, "all")},
        **{f"{side}_cpu_per_op": ratio(kvstore["cpu"][f"{side}_ms_per_op"],
                                       etcd["cpu"][f"{side}_ms_per_op"])
           for side in ("server", "client")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="kvstore", choices=[*DATABASES, "both"],
                        help="the database to measure, or both, one after the other")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--fsync", default="always", choices=["always", "interval", "never"],
                        help="the reference store's fsync policy")
    parser.add_argument("--etcd-reads", default="linearizable",
                        choices=["linearizable", "serializable"])
    parser.add_argument("--etcd-client", default="http1", choices=["http1", "httpx"],
                        help="http1: a small client of etcd's JSON gateway on the store "
                             "client's own connection; httpx: the etcd adapter's own client")
    args = parser.parse_args()
    if min(args.seconds, args.clients, args.client_processes, args.keys, args.value_bytes) <= 0:
        parser.error("--seconds, --clients, --client-processes, --keys and --value-bytes "
                     "must be positive")
    # Interrupted (Ctrl-C, or SIGTERM: the same), the benchmark still kills its servers.
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started in background
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    value = os.urandom(args.value_bytes // 2 + 1).hex().encode()[: args.value_bytes]
    databases = DATABASES if args.db == "both" else (args.db,)
    report: dict[str, Any] = {"benchmark": "store", **machine(), "workload": {
        "nodes": 3, "keys": args.keys, "value_bytes": args.value_bytes, "reads": 0.5,
        "writes": 0.5, "clients": args.clients, "client_processes": args.client_processes,
        "seconds": args.seconds}}
    try:
        for database in databases:
            report[database] = measure(database, args, value)
    except* KeyboardInterrupt:
        sys.exit("store_bench: interrupted")
    except* RuntimeError as failed:
        sys.exit(f"store_bench: {failed.exceptions[0]}")
    if args.db == "both":
        report["ratios"] = ratios(report["kvstore"], report["etcd"])
    print(json.dumps(report, indent=2))
    if any(report[database]["leftover_processes"] for database in databases):
        sys.exit(1)


if __name__ == "__main__":
    main()
