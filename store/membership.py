"""Membership and failure detection by gossip, free of I/O.

Theory of operation
-------------------
Every node keeps a list of all members with a *heartbeat* each: a pair (generation, counter),
where the generation grows every time the node starts (so a restarted node's heartbeat beats
its previous life's) and the counter every gossip interval. Every interval a node bumps its own
counter and sends its whole list — each member's heartbeat and whether the sender currently
suspects it — to a few random peers. A receiver keeps, per member, the highest heartbeat it has
heard of; a heartbeat that grows means the member was alive recently. A node is the authority on
its own heartbeat: what it says of itself replaces what others said (a node whose data was wiped
starts its generations again).

When a member's heartbeat has not grown for ``suspect_after`` seconds (monotonic time: wall-clock
skew cannot cause it), this node *suspects* it. Suspicion alone is one source; the member is
marked *down* only when a second, independent source agrees:

- another member's gossip says it suspects the same member too; or
- an *indirect probe* fails: this node asks another member to probe the suspect, and that member
  reports that the suspect did not answer within ``probe_timeout``.

So a node that merely cannot hear one peer (an asymmetric cut, a slow link) does not declare it
down while the rest of the cluster still hears it. A member whose heartbeat grows again — a
paused process resumed, a partition healed — is alive again at once, whatever its state.

States: ``alive`` -> ``suspect`` -> ``down`` -> (heartbeat grows) ``alive``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

State = Literal["alive", "suspect", "down"]


Heartbeat = tuple[int, int]  # (generation, counter)


@dataclass(frozen=True, slots=True)
class GossipEntry:
    """What one node says about one member: its highest heartbeat heard, and suspicion."""

    node_id: str
    heartbeat: Heartbeat
    suspected: bool



@dataclass(slots=True)
class MemberView:
    """This node's view of one member."""

    node_id: str
    heartbeat: Heartbeat = (0, 0)
    state: State = "alive"
    heard_at: float = 0.0  # monotonic time the heartbeat last grew
    suspected_by: set[str] = field(default_factory=set)
    probe_started: float | None = None  # when an indirect probe was last asked for


@dataclass(frozen=True, slots=True)
class Change:
    """A member changed state, and why (for logs and status)."""

    node_id: str
    state: State
    reason: str


