"""The nemesis at work during a run: faults started and stopped on their schedule, each recorded
in the history and in ``schedule.json`` (:mod:`kvcheck.nemesis.schedule`).

Where the schedule comes from (``docs/nemesis.md``):

* ``overlap`` (the default): each fault kind on its own seeded timeline — a calm of about
  ``nemesis_interval`` (half to one and a half times it), a fault held for ``nemesis_interval``,
  and again — so faults of different kinds overlap;
* ``turns``: one fault at a time, the kinds in turn, each after a calm;
* a schedule given (``kvcheck run --schedule FILE``): exactly its faults, at their times.

Overlaps are sound. Faults overlap in time, but their starts and stops take turns (a node is
never resumed while it is being killed); a fault that ends as the next of its kind starts stops
first. Healing one kind never undoes another: a partition's heal undoes only its own cuts (a
zone's network outage keeps its), packet faults live in their own queueing discipline, a
restarted node keeps its clock offset (it lives in a file libfaketime reads). A killed node
(``kill``, ``power``, a zone's power outage) that was paused is killed (recorded as
``was_paused``), and the pause no longer resumes it; a pause, a kill or a power cut leaves out
the nodes that are down. A node restarted while another fault is on is not waited for (a
partition may keep it from ever looking ready): the faults go on, and a ``ready`` event in the
history records when it became ready, or an ``unready`` one that it had not within
:data:`READY_WATCH_S`; the final heal waits for every node. A membership change needs every
member reachable to finish in bounded time: it is skipped while another fault is on, and other
faults are skipped while it is going on. A skipped fault is recorded, with why, in
``schedule.json`` and as a ``skip-<kind>`` event in the history.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import trio

from kvcheck.harness.backend import Backend, execute
from kvcheck.harness.databases import Capability, guard
from kvcheck.harness.history import HistoryWriter
from kvcheck.nemesis import (
    Action,
    CutPower,
    Fault,
    KillNodes,
    Nemesis,
    Planned,
    RestartNodes,
    ResumeNodes,
    StrobeClocks,
    fault_of,
)

#: Seconds a node restarted while other faults are on is watched for becoming ready.
READY_WATCH_S = 30.0


class FaultRunner:
    """Runs the faults of one test on ``backend``: ``schedule``'s, or else drawn by ``nemesis``
    in ``mode`` (``overlap`` or ``turns``). :attr:`record` is what ``schedule.json`` holds;
    ``shown`` is kept listing the faults on now, in a few words each (for the live view)."""

    def __init__(self, backend: Backend, history: HistoryWriter, *, mode: str,
                 interval: float, rng: random.Random, nemesis: Nemesis | None = None,
                 schedule: Sequence[Planned] = (), shown: list[str] | None = None) -> None:
        self.backend, self.history, self.mode = backend, history, mode
        self.shown = [] if shown is None else shown
        self.interval, self.rng, self.nemesis, self.schedule = interval, rng, nemesis, schedule
        self.record: list[Planned] = []
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self._active: dict[str, tuple[Planned, Fault]] = {}
        # Faults overlap in time, but their starts and stops take turns: a node is never
        # resumed while it is being killed, nor paused while it is being restarted.
        self._transition = trio.Lock()
        self._strobe: trio.CancelScope | None = None
        self._background: trio.Nursery | None = None
        self._watchers: trio.Nursery | None = None  # of nodes restarted while faults are on
        self._started = 0.0

    async def run(self, until: float) -> None:
        """Start and stop faults from now until trio time ``until``; faults still on then stay
        on until :meth:`stop_all`."""
        self._started = trio.current_time()
        async with trio.open_nursery() as watchers:
            self._watchers = watchers
            try:
                async with trio.open_nursery() as self._background:
                    if self.schedule:
                        for planned in self.schedule:
                            self._background.start_soon(self._scheduled, planned, until)
                    elif self.nemesis is not None and self.mode == "overlap":
                        for kind in self.nemesis.kinds:
                            self._background.start_soon(self._drawn, random.Random(
                                self.rng.randrange(2**32)), until, kind)
                    elif self.nemesis is not None:
                        self._background.start_soon(self._drawn, self.rng, until, None)
            finally:  # the final heal waits for every node: no more watching
                self._background = self._watchers = None
                watchers.cancel_scope.cancel()

    async def stop_all(self) -> None:
        """Stop every fault still on, the latest first."""
        for kind in reversed(list(self._active)):
            await self._stop(kind)

    # -- schedules --

    async def _scheduled(self, planned: Planned, until: float) -> None:
        start = self._started + planned.at
        if start >= until:
            self._skip(planned, "it starts after the clients stop")
            return
        await trio.sleep_until(start)
        if (fault := await self._start(planned, fault_of(planned))) is not None:
            await trio.sleep_until(min(until, start + planned.duration))
            await self._stop(planned.kind, fault)

    async def _drawn(self, rng: random.Random, until: float, kind: str | None) -> None:
        """Draw faults and hold each for an interval after a calm, until ``until``: of
        ``kind`` (its own timeline), or of each kind in turn (``None``)."""
        assert self.nemesis is not None
        while True:
            calm_until = trio.current_time() + self.interval * rng.uniform(0.5, 1.5)
            if calm_until + 1 >= until:
                return
            await trio.sleep_until(calm_until)
            drawn = kind or self.nemesis.next_kind
            if (fault := await self._draw_and_start(drawn, in_turn=kind is None)) is not None:
                await trio.sleep_until(min(until, calm_until + self.interval))
                await self._stop(drawn, fault)

    async def _draw_and_start(self, kind: str, in_turn: bool = False) -> Fault | None:
        """Draw a fault of ``kind`` (``in_turn``: the kind whose turn it is) and start it."""
        assert self.nemesis is not None
        primary = await self._primary() if self.nemesis.wants_primary(kind) else None
        fault = self.nemesis.next_fault(primary) if in_turn else self.nemesis.draw(kind, primary)
        planned = Planned(self._now(), self.interval, kind, fault.targets, fault.detail)
        return await self._start(planned, fault)

    # -- one fault --

    async def _start(self, planned: Planned, fault: Fault) -> Fault | None:
        """Start ``fault`` unless it cannot be combined with those on (then record why);
        return the fault as started, or None. One fault starts or stops at a time."""
        async with self._transition:
            return await self._start_now(planned, fault)

    async def _start_now(self, planned: Planned, fault: Fault) -> Fault | None:
        if planned.kind in self._active:  # one that ends as this one starts: it goes first
            await self._stop_now(planned.kind)
        admitted = self._admit(planned)
        if isinstance(admitted, str):
            self._skip(planned, admitted)
            return None
        if admitted != planned:
            planned, fault = admitted, fault_of(admitted)
        planned = dataclasses.replace(planned, at=self._now())
        self._active[planned.kind] = (planned, fault)
        self._show()
        description = fault.describe()
        self.history.record("nemesis", "invoke", f"start-{fault.kind}", value=description)
        for action in fault.start:
            if isinstance(action, StrobeClocks) and self._background is not None:
                self._strobe = trio.CancelScope()  # strobes on until the fault stops
                self._background.start_soon(self._strobing, action, self._strobe)
            else:
                await execute(self.backend, action)
        if _takes_down(fault):
            self.killed |= set(fault.targets)
            self.paused -= set(fault.targets)
        elif fault.kind == "pause":
            self.paused |= set(fault.targets)
        self.history.record("nemesis", "info", f"start-{fault.kind}", value=description)
        return fault

    def _admit(self, planned: Planned) -> Planned | str:
        """``planned`` as it can be combined with the faults on (targets left out, a note
        added), or why it cannot be at all (module docstring)."""
        others = [kind for kind in self._active if kind != planned.kind]
        if planned.kind == "membership" and others:
            return (f"a membership change needs every member reachable, and {', '.join(others)} "
                    "is on")
        if "membership" in others:
            return "a membership change is going on"
        down_kind = _takes_down(fault_of(planned))
        if (planned.kind == "pause" or down_kind) \
                and (down := set(planned.targets) & self.killed):
            left = tuple(n for n in planned.targets if n not in down)
            if not left:
                return "every target is down"
            planned = dataclasses.replace(planned, targets=left, params={
                **planned.params, "left_out_killed": sorted(down)})
        if down_kind and (was := sorted(set(planned.targets) & self.paused)):
            return dataclasses.replace(planned, params={**planned.params, "was_paused": was})
        return planned

    async def _stop(self, kind: str, fault: Fault | None = None) -> None:
        """Stop the fault of ``kind`` that is on — if ``fault`` is given, only if it is that
        one (the next of its kind may have stopped it already). One fault starts or stops at
        a time."""
        async with self._transition:
            active = self._active.get(kind)
            if active is not None and (fault is None or active[1] is fault):
                await self._stop_now(kind)

    async def _stop_now(self, kind: str) -> None:
        planned, fault = self._active[kind]
        value = {"fault": kind, "targets": list(fault.targets)}
        self.history.record("nemesis", "invoke", f"stop-{kind}", value=value)
        if kind == "clock" and self._strobe is not None:
            self._strobe.cancel()  # it writes no offset after this: its next await raises
            self._strobe = None
        del self._active[kind]
        self._show()
        for action in self._sound(fault.stop):
            await execute(self.backend, action)
            if (isinstance(action, RestartNodes) and not action.wait
                    and self._watchers is not None):
                self._watchers.start_soon(self._watch_ready, action.nodes)
        if _takes_down(fault):
            self.killed -= set(fault.targets)
        elif kind == "pause":
            self.paused -= set(fault.targets)
        self.record.append(dataclasses.replace(planned, duration=self._now() - planned.at))
        self.history.record("nemesis", "info", f"stop-{kind}", value=value)

    def _sound(self, actions: Sequence[Action]) -> list[Action]:
        """Stop actions as the faults still on allow: resume only nodes still paused (not
        killed since); wait for restarted nodes only when no other fault is on."""
        def sound(action: Action) -> Action:
            if isinstance(action, ResumeNodes):
                return ResumeNodes(tuple(n for n in action.nodes if n in self.paused))
            if isinstance(action, RestartNodes) and self._active:
                return RestartNodes(action.nodes, wait=False)
            return action
        return [sound(action) for action in actions]

    async def _watch_ready(self, nodes: Sequence[str]) -> None:
        """Record when each of ``nodes``, restarted while other faults are on, becomes ready
        (``ready``), or that it had not within :data:`READY_WATCH_S` (``unready``); stop
        watching a node that goes down again."""
        started, waiting = trio.current_time(), list(nodes)
        with trio.move_on_after(READY_WATCH_S):
            while waiting:
                for node in list(waiting):
                    if node in self.killed:
                        waiting.remove(node)
                        continue
                    with guard(f"ready({node!r})"):
                        ready = await self.backend.database.ready(node, self.backend)
                    if ready:
                        waiting.remove(node)
                        self.history.record("nemesis", "info", "ready", value={
                            "nodes": [node], "after_s": round(trio.current_time() - started, 3)})
                await trio.sleep(0.1)
        if waiting:
            self.history.record("nemesis", "info", "unready", value={
                "nodes": waiting, "waited_s": READY_WATCH_S})

    def _show(self) -> None:
        self.shown[:] = [_summary(fault.describe()) for _, fault in self._active.values()]

    def _skip(self, planned: Planned, why: str) -> None:
        self.record.append(dataclasses.replace(planned, skipped=why))
        self.history.record("nemesis", "info", f"skip-{planned.kind}", value={
            "fault": planned.kind, "targets": list(planned.targets), "skipped": why})

    async def _strobing(self, action: StrobeClocks, scope: trio.CancelScope) -> None:
        with scope:
            await execute(self.backend, action)

    async def _primary(self, limit: float = 3.0) -> str | None:
        """The node the database names as its primary, asked until it names one or ``limit``
        seconds pass (a failover may be under way)."""
        database = self.backend.database
        if Capability.PRIMARY not in database.capabilities:
            return None
        with trio.move_on_after(limit):
            while True:
                with guard("primary()"):
                    primary = await database.primary(self.backend)
                if primary is not None:
                    return primary
                await trio.sleep(0.2)
        return None

    def _now(self) -> float:
        return round(trio.current_time() - self._started, 3)


def _takes_down(fault: Fault) -> bool:
    """Whether ``fault`` takes its targets down until its stop restarts them (a kill, a power
    cut, a zone's power outage)."""
    return any(isinstance(action, KillNodes | CutPower) for action in fault.start)


def _summary(description: dict[str, Any]) -> str:
    text = f"{description['fault']} {','.join(description.get('targets', []))}"
    if "topology" in description:
        text += f" ({description['topology']})"
    elif "outage" in description:
        text += f" ({description['outage']} outage of zone {description.get('zone')})"
    return text
