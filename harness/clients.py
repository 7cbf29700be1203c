"""Client workers: each bound to one node, issuing the workload's operations at a steady rate.

Every operation is recorded twice: ``invoke`` before it is sent, and its completion after —
``ok`` (it happened), ``fail`` (it surely did not), or ``info`` (it may have: a timeout, a lost
connection, a write the store calls indeterminate). After an ``info`` the worker carries on
under a new process id, as Jepsen does: the old process may still have an operation in flight.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import trio

from kvcheck.harness.history import HistoryWriter
from kvcheck.harness.workloads import Operation, WorkerState, Workload
from kvcheck.store.client import StoreClient, StoreError


@dataclass(frozen=True, slots=True)
class Worker:
    index: int
    node: str
    address: tuple[str, int]
    process_stride: int  # how far the process id jumps after an info


async def run_worker(worker: Worker, workload: Workload, history: HistoryWriter,
                     rate: float, until: float, rng: random.Random, op_timeout: float) -> None:
    """Issue operations at about ``rate`` per second (Poisson arrivals) until trio time
    ``until``. Never raises for store errors; they are recorded."""
    state = WorkerState(rng)
    process = worker.index
    client = StoreClient(*worker.address, timeout=op_timeout)
    try:
        next_at = trio.current_time()
        while True:
            next_at = max(next_at, trio.current_time() - 1 / rate) + rng.expovariate(rate)
            if next_at >= until:
                return
            await trio.sleep_until(next_at)
            op = workload.next_op(state)
            if await perform(client, workload, op, state, history, process, worker.node) == "info":
                process += worker.process_stride
                await client.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


async def perform(client: StoreClient, workload: Workload, op: Operation, state: WorkerState,
                  history: HistoryWriter, process: int, node: str,
                  *, final: bool = False) -> str:
    """Invoke ``op``, record invocation and completion (``final`` marks a final read); return
    the completion type."""
    history.record(process, "invoke", op.f, op.key, op.value, node, final=final)
    try:
        value = await workload.apply(client, op, state)
    except StoreError as exc:
        kind = "fail" if exc.applied == "no" else "info"
        history.record(process, kind, op.f, op.key, op.value, node, error=str(exc),
                       final=final)
        return kind
    history.record(process, "ok", op.f, op.key, value, node, final=final)
    return "ok"
