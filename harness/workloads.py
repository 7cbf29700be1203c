"""Workloads: which operations the clients issue (the operations' meaning is in
:mod:`kvcheck.harness.databases.interface`, what each database does with them in its client).

``register``: reads, writes of unique integer values and, where the database's client can,
compare-and-sets from the value last written to the key to a new unique value. Keys rotate — a
handful are active at a time and each sees a few hundred operations — so every key's history
stays small enough to check.

``set``: each ``add`` inserts a unique integer into the key's set; an occasional ``read``
returns the whole set. After the test every key is read through every node (``final`` reads),
which the lost-writes checker compares with what was acknowledged.

A workload is shared by every worker of a run (values stay unique across them); each worker
draws its choices from its own seeded generator.
"""

from __future__ import annotations

import random
from typing import Protocol

from kvcheck.harness.databases.interface import Operation


class Workload(Protocol):
    name: str

    def next_op(self, rng: random.Random) -> Operation:
        """The next operation, drawn with the worker's ``rng``."""
        ...

    def used_keys(self) -> list[str]:
        """Every key used so far."""
        ...


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
    """Reads and unique writes, half and half; with ``cas``, a third each of reads, writes and
    compare-and-sets (expecting the value last written to the key, or None before any)."""

    name = "register"

    def __init__(self, cas: bool = False, active_keys: int = 3, ops_per_key: int = 300) -> None:
        self.cas = cas
        self._keys = _RotatingKeys("r", active_keys, ops_per_key)
        self._next_value = 0
        self._last_written: dict[str, int] = {}

    def next_op(self, rng: random.Random) -> Operation:
        key = self._keys.pick(rng)
        choice = rng.random()
        if choice < (1 / 3 if self.cas else 1 / 2):
            return Operation("read", key)
        self._next_value += 1
        value = self._next_value
        if self.cas and choice >= 2 / 3:
            expected = self._last_written.get(key)
            self._last_written[key] = value
            return Operation("cas", key, [expected, value])
        self._last_written[key] = value
        return Operation("write", key, value)

    def used_keys(self) -> list[str]:
        return self._keys.used()


class SetWorkload:
    """Adds of unique integers, and a ``read_share`` of reads."""

    name = "set"

    def __init__(self, active_keys: int = 2, adds_per_key: int = 250,
                 read_share: float = 0.1) -> None:
        self._keys = _RotatingKeys("s", active_keys, adds_per_key)
        self._next_element = 0
        self.read_share = read_share

    def next_op(self, rng: random.Random) -> Operation:
        key = self._keys.pick(rng)
        if rng.random() < self.read_share:
            return Operation("read", key)
        self._next_element += 1
        return Operation("add", key, self._next_element)

    def used_keys(self) -> list[str]:
        return self._keys.used()


def make_workload(name: str, cas: bool = False) -> RegisterWorkload | SetWorkload:
    """The workload ``name``; ``cas``: the database's client can compare-and-set."""
    if name == "register":
        return RegisterWorkload(cas)
    if name == "set":
        return SetWorkload()
    raise ValueError(f"unknown workload {name!r}")
