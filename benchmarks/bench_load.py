"""The store benchmark's load, the same for every database: preload, then timed gets and puts.

A database's side of the benchmark gives :class:`Clients`: how to open a :class:`Driver` (one
connection, one request at a time) bound to a node, in the protocol and with the client
library it names. :func:`preload` writes every key once. :func:`run_load` forks
``client_processes`` processes sharing ``clients`` workers; worker ``i`` is bound to node
``i mod nodes``, makes one warm-up read (its connection is open before the window), then from
``start_at`` to ``end_at`` (``time.monotonic()``, the same clock in every process) issues 50%
gets and 50% puts of ``value`` over keys drawn uniformly from ``key-0 .. key-<keys - 1>``,
each operation after the previous one completed. Every process reports its operations'
latencies, its errors, and the CPU time it used over the window (:class:`ClientReport`).
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import resource
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from kvcheck.checkers.stats import nearest_rank

KINDS = ("get", "put")
#: Workers that preload the keys, each over a connection of its own.
PRELOAD_WORKERS = 16


class Driver(Protocol):
    """One connection to one node, one request at a time; connects on the first request.
    Raises one of its :class:`Clients`' ``failures`` when a request does not succeed."""

    async def get(self, key: str) -> None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def aclose(self) -> None: ...


class Clients(Protocol):
    """How a database's benchmark clients connect (see the module docstring)."""

    @property
    def nodes(self) -> int:
        """How many nodes the clients are spread over."""
        ...

    @property
    def failures(self) -> tuple[type[Exception], ...]:
        """What a :class:`Driver` raises for a request that did not succeed."""
        ...

    def connect(self, node: int) -> Driver:
        """A new driver bound to node ``node`` (0 to ``nodes - 1``)."""
        ...


@dataclass(slots=True)
class ClientReport:
    """What one client process measured: each kind's latencies (seconds) and error count, the
    most frequent error messages, and its CPU time (user + system) over the window."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    messages: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0


async def preload(clients: Clients, keys: int, value: bytes) -> None:
    """Write ``value`` to every key once, over :data:`PRELOAD_WORKERS` connections spread over
    the nodes. Raises ``RuntimeError`` (in an exception group) if a write fails."""
    async def load(worker: int) -> None:
        driver = clients.connect(worker % clients.nodes)
        try:
            for k in range(worker, keys, PRELOAD_WORKERS):
                await driver.put(f"key-{k}", value)
        except clients.failures as error:
            raise RuntimeError(f"the preload failed: {error}") from None
        finally:
            await driver.aclose()

    async with trio.open_nursery() as nursery:
        for worker in range(PRELOAD_WORKERS):
            nursery.start_soon(load, worker)


def run_load(clients: Clients, *, workers: int, processes: int, keys: int, value: bytes,
             start_at: float, end_at: float) -> Callable[[], list[ClientReport]]:
    """Fork the client processes (module docstring) and return at once; the function returned
    waits for their reports. It raises ``RuntimeError`` if a process dies without one (its
    traceback is on stderr)."""
    context = multiprocessing.get_context("fork")  # the clients need no pickling
    reports: multiprocessing.Queue[ClientReport] = context.Queue()
    share = -(-workers // processes)
    forked = [context.Process(target=_client_process, daemon=True, args=(
        clients, range(i * share, min(workers, (i + 1) * share)), keys, value, start_at, end_at,
        i, reports)) for i in range(processes)]
    for process in forked:
        process.start()

    def wait() -> list[ClientReport]:
        collected: list[ClientReport] = []
        while len(collected) < len(forked):
            try:
                collected.append(reports.get(timeout=1))
            except queue.Empty:
                dead = [p.exitcode for p in forked if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a client process exited with {dead[0]}") from None
        for process in forked:
            process.join()
        return collected

    return wait


def _client_process(clients: Clients, indices: range, keys: int, value: bytes, start_at: float,
                    end_at: float, seed: int, reports: multiprocessing.Queue[ClientReport],
                    ) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark ends its client processes
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    report = ClientReport()

    async def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        driver = clients.connect(index % clients.nodes)
        try:
            await driver.get("key-0")  # warm-up: the connection is open before the window
            await trio.sleep(max(0.0, start_at - time.monotonic()))
            while time.monotonic() < end_at:
                key = f"key-{rng.randrange(keys)}"
                kind = "get" if rng.random() < 0.5 else "put"
                started = time.perf_counter()
                try:
                    if kind == "get":
                        await driver.get(key)
                    else:
                        await driver.put(key, value)
                except clients.failures as error:
                    report.errors[kind] += 1
                    report.messages[f"{type(error).__name__}: {error}"[:120]] += 1
                    continue
                report.latencies[kind].append(time.perf_counter() - started)
        finally:
            await driver.aclose()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            for index in indices:
                nursery.start_soon(worker, index)
            await trio.sleep(max(0.0, start_at - time.monotonic()))
            started = _cpu_seconds()
        report.cpu_seconds = _cpu_seconds() - started

    trio.run(run)
    report.messages = Counter(dict(report.messages.most_common(3)))
    reports.put(report)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quantile(sorted_values: list[float], q: float) -> float:
    """The checkers' quantile (:func:`~kvcheck.checkers.stats.nearest_rank`); NaN if empty."""
    return nearest_rank(sorted_values, q) if sorted_values else float("nan")


#: The latency quantiles reported, by name.
QUANTILES = {"p50": 0.50, "p99": 0.99, "p999": 0.999}


def latency_summary(latencies: list[float]) -> dict[str, float | None]:
    """The :data:`QUANTILES` of ``latencies`` (seconds, any order) in milliseconds, as
    ``<name>_ms``; None where there are none."""
    ordered = sorted(latencies)
    return {f"{name}_ms": round(nearest_rank(ordered, q) * 1000, 3) if ordered else None
            for name, q in QUANTILES.items()}
