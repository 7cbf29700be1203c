"""Automatic scaling: grow the cluster under load, shrink it when idle, by join and leave.

The *load* is the client requests per second that the members coordinate, divided by the
number of members (``get`` and ``put`` counters of every member's ``/status``, over one
window). An :class:`Autoscaler` decides from a series of such windows: when the load stays
above ``above`` for ``sustain`` windows in a row and the cluster is below ``maximum``, add a
node; when it stays below ``below`` for ``sustain`` windows and the cluster is above
``minimum``, remove one. A decision resets both streaks, and the loop (:func:`autoscale`) does
not measure while a node joins or leaves, so one change completes before the next is weighed.

Nodes added are named after the highest id so far (``n4``, ``n5``, ...); the node removed is
the one added last, else the highest-numbered member. Every decision is printed and appended,
as a JSON line with the load that caused it, to ``autoscale.jsonl``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import trio

from kvcheck.harness.databases.kvstore import PORT
from kvcheck.harness.docker_cluster import DockerCluster
from kvcheck.store.client import StoreClient, StoreError
from kvcheck.store.ring import natural_key

#: Defaults: requests/s per node to add a node above and remove one below; windows in a row.
ABOVE, BELOW, SUSTAIN = 200.0, 50.0, 3


class PolicyError(ValueError):
    """An autoscaling policy that cannot work (the message names the setting)."""


@dataclass(frozen=True, slots=True)
class Policy:
    """When to add and remove nodes. Loads are requests per second per member."""

    minimum: int
    maximum: int
    above: float = ABOVE
    below: float = BELOW
    sustain: int = SUSTAIN

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise PolicyError(f"--autoscale MIN..MAX needs 1 <= MIN <= MAX, not "
                              f"{self.minimum}..{self.maximum}")
        if not 0 <= self.below < self.above:
            raise PolicyError(f"--scale-down-below ({self.below}) must be below "
                              f"--scale-up-above ({self.above}) and not negative")
        if self.sustain < 1:
            raise PolicyError("--sustain must be at least 1 window")

    @classmethod
    def parse_range(cls, text: str) -> tuple[int, int]:
        """``"3..6"`` -> ``(3, 6)``. Raises PolicyError."""
        low, sep, high = text.partition("..")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise PolicyError(f"--autoscale takes MIN..MAX (like 3..6), not {text!r}")
        return int(low), int(high)


@dataclass(frozen=True, slots=True)
class Decision:
    """Add or remove a node, and the load that caused it."""

    action: Literal["add", "remove"]
    members: int
    load_per_node: float
    windows: int
    reason: str


class Autoscaler:
    """Turns a series of load measurements into decisions (see the module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._high = 0
        self._low = 0

    def observe(self, load_per_node: float, members: int) -> Decision | None:
        """One window's load with ``members`` members; a decision, or None."""
        policy = self.policy
        self._high = self._high + 1 if load_per_node > policy.above else 0
        self._low = self._low + 1 if load_per_node < policy.below else 0
        decision = None
        if members < policy.minimum:
            decision = Decision("add", members, load_per_node, 0,
                                f"below the minimum of {policy.minimum} members")
        elif members > policy.maximum:
            decision = Decision("remove", members, load_per_node, 0,
                                f"above the maximum of {policy.maximum} members")
        elif self._high >= policy.sustain and members < policy.maximum:
            decision = Decision("add", members, load_per_node, self._high,
                                f"load above {policy.above:g}/s per node for {self._high} "
                                f"windows")
        elif self._low >= policy.sustain and members > policy.minimum:
            decision = Decision("remove", members, load_per_node, self._low,
                                f"load below {policy.below:g}/s per node for {self._low} "
                                f"windows")
        if decision is not None:
            self._high = self._low = 0
        return decision


async def requests_served(cluster: DockerCluster, members: list[str]) -> dict[str, int]:
    """Each member's count of coordinated gets and puts so far (members that do not answer
    are left out)."""
    counts: dict[str, int] = {}

    async def one(node: str) -> None:
        try:
            async with StoreClient(cluster.host(node), PORT, timeout=2) as client:
                counters = (await client.status())["node"]["counters"]
        except StoreError:
            return
        counts[node] = counters.get("get", 0) + counters.get("put", 0)

    async with trio.open_nursery() as nursery:
        for node in members:
            nursery.start_soon(one, node)
    return counts


async def autoscale(cluster: DockerCluster, policy: Policy, every: float, log_file: Path,
                    say: Callable[[str], None],
                    changed: Callable[[list[str]], None]) -> None:
    """Measure the load every ``every`` seconds and carry out the decisions, until cancelled;
    ``changed`` gets the members after each join or leave. Raises BackendError when a join or
    leave fails."""
    scaler = Autoscaler(policy)
    members = sorted(cluster.nodes, key=natural_key)
    before, since = await requests_served(cluster, members), trio.current_time()
    while True:
        await trio.sleep(every)
        now, at = await requests_served(cluster, members), trio.current_time()
        served = sum(now[n] - before[n] for n in now if n in before)
        load = served / (at - since) / len(members)
        decision = scaler.observe(load, len(members))
        if decision is not None:
            node = (_next_id(cluster) if decision.action == "add"
                    else (cluster.joined or sorted(members, key=natural_key))[-1])
            _log(log_file, decision, node, say)
            if decision.action == "add":
                await cluster.join(node, via=members[0])
                members.append(node)
            else:
                await cluster.leave(node)
                members.remove(node)
            say(f"autoscale: {len(members)} members now: {', '.join(members)}")
            changed(members)
            now, at = await requests_served(cluster, members), trio.current_time()
        before, since = now, at


def _next_id(cluster: DockerCluster) -> str:
    """A node id never used in this cluster."""
    return f"n{max(int(n[1:]) for n in cluster.created if n[1:].isdigit()) + 1}"


def _log(log_file: Path, decision: Decision, node: str, say: Callable[[str], None]) -> None:
    say(f"autoscale: {decision.action} {node}: {decision.reason} (load "
        f"{decision.load_per_node:.1f}/s per node, {decision.members} members)")
    entry = {"time": time.time(), "node": node, **asdict(decision),
             "load_per_node": round(decision.load_per_node, 3)}
    with log_file.open("a") as f:
        f.write(json.dumps(entry) + "\n")
