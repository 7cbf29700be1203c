"""What a driver and a :class:`~kvcheck.store.node.Node` exchange: the time, events in, actions
out, and the timers the node asks for. :mod:`kvcheck.store.node` re-exports every name here as
its public API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from kvcheck.store.ids import ProbeId, PullId, RequestId
from kvcheck.store.messages import Message
from kvcheck.store.versions import Clock, Version

# -- time --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Now:
    """The time an event happens: ``monotonic`` seconds for timeouts, ``wall_ms`` for stamps."""

    monotonic: float
    wall_ms: int


# -- timers ------------------------------------------------------------------------------------


class Tick(Enum):
    """The node's recurring timers; each part that owns one starts it again when it fires."""

    SYNC = "sync"  # the storage's fsync, with ``fsync = "interval"`` (the replica)
    PURGE = "purge"  # tombstones past their grace period (the replica)
    GOSSIP = "gossip"  # a gossip round, hinted handoff, a transition moving on (the node)
    ANTIENTROPY = "antientropy"  # an anti-entropy round
    CATCH_UP = "catch-up"  # the next catch-up or follow-up anti-entropy session
    BUILD = "antientropy-build"  # the next slice of building the anti-entropy trees


@dataclass(frozen=True, slots=True)
class RequestTimeout:
    """A coordinated request that has not reached its quorum by now fails."""

    request: RequestId


@dataclass(frozen=True, slots=True)
class ProbeTimeout:
    """A probe sent for another node that has had no answer by now: the target is unreachable."""

    probe: ProbeId


@dataclass(frozen=True, slots=True)
class PullTimeout:
    """A pull's source that has not sent its next batch by now has failed."""

    pull: PullId


Timer = Tick | RequestTimeout | ProbeTimeout | PullTimeout


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientGet:
    request: int
    key: bytes
    r: int | None = None


@dataclass(frozen=True, slots=True)
class ClientPut:
    """A put, or a delete when ``value`` is None. ``context`` is the client's causal context."""

    request: int
    key: bytes
    value: bytes | None
    context: Clock = field(default_factory=dict)
    w: int | None = None


@dataclass(frozen=True, slots=True)
class Received:
    peer: str
    message: Message


@dataclass(frozen=True, slots=True)
class Undeliverable:
    """The driver could not hand ``message`` to ``peer``: it surely was not delivered."""

    peer: str
    message: Message


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: Timer


Event = ClientGet | ClientPut | Received | Undeliverable | TimerFired


# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """A get's answer: the siblings (tombstones included; empty if the key is unknown)."""

    versions: tuple[Version, ...]
    context: Clock


@dataclass(frozen=True, slots=True)
class Written:
    """A put's answer: the causal context of the version it wrote, and how many siblings the
    key has with it on the replica that stamped it."""

    context: Clock
    siblings: int = 1


@dataclass(frozen=True, slots=True)
class Failed:
    """A request that did not reach its quorum. ``applied`` is about puts; gets say "no"."""

    reason: str
    applied: Literal["no", "unknown"]


@dataclass(frozen=True, slots=True)
class TooManySiblings:
    """A put refused, surely not applied: it supersedes none of the ``siblings`` the key has on
    the replica that was to stamp it, which are ``siblings_max`` or more."""

    siblings: int
    siblings_max: int


Response = Found | Written | Failed | TooManySiblings


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a node will not leave; ``later`` when it may once a change in progress is over."""

    reason: str
    later: bool


@dataclass(frozen=True, slots=True)
class Send:
    peer: str
    message: Message


@dataclass(frozen=True, slots=True)
class Respond:
    request: int
    response: Response


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Fire ``TimerFired(timer)`` after ``delay`` seconds (replacing a pending one)."""

    timer: Timer
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: Timer


Action = Send | Respond | StartTimer | CancelTimer
