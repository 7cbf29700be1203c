"""Anti-entropy sessions: comparing the Merkle trees a node shares with a peer
(:mod:`kvcheck.store.antientropy`) and exchanging the keys on which they disagree.

Every ``antientropy_interval_ms`` a node opens one session, rotating through its live peers; a
peer that gossip shows back from suspicion or down gets a *catch-up* session within
:data:`CATCH_UP_S`. The opener sends its root (``TreeLevel`` level 0); the two sides then take
turns, each answering with its hashes of the children of the nodes that differ, down to the
leaves — the opener gets the odd levels, so the leaves' hashes reach it (the tree's depth is
odd). There the opener exchanges keys only for leaves that differed in its previous comparison
with that peer too (a difference that lasts, not a write still on its way), at most
:data:`LEAVES_PER_EXCHANGE`: it sends the keys of those leaves and their digests
(``LeafKeys``); the peer sends its versions of every key on which the two disagree (``Replicate``
repairs, tombstones included) and asks for the opener's (``KeyRequest``). Merging is ``sync``,
so whichever side sent a key, both converge. Leaves still to confirm, or over the limit, get a
*follow-up* session soon.

No session runs while the trees are being built (a slice of :data:`BUILD_SLICE` keys per event,
after start and after every ring change), nor during a join or leave: every key a gainer has
yet to pull would show as a difference, and streaming them is the transition's own work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from kvcheck.store.antientropy import (
    DEPTH,
    FANOUT,
    LEAVES,
    SharedHashes,
    leaf_of,
    live,
    versions_digest,
)
from kvcheck.store.context import Context
from kvcheck.store.events import Action, Now, Send, StartTimer, Tick
from kvcheck.store.ids import REPAIR_REQUEST, SessionId
from kvcheck.store.messages import KeyRequest, LeafKeys, Replicate, TreeLevel
from kvcheck.store.replica import Replica, Unavailable
from kvcheck.store.ring import Ring
from kvcheck.store.storage import Storage

#: Seconds between the extra anti-entropy sessions: a catch-up with a peer that came back, and
#: follow-ups (confirming differing leaves, or exchanging the leaves one exchange left over).
CATCH_UP_S = 0.2
#: An anti-entropy session not finished after this many seconds is forgotten.
ANTIENTROPY_SESSION_S = 30.0
#: Keys the build of the anti-entropy hashes reads per slice, and the pause after a failed one.
BUILD_SLICE = 2000
BUILD_RETRY_S = 1.0
#: Differing leaves whose keys one anti-entropy exchange lists, at most (a sixteenth of the tree).
LEAVES_PER_EXCHANGE = LEAVES // FANOUT


@dataclass(frozen=True, slots=True)
class _Session:
    """A session this node opened."""

    peer: str
    started: float  # monotonic time
    follow_up: bool


@dataclass(frozen=True, slots=True)
class _Planned:
    """A session to open soon: a catch-up, or a follow-up."""

    peer: str
    follow_up: bool


class AntiEntropy:
    """The sessions this node opened, by id; the sessions it plans; the leaves that differed in
    the last comparison with each peer; and the building of the trees (``shared``)."""

    def __init__(self, context: Context, replica: Replica, shared: SharedHashes) -> None:
        self._context = context
        self._replica = replica
        self._shared = shared
        self._sessions: dict[SessionId, _Session] = {}
        self._next_turn = 0
        self._planned: deque[_Planned] = deque()
        #: per peer, the leaves that differed in the last comparison and were not exchanged
        self._suspect: dict[str, set[int]] = {}
        self._build_due = False

    # -- timers --

    def round(self, now: Now, out: list[Action]) -> None:
        """Compare the whole tree shared with one live peer; rounds rotate through peers."""
        context = self._context
        out.append(StartTimer(Tick.ANTIENTROPY, context.cluster.antientropy_interval_ms / 1000))
        expired = now.monotonic - ANTIENTROPY_SESSION_S
        self._sessions = {id: s for id, s in self._sessions.items() if s.started >= expired}
        peers = [m for m in context.placement.members()
                 if m != context.node_id and context.membership.state(m) == "alive"]
        if not peers:
            return
        turn, self._next_turn = self._next_turn, self._next_turn + 1
        self._open(peers[turn % len(peers)], False, now, out)

    def open_planned(self, now: Now, out: list[Action]) -> None:
        """Open the next session :meth:`plan` queued."""
        planned = self._planned.popleft()
        if self._context.membership.state(planned.peer) == "alive":
            self._open(planned.peer, planned.follow_up, now, out)
        if self._planned:
            out.append(StartTimer(Tick.CATCH_UP, CATCH_UP_S))

    def build_step(self, out: list[Action]) -> None:
        """Build the shared trees a slice at a time (see :class:`SharedHashes`)."""

        def step(storage: Storage) -> bool:
            return self._shared.build_step(lambda where: storage.scan(where=where), BUILD_SLICE)

        done = self._replica.attempt(step)
        if isinstance(done, Unavailable):
            self._shared.rebuild()
            out.append(StartTimer(Tick.BUILD, BUILD_RETRY_S))
        elif done:
            self._context.counters["antientropy_builds"] += 1
        else:
            out.append(StartTimer(Tick.BUILD, 0.0))

    # -- the node's news --

    def plan(self, peer: str, follow_up: bool, out: list[Action]) -> None:
        """Compare with ``peer`` soon (within ``CATCH_UP_S`` per session queued before it):
        a catch-up with a peer back from suspicion or down, or a follow-up."""
        if any(planned.peer == peer for planned in self._planned):
            return
        if not self._planned:
            out.append(StartTimer(Tick.CATCH_UP, CATCH_UP_S))
        self._planned.append(_Planned(peer, follow_up))

    def ring_changed(self, ring: Ring) -> None:
        """The ring keys are headed for is now ``ring``: the trees must be built again."""
        self._shared.rebuild(ring)
        self._build_due = True

    def resume_build(self, out: list[Action]) -> None:
        """Start building the trees again if the ring changed since the last call."""
        if self._build_due:
            self._build_due = False
            out.append(StartTimer(Tick.BUILD, 0.0))

    # -- messages --

    def tree_level(self, peer: str, message: TreeLevel, out: list[Action]) -> None:
        """The peer's hashes at ``message.level``: answer with ours below the nodes that
        differ; at the leaves (always reached by the session's opener), exchange the keys of
        those that differ (:meth:`_exchange_leaves`)."""
        origin, number, level = message.origin, message.session, message.level
        counters = self._context.counters
        ours = origin == self._context.node_id
        if not ours and origin != peer:
            counters["unexpected_messages"] += 1
            return
        session = self._sessions.get(SessionId(number)) if ours else None
        if ours and (session is None or session.peer != peer):
            counters["late_replies"] += 1  # a session we forgot
            return
        if not 0 <= level <= DEPTH or level % 2 != ours:  # the opener gets the odd levels
            counters["unexpected_messages"] += 1
            return
        if not self._can_compare(peer):
            return
        differing = sorted({i for i, h in message.hashes if 0 <= i < FANOUT ** level
                            and self._shared.hash(peer, level, i) != h})
        if not differing:
            if ours:
                del self._sessions[SessionId(number)]
                self._suspect.pop(peer, None)
            counters["antientropy_in_sync"] += 1
        elif level < DEPTH:
            children = [(c, self._shared.hash(peer, level + 1, c))
                        for i in differing for c in range(i * FANOUT, (i + 1) * FANOUT)]
            counters["antientropy_hashes_sent"] += len(children)
            out.append(Send(peer, TreeLevel(origin, number, level + 1, tuple(children))))
        else:
            self._exchange_leaves(peer, SessionId(number), differing, out)

    def leaf_keys(self, peer: str, message: LeafKeys, out: list[Action]) -> None:
        """The peer's keys in leaves that differ: for every key on which we disagree, send our
        versions (tombstones included) and ask for theirs."""
        if message.origin != peer:
            self._context.counters["unexpected_messages"] += 1
            return
        leaves = tuple(leaf for leaf in message.leaves if 0 <= leaf < LEAVES)
        mine = self._keys_in(peer, leaves[:LEAVES_PER_EXCHANGE])
        if isinstance(mine, Unavailable):
            return
        theirs = dict(message.keys)
        wanted = tuple(key for key in sorted(mine.keys() | theirs.keys())
                       if mine.get(key) != theirs.get(key))
        for key in wanted:
            self._send_versions(peer, key, out)
        if wanted:
            self._context.counters["antientropy_keys_requested"] += len(wanted)
            out.append(Send(peer, KeyRequest(message.session, wanted)))

    def key_request(self, peer: str, message: KeyRequest, out: list[Action]) -> None:
        """The peer asks for our versions of these keys."""
        for key in message.keys:
            self._send_versions(peer, key, out)

    # -- sessions --

    def _open(self, peer: str, follow_up: bool, now: Now, out: list[Action]) -> None:
        """Send ``peer`` the root of the tree we share (when :meth:`_can_compare`)."""
        if not self._can_compare(peer):
            return
        session = self._context.ids.session()
        self._sessions[session] = _Session(peer, now.monotonic, follow_up)
        self._context.counters["antientropy_rounds"] += 1
        self._context.counters["antientropy_hashes_sent"] += 1
        out.append(Send(peer, TreeLevel(self._context.node_id, session, 0,
                                        ((0, self._shared.hash(peer, 0, 0)),))))

    def _can_compare(self, peer: str) -> bool:
        """Whether a session with ``peer`` can go on: not while the tree is being built, or when
        ``peer`` is not in the ring it is built for (a member leaving or joining), and not during
        a join or leave (see the module docstring)."""
        if self._context.placement.in_transition:
            self._context.counters["antientropy_paused"] += 1
            return False
        if not self._shared.ready_for(peer):
            self._context.counters["antientropy_not_ready"] += 1
            return False
        return True

    def _exchange_leaves(self, peer: str, session: SessionId, differing: list[int],
                         out: list[Action]) -> None:
        """End a session we opened: send ``peer`` our keys of the leaves that differ now and
        differed in the previous comparison too, at most ``LEAVES_PER_EXCHANGE``. Whatever is
        left — leaves to confirm, leaves over the limit — gets a follow-up session soon."""
        follow_up = self._sessions.pop(session).follow_up
        confirmed = [leaf for leaf in differing if leaf in self._suspect.get(peer, ())]
        exchanged = confirmed[:LEAVES_PER_EXCHANGE]
        self._suspect[peer] = set(differing) - set(exchanged)
        if len(confirmed) > len(exchanged) or (len(differing) > len(confirmed) and not follow_up):
            self.plan(peer, True, out)
        if not exchanged:
            return
        keys = self._keys_in(peer, exchanged)
        if isinstance(keys, Unavailable):
            return
        self._context.counters["antientropy_keys_sent"] += len(keys)
        out.append(Send(peer, LeafKeys(self._context.node_id, session, tuple(exchanged),
                                       tuple(keys.items()))))

    def _keys_in(self, peer: str, leaves: Sequence[int]) -> dict[bytes, bytes] | Unavailable:
        """``key -> digest of its versions`` for the live keys in ``leaves`` that this node
        shares with ``peer``: one filtered scan of storage."""
        wanted = set(leaves)

        def shared(key: bytes) -> bool:
            return leaf_of(key) in wanted and peer in self._shared.peers_sharing(key)

        return self._replica.attempt(lambda storage: {
            key: versions_digest(versions)
            for key, versions in storage.scan(where=shared) if live(versions)})

    def _send_versions(self, peer: str, key: bytes, out: list[Action]) -> None:
        versions = self._replica.read(key)
        if not isinstance(versions, Unavailable) and versions:
            self._context.counters["antientropy_repairs_sent"] += 1
            out.append(Send(peer, Replicate(REPAIR_REQUEST, key, tuple(versions))))
