"""Workloads: which operations the clients issue, and what their results mean.

``register``: reads and writes of unique integer values. Keys rotate — a handful are active at
a time and each sees a few hundred operations — so every key's history stays small enough to
check. In vector-clock mode a write carries the causal context of the worker's last read of the
key; a read that returns siblings records them as a list.

``set``: each ``add`` inserts a unique integer into a set stored as a JSON list, by
read-modify-write: read (merging siblings by union), add, write back with the read's context.
An occasional ``read`` records the set; after the test every key is read through every node
(``final`` reads), which the lost-writes checker compares with what was acknowledged.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from kvcheck.store.client import StoreClient


@dataclass(frozen=True, slots=True)
class Operation:
    f: str
    key: str
    value: Any = None


@dataclass(slots=True)
class WorkerState:
    """What one client worker remembers between its operations."""

    rng: random.Random
    contexts: dict[str, str] = field(default_factory=dict)


class Workload(Protocol):
    name: str

    def next_op(self, worker: WorkerState) -> Operation:
        """The next operation for this worker."""
        ...

    async def apply(self, client: StoreClient, op: Operation, worker: WorkerState) -> Any:
        """Run ``op``; return the completion's value. Raises StoreError when it fails."""
        ...

    def used_keys(self) -> list[str]:
        """Every key used so far."""
        ...


def decode_int(raw: bytes | None) -> int | str | None:
    """A stored value as the int the harness wrote; anything else is kept, visibly, as text."""
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return "unexpected:" + raw.decode("utf-8", "replace")


class _RotatingKeys:
    """``active`` keys at a time; a group moves on after ``per_key * active`` operations."""

    def __init__(self, prefix: str, active: int, per_key: int) -> None:
        self.prefix, self.active, self.per_key = prefix, active, per_key
        self.issued = 0

    def pick(self, rng: random.Random) -> str:
        group = self.issued // (self.active * self.per_key)
        self.issued += 1
        return f"{self.prefix}{group * self.active + rng.randrange(self.active)}"

    def used(self) -> list[str]:
        last_group = max(0, self.issued - 1) // (self.active * self.per_key)
        return [f"{self.prefix}{i}" for i in range((last_group + 1) * self.active)]


class RegisterWorkload:
    name = "register"

    def __init__(self, vector_clocks: bool, active_keys: int = 3, ops_per_key: int = 300) -> None:
        self.vector_clocks = vector_clocks
        self._keys = _RotatingKeys("r", active_keys, ops_per_key)
        self._next_value = 0

    def next_op(self, worker: WorkerState) -> Operation:
        key = self._keys.pick(worker.rng)
        if worker.rng.random() < 0.5:
            return Operation("read", key)
        self._next_value += 1
        return Operation("write", key, self._next_value)

    async def apply(self, client: StoreClient, op: Operation, worker: WorkerState) -> Any:
        if op.f == "read":
            read = await client.get(op.key)
            worker.contexts[op.key] = read.context
            values = [decode_int(v) for v in read.values]
            if not values:
                return None
            return values[0] if len(values) == 1 else values
        context = worker.contexts.get(op.key, "") if self.vector_clocks else ""
        await client.put(op.key, str(op.value).encode(), context)
        return op.value

    def used_keys(self) -> list[str]:
        return self._keys.used()


class SetWorkload:
    name = "set"

    def __init__(self, active_keys: int = 2, adds_per_key: int = 250,
                 read_share: float = 0.1) -> None:
        self._keys = _RotatingKeys("s", active_keys, adds_per_key)
        self._next_element = 0
        self.read_share = read_share

    def next_op(self, worker: WorkerState) -> Operation:
        key = self._keys.pick(worker.rng)
        if worker.rng.random() < self.read_share:
            return Operation("read", key)
        self._next_element += 1
        return Operation("add", key, self._next_element)

    async def apply(self, client: StoreClient, op: Operation, worker: WorkerState) -> Any:
        read = await client.get(op.key)
        elements = union(read.values)
        if op.f == "read":
            return sorted(elements, key=str)
        elements.add(op.value)
        await client.put(op.key, encode_set(elements), read.context)
        return op.value

    def used_keys(self) -> list[str]:
        return self._keys.used()


def union(values: tuple[bytes | None, ...]) -> set[Any]:
    """The union of sibling sets; a sibling that is not a JSON list adds itself, as text."""
    elements: set[Any] = set()
    for raw in values:
        if raw is None:
            continue
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = None
        if isinstance(decoded, list) and all(isinstance(e, int) for e in decoded):
            elements.update(decoded)
        else:
            elements.add("unexpected:" + raw.decode("utf-8", "replace"))
    return elements


def encode_set(elements: set[Any]) -> bytes:
    return json.dumps(sorted(e for e in elements if isinstance(e, int)),
                      separators=(",", ":")).encode()


def make_workload(name: str, vector_clocks: bool) -> RegisterWorkload | SetWorkload:
    if name == "register":
        return RegisterWorkload(vector_clocks)
    if name == "set":
        return SetWorkload()
    raise ValueError(f"unknown workload {name!r}")
