"""What an outage did to the clients: the calls invoked while a fault was on, by key, by operation
and by whether they went through a node the fault took away — the figures behind the claim that
a key whose replicas span the zones survives losing one (``docs/store.md``).

A fault's window runs from its ``start`` event (``info``: the fault is on) to its ``stop``
event's invocation (before any node is back); a call belongs to it by its invocation. Final
reads are left out. Which nodes hold each key is what ``final-state.json`` names.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: ``(key, f, through a node the fault took?)`` -> ``[(seconds after the start, ok?)]``.
Calls = dict[tuple[str, str, bool], list[tuple[float, bool]]]


@dataclass(slots=True)
class Outage:
    """One fault's window (module docstring): ``detail`` is its start event's value."""

    detail: dict[str, Any]
    lost: frozenset[str]
    replicas: dict[str, list[str]]
    calls: Calls = field(default_factory=lambda: defaultdict(list))

    @property
    def keys(self) -> set[str]:
        """The keys some call of the window was for."""
        return {key for key, _, _ in self.calls}

    def through(self, key: str, f: str, *, lost: bool) -> list[tuple[float, bool]]:
        """The calls of ``f`` on ``key`` through the lost nodes (``lost``) or the others."""
        return self.calls.get((key, f, lost), [])

    def replicas_lost(self, key: str) -> int:
        """How many of ``key``'s replicas the fault took."""
        return len(set(self.replicas.get(key, ())) & self.lost)


def outages(run_dir: Path, kind: str | None = None) -> list[Outage]:
    """The windows of the run's faults (of ``kind`` only, if given), in the order they
    started. Raises OSError or ValueError for a run directory without a readable history or
    final state."""
    lines = (run_dir / "history.jsonl").read_text().splitlines()[1:]
    ops = [json.loads(line) for line in lines]
    replicas = json.loads((run_dir / "final-state.json").read_text())["replicas"]
    ok: dict[int, bool] = {}  # each client invocation's index -> whether it succeeded
    invoked: dict[Any, int] = {}
    for op in ops:
        if op["process"] == "nemesis" or op.get("final"):
            continue
        if op["type"] == "invoke":
            invoked[op["process"]] = op["index"]
        else:
            ok[invoked.pop(op["process"])] = op["type"] == "ok"
    on: dict[str, Outage] = {}
    done: list[Outage] = []
    for op in ops:
        if op["process"] == "nemesis":
            fault = (op.get("value") or {}).get("fault")
            if not isinstance(fault, str):  # ready, unready: no fault of its own
                continue
            if op["f"].startswith("start-") and op["type"] == "info" and kind in (None, fault):
                on[fault] = Outage({**op["value"], "start_ns": op["time"]},
                                   frozenset(op["value"]["targets"]), replicas)
            elif op["f"].startswith("stop-") and op["type"] == "invoke" and fault in on:
                done.append(on.pop(fault))
        elif op["type"] == "invoke" and not op.get("final"):
            for outage in on.values():
                at = (op["time"] - outage.detail["start_ns"]) / 1e9
                outage.calls[op["key"], op["f"], op["node"] in outage.lost].append(
                    (at, ok.get(op["index"], False)))
    return sorted([*done, *on.values()], key=lambda o: o.detail["start_ns"])
