"""Client workers: each bound to one node, issuing the workload's operations at a steady rate.

Every operation is recorded twice: ``invoke`` before it is sent, and its completion after —
``ok`` (it happened), ``fail`` (it surely did not), or ``info`` (it may have: a timeout, a lost
connection, a write the database calls indeterminate). The database's client decides which
(:mod:`kvcheck.harness.databases.interface`); the one rule the harness adds is the timeout: an
operation not completed after ``op_timeout`` seconds is cancelled and is ``info``. After an
``info`` the worker carries on with a new client, under a new process id, as Jepsen does: the
old process may still have an operation in flight.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import trio

from kvcheck.harness.databases import (
    Client,
    Completion,
    Fail,
    Info,
    Ok,
    Operation,
    guard,
)
from kvcheck.harness.history import HistoryWriter
from kvcheck.harness.workloads import Workload


class OperationLimit:
    """The operations all workers together may still issue (``kvcheck run --operation-limit``)."""

    def __init__(self, operations: int) -> None:
        self.left = operations

    def take(self) -> bool:
        """Claim one operation; False once none is left."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass(frozen=True, slots=True)
class Worker:
    index: int
    node: str
    process_stride: int  # how far the process id jumps after an info


async def run_worker(worker: Worker, workload: Workload, connect: Callable[[], Client],
                     history: HistoryWriter, rate: float, until: float, rng: random.Random,
                     op_timeout: float, limit: OperationLimit | None = None) -> None:
    """Issue operations at about ``rate`` per second (Poisson arrivals) until trio time
    ``until`` (or until ``limit`` has none left), through clients made by ``connect``. Never
    raises for the database's errors; they are recorded."""
    process = worker.index
    client = connect()
    try:
        next_at = trio.current_time()
        while True:
            next_at = next_arrival(next_at, rate, rng)
            if next_at >= until:
                return
            await trio.sleep_until(next_at)
            if limit is not None and not limit.take():
                return
            op = workload.next_op(rng)
            if await perform(client, op, history, process, worker.node, op_timeout) == "info":
                process += worker.process_stride
                await _close(client)
                client = connect()
    finally:
        await _close(client)


def next_arrival(previous: float, rate: float, rng: random.Random) -> float:
    """The trio time of a worker's next operation at ``rate`` per second (Poisson arrivals),
    after one due at ``previous``; a worker that fell behind catches up by one mean gap at most.
    """
    return max(previous, trio.current_time() - 1 / rate) + rng.expovariate(rate)


async def perform(client: Client, op: Operation, history: HistoryWriter, process: int,
                  node: str, op_timeout: float, *, final: bool = False) -> str:
    """Invoke ``op``, record invocation and completion (``final`` marks a final read; a
    completion's ``detail`` becomes the line's ``error_detail``); return the completion type."""
    history.record(process, "invoke", op.f, op.key, op.value, node, final=final)
    try:
        with trio.move_on_after(op_timeout) as timeout:
            completion: Completion = await client.invoke(op)
    except Exception:
        with guard(f"the client of {node}, running {op},"):  # words made only for a bug
            raise
    if timeout.cancelled_caught:
        completion = Info(f"no answer within {op_timeout:g} s")
    match completion:
        case Ok(value):
            history.record(process, "ok", op.f, op.key, value, node, final=final)
            return "ok"
        case Fail(error, detail) | Info(error, detail):
            kind = "fail" if isinstance(completion, Fail) else "info"
            history.record(process, kind, op.f, op.key, op.value, node, error=error,
                           error_detail=detail, final=final)
            return kind
    raise TypeError(f"a client returned {completion!r}, not Ok, Fail or Info")


async def _close(client: Client) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        await client.close()