class Membership:
    """One node's membership list. Pure: time comes in, messages to send go out."""

    def __init__(self, me: str, members: Iterable[str], *, generation: int,
                 suspect_after: float, probe_timeout: float, fanout: int,
                 rng: random.Random) -> None:
        self.me = me
        self.suspect_after = suspect_after
        self.probe_timeout = probe_timeout
        self.fanout = fanout
        self.rng = rng
        self.views = {m: MemberView(m) for m in members}
        self.views[me] = MemberView(me, (generation, 0))

    def begin(self, now: float) -> None:
        """Start the clocks: every member counts as heard of at ``now``."""
        for view in self.views.values():
            view.heard_at = now

    def track(self, members: Iterable[str], now: float) -> None:
        """Follow exactly ``members`` (and this node): new ones count as heard of at ``now``,
        ones no longer listed are forgotten (they left the cluster)."""
        wanted = set(members) | {self.me}
        for node_id in set(self.views) - wanted:
            del self.views[node_id]
        for node_id in sorted(wanted - set(self.views)):  # the order of check()'s probes
            self.views[node_id] = MemberView(node_id, heard_at=now)

    def state(self, node_id: str) -> State:
        """A member's state; ``down`` for one this node does not follow."""
        view = self.views.get(node_id)
        return "down" if view is None else view.state

    def up(self) -> set[str]:
        """Members not marked down (suspects included: they may still answer)."""
        return {m for m, v in self.views.items() if v.state != "down"}

    # -- gossip --

    def gossip(self) -> tuple[list[str], list[GossipEntry]]:
        """Bump this node's heartbeat; return the peers to gossip to and what to tell them.

        Gossip goes to ``fanout`` random members that are not down, and to one random down
        member, so that a member that comes back learns of the others.
        """
        mine = self.views[self.me]
        mine.heartbeat = (mine.heartbeat[0], mine.heartbeat[1] + 1)
        others = sorted(m for m in self.views if m != self.me)
        live = [m for m in others if self.views[m].state != "down"]
        dead = [m for m in others if self.views[m].state == "down"]
        targets = self.rng.sample(live, min(self.fanout, len(live)))
        if dead:
            targets.append(self.rng.choice(dead))
        entries = [GossipEntry(v.node_id, v.heartbeat, v.state != "alive")
                   for _, v in sorted(self.views.items())]
        return targets, entries

    def merge(self, sender: str, entries: Sequence[GossipEntry], now: float) -> list[Change]:
        """Take in a peer's gossip. Returns the state changes it caused."""
        changes: list[Change] = []
        for entry in entries:
            view = self.views.get(entry.node_id)
            if view is None or entry.node_id == self.me:
                continue
            first_hand = sender == entry.node_id and entry.heartbeat != view.heartbeat
            if entry.heartbeat > view.heartbeat or first_hand:
                view.heartbeat, view.heard_at = entry.heartbeat, now
                view.suspected_by.clear()
                view.probe_started = None
                if view.state != "alive":
                    view.state = "alive"
                    changes.append(Change(view.node_id, "alive", f"heartbeat grew (via {sender})"))
            elif entry.suspected and sender != entry.node_id:
                view.suspected_by.add(sender)
            else:
                view.suspected_by.discard(sender)
            if view.state == "suspect" and view.suspected_by:
                view.state = "down"
                changes.append(Change(view.node_id, "down",
                                      f"suspected here and by {min(view.suspected_by)}"))
        return changes

    # -- detection --

    def check(self, now: float) -> tuple[list[Change], list[tuple[str, str]]]:
        """Suspect members whose heartbeat stalled; return changes and indirect probes to ask
        for, as ``(helper, suspect)`` pairs."""
        changes: list[Change] = []
        probes: list[tuple[str, str]] = []
        for view in self.views.values():
            if view.node_id == self.me or view.state != "alive":
                continue
            if now - view.heard_at >= self.suspect_after:
                view.state = "suspect"
                changes.append(Change(view.node_id, "suspect",
                                      f"no heartbeat for {now - view.heard_at:.1f} s"))
                if view.suspected_by:
                    view.state = "down"
                    changes.append(Change(view.node_id, "down",
                                          f"suspected here and by {min(view.suspected_by)}"))
        for view in self.views.values():
            idle = (view.probe_started is None
                    or now - view.probe_started > 2 * self.probe_timeout)
            if view.state == "suspect" and idle:
                helpers = sorted(m for m, v in self.views.items()
                                 if m not in (self.me, view.node_id) and v.state == "alive")
                if helpers:
                    view.probe_started = now
                    probes.append((self.rng.choice(helpers), view.node_id))
        return changes, probes

    def probe_result(self, suspect: str, reachable: bool, helper: str) -> list[Change]:
        """An indirect probe of ``suspect`` through ``helper`` came back."""
        view = self.views.get(suspect)
        if view is None or view.state != "suspect":
            return []
        view.probe_started = None
        if reachable:
            return []
        view.state = "down"
        return [Change(suspect, "down", f"suspected here and unreachable from {helper}")]

    def status(self, now: float) -> list[dict[str, object]]:
        """The view for ``/status``."""
        return [
            {"node_id": v.node_id, "state": "self" if v.node_id == self.me else v.state,
             "heartbeat": list(v.heartbeat),
             "silent_s": round(now - v.heard_at, 3) if v.node_id != self.me else 0.0,
             "suspected_by": sorted(v.suspected_by)}
            for _, v in sorted(self.views.items())
        ]
