"""Messages between nodes, and their binary framing.

Messages are nouns (``ReadRequest``); each is a frozen dataclass. On the wire a message is one
frame: a 4-byte big-endian length, then a msgpack array ``[tag, field, ...]``, then — on a
connection whose members share a secret — the frame's tag (:class:`~kvcheck.store.peer_auth.Seal`).
A connection opens with :data:`PREAMBLE` and the handshake of :mod:`kvcheck.store.peer_auth`
(:class:`Challenge`, :class:`Hello` naming the sender, :class:`Welcome`); after that every frame
is a message from that sender. :class:`FrameDecoder` turns bytes into messages without doing any
I/O, and raises :class:`ProtocolError` — which closes that connection only — on anything
malformed or failing its tag.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import msgpack

from kvcheck.store.membership import GossipEntry
from kvcheck.store.peer_auth import TAG_BYTES, AuthError, Seal
from kvcheck.store.placement import STATUSES, Record
from kvcheck.store.versions import (
    Clock,
    Dot,
    Version,
    decode_clock,
    decode_versions,
    encode_clock,
    encode_versions,
)

A = TypeVar("A")
B = TypeVar("B")

#: First bytes of a peer connection; HTTP requests never start like this.
PREAMBLE = b"KVPEER/2\n"
#: The largest frame accepted (a key's sibling set is far smaller).
MAX_FRAME = 16 * 1024 * 1024
#: The largest frame accepted before the handshake is over.
MAX_HANDSHAKE_FRAME = 1024
_LENGTH = struct.Struct(">I")


class ProtocolError(Exception):
    """A peer sent bytes that are not a valid frame or message."""


@dataclass(frozen=True, slots=True)
class Hello:
    """The connector's first message: who is sending, to which cluster, its nonce and its proof
    of membership (:mod:`kvcheck.store.peer_auth`)."""

    TAG: ClassVar[int] = 1
    node_id: str
    cluster: str
    nonce: bytes
    proof: bytes


@dataclass(frozen=True, slots=True)
class Challenge:
    """The acceptor's first message: the nonce the connector's proof must cover."""

    TAG: ClassVar[int] = 19
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    """The acceptor's answer to a good :class:`Hello`: its own proof of membership."""

    TAG: ClassVar[int] = 20
    proof: bytes


@dataclass(frozen=True, slots=True)
class StampRequest:
    """Ask a replica to create a new version of ``key`` (``value`` None is a delete).

    ``hint_for`` names the replica this node stands in for (sloppy quorum), if any.
    """

    TAG: ClassVar[int] = 2
    request: int
    key: bytes
    context: Clock
    value: bytes | None
    timestamp: int
    hint_for: str | None = None


@dataclass(frozen=True, slots=True)
class StampReply:
    """The stamping replica's new sibling set for ``key``; ``dot`` names the new version. The key
    lets a coordinator that gave up on the put still spread a stamp that arrives late."""

    TAG: ClassVar[int] = 3
    request: int
    key: bytes
    dot: Dot
    versions: tuple[Version, ...]


@dataclass(frozen=True, slots=True)
class Replicate:
    """Merge this sibling set into the replica's copy of ``key`` (as a stand-in for
    ``hint_for``, if set)."""

    TAG: ClassVar[int] = 4
    request: int
    key: bytes
    versions: tuple[Version, ...]
    hint_for: str | None = None


@dataclass(frozen=True, slots=True)
class ReplicateAck:
    """The replica has merged and stored the sibling set of request ``request``."""

    TAG: ClassVar[int] = 5
    request: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    TAG: ClassVar[int] = 6
    request: int
    key: bytes


@dataclass(frozen=True, slots=True)
class ReadReply:
    TAG: ClassVar[int] = 7
    request: int
    versions: tuple[Version, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    """The replica could not carry out request ``request`` (storage failure); nothing changed."""

    TAG: ClassVar[int] = 8
    request: int
    reason: str


@dataclass(frozen=True, slots=True)
class StampRefused:
    """The replica refused to stamp request ``request``: the write supersedes none of the
    ``siblings`` the key has there, which are ``siblings_max`` or more; nothing changed."""

    TAG: ClassVar[int] = 21
    request: int
    siblings: int


@dataclass(frozen=True, slots=True)
class Gossip:
    """The sender's membership list: each member's heartbeat and whether it suspects it, and
    every member's record (:mod:`kvcheck.store.placement`)."""

    TAG: ClassVar[int] = 9
    entries: tuple[GossipEntry, ...]
    records: tuple[Record, ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """Please probe ``target`` and tell me whether it answered (an indirect probe)."""

    TAG: ClassVar[int] = 10
    request: int
    target: str


@dataclass(frozen=True, slots=True)
class Probe:
    TAG: ClassVar[int] = 11
    request: int


@dataclass(frozen=True, slots=True)
class ProbeAck:
    TAG: ClassVar[int] = 12
    request: int


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The answer to a :class:`ProbeRequest`."""

    TAG: ClassVar[int] = 13
    request: int
    target: str
    reachable: bool


@dataclass(frozen=True, slots=True)
class TreeLevel:
    """Anti-entropy: the sender's Merkle hashes at ``level`` for these node indexes, in the
    session ``session`` that node ``origin`` opened."""

    TAG: ClassVar[int] = 14
    origin: str
    session: int
    level: int
    hashes: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class LeafKeys:
    """Anti-entropy: the keys, and their digests, in the leaves where the trees differ."""

    TAG: ClassVar[int] = 15
    origin: str
    session: int
    leaves: tuple[int, ...]
    keys: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """Anti-entropy: send me your versions of these keys."""

    TAG: ClassVar[int] = 16
    session: int
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A member gaining keys in the transition ``digest`` asks for the next batch of them
    after key ``after`` (None: from the start). ``unreachable`` names the members it cannot
    reach: the source also sends keys only they would (see
    :meth:`kvcheck.store.placement.Placement.should_send`)."""

    TAG: ClassVar[int] = 17
    request: int
    digest: bytes
    unreachable: tuple[str, ...]
    after: bytes | None


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """Keys for a :class:`StreamRequest`; ``cursor`` is the last key examined (ask after it
    next), None when the source has examined all its keys."""

    TAG: ClassVar[int] = 18
    request: int
    items: tuple[tuple[bytes, tuple[Version, ...]], ...]
    cursor: bytes | None


Message = (
    Hello | Challenge | Welcome | StampRequest | StampReply | Replicate | ReplicateAck
    | ReadRequest | ReadReply | Rejected | StampRefused | Gossip | ProbeRequest | Probe
    | ProbeAck | ProbeResult | TreeLevel | LeafKeys | KeyRequest | StreamRequest | StreamBatch
)


def _fields(message: Message) -> list[object]:
    match message:
        case Hello(node_id, cluster, nonce, proof):
            return [node_id, cluster, nonce, proof]
        case Challenge(nonce):
            return [nonce]
        case Welcome(proof):
            return [proof]
        case StampRequest(request, key, context, value, timestamp, hint_for):
            return [request, key, encode_clock(context), value, timestamp, hint_for]
        case StampReply(request, key, dot, versions):
            return [request, key, dot.actor, dot.counter, encode_versions(versions)]
        case Replicate(request, key, versions, hint_for):
            return [request, key, encode_versions(versions), hint_for]
        case ReplicateAck(request):
            return [request]
        case ReadRequest(request, key):
            return [request, key]
        case ReadReply(request, versions):
            return [request, encode_versions(versions)]
        case Rejected(request, reason):
            return [request, reason]
        case StampRefused(request, siblings):
            return [request, siblings]
        case Gossip(entries, records):
            return [[[e.node_id, *e.heartbeat, e.suspected] for e in entries],
                    [_record_fields(r) for r in records]]
        case ProbeRequest(request, target):
            return [request, target]
        case Probe(request) | ProbeAck(request):
            return [request]
        case ProbeResult(request, target, reachable):
            return [request, target, reachable]
        case TreeLevel(origin, session, level, hashes):
            return [origin, session, level, [list(pair) for pair in hashes]]
        case LeafKeys(origin, session, leaves, keys):
            return [origin, session, list(leaves), [list(pair) for pair in keys]]
        case KeyRequest(session, keys):
            return [session, list(keys)]
        case StreamRequest(request, digest, unreachable, after):
            return [request, digest, list(unreachable), after]
        case StreamBatch(request, items, cursor):
            return [request, [[key, encode_versions(versions)] for key, versions in items],
                    cursor]
    raise TypeError(f"not a message: {message!r}")


def _record_fields(r: Record) -> list[object]:
    tokens = struct.pack(f">{len(r.tokens)}Q", *r.tokens)
    return [r.node_id, r.address, r.zone, r.weight, r.status, r.version, tokens, r.view,
            r.streamed]


def encode_frame(message: Message, seal: Seal | None = None) -> bytes:
    """One frame holding ``message``, tagged by ``seal`` if given."""
    body = msgpack.packb([message.TAG, *_fields(message)], use_bin_type=True)
    if seal is None:
        return _LENGTH.pack(len(body)) + body
    return _LENGTH.pack(len(body)) + body + seal.tag(body)


def _int(x: object) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise ValueError("expected an integer")
    return x


def _bytes(x: object) -> bytes:
    if not isinstance(x, bytes):
        raise ValueError("expected bytes")
    return x


def _str(x: object) -> str:
    if not isinstance(x, str):
        raise ValueError("expected a string")
    return x


def _list(x: object) -> list[object]:
    if not isinstance(x, list):
        raise ValueError("expected a list")
    return x


def _pairs(raw: object, first: Callable[[object], A],
           second: Callable[[object], B]) -> tuple[tuple[A, B], ...]:
    pairs = []
    for item in _list(raw):
        if not (isinstance(item, list) and len(item) == 2):
            raise ValueError("expected a pair")
        pairs.append((first(item[0]), second(item[1])))
    return tuple(pairs)


def _bool(x: object) -> bool:
    if not isinstance(x, bool):
        raise ValueError("expected a boolean")
    return x


def _gossip_entries(raw: object) -> tuple[GossipEntry, ...]:
    if not isinstance(raw, list):
        raise ValueError("gossip entries must be a list")
    entries = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 4):
            raise ValueError("gossip entry must be [node, generation, counter, suspected]")
        heartbeat = (_int(item[1]), _int(item[2]))
        if min(heartbeat) < 0:
            raise ValueError("heartbeat must not be negative")
        entries.append(GossipEntry(_str(item[0]), heartbeat, _bool(item[3])))
    return tuple(entries)


def _records(raw: object) -> tuple[Record, ...]:
    records = []
    for item in _list(raw):
        if not (isinstance(item, list) and len(item) == 9):
            raise ValueError("a record must have 9 fields")
        status = _str(item[4])
        tokens = _bytes(item[6])
        if status not in STATUSES or len(tokens) % 8:
            raise ValueError(f"bad record for {item[0]!r}")
        weight, version = _int(item[3]), _int(item[5])
        if weight < 1 or version < 0 or not _str(item[0]) or not _str(item[2]):
            raise ValueError(f"bad id, zone, weight or version for {item[0]!r}")
        records.append(Record(
            _str(item[0]), _str(item[1]), _str(item[2]), weight, status, version,
            struct.unpack(f">{len(tokens) // 8}Q", tokens),
            _bytes(item[7]), _bytes(item[8])))
    return tuple(records)


def _optional_str(x: object) -> str | None:
    return None if x is None else _str(x)


def _optional_bytes(x: object) -> bytes | None:
    return None if x is None else _bytes(x)


def _decode(tag: object, f: list[object]) -> Message:
    match tag, len(f):
        case Hello.TAG, 4:
            return Hello(_str(f[0]), _str(f[1]), _bytes(f[2]), _bytes(f[3]))
        case Challenge.TAG, 1:
            return Challenge(_bytes(f[0]))
        case Welcome.TAG, 1:
            return Welcome(_bytes(f[0]))
        case StampRequest.TAG, 6:
            return StampRequest(_int(f[0]), _bytes(f[1]), decode_clock(f[2]),
                                _optional_bytes(f[3]), _int(f[4]), _optional_str(f[5]))
        case StampReply.TAG, 5:
            return StampReply(_int(f[0]), _bytes(f[1]), Dot(_str(f[2]), _int(f[3])),
                              tuple(decode_versions(f[4])))
        case Replicate.TAG, 4:
            return Replicate(_int(f[0]), _bytes(f[1]), tuple(decode_versions(f[2])),
                             _optional_str(f[3]))
        case ReplicateAck.TAG, 1:
            return ReplicateAck(_int(f[0]))
        case ReadRequest.TAG, 2:
            return ReadRequest(_int(f[0]), _bytes(f[1]))
        case ReadReply.TAG, 2:
            return ReadReply(_int(f[0]), tuple(decode_versions(f[1])))
        case Rejected.TAG, 2:
            return Rejected(_int(f[0]), _str(f[1]))
        case StampRefused.TAG, 2:
            return StampRefused(_int(f[0]), _int(f[1]))
        case Gossip.TAG, 2:
            return Gossip(_gossip_entries(f[0]), _records(f[1]))
        case ProbeRequest.TAG, 2:
            return ProbeRequest(_int(f[0]), _str(f[1]))
        case Probe.TAG, 1:
            return Probe(_int(f[0]))
        case ProbeAck.TAG, 1:
            return ProbeAck(_int(f[0]))
        case ProbeResult.TAG, 3:
            return ProbeResult(_int(f[0]), _str(f[1]), _bool(f[2]))
        case TreeLevel.TAG, 4:
            return TreeLevel(_str(f[0]), _int(f[1]), _int(f[2]), _pairs(f[3], _int, _bytes))
        case LeafKeys.TAG, 4:
            return LeafKeys(_str(f[0]), _int(f[1]), tuple(_int(x) for x in _list(f[2])),
                            _pairs(f[3], _bytes, _bytes))
        case KeyRequest.TAG, 2:
            return KeyRequest(_int(f[0]), tuple(_bytes(x) for x in _list(f[1])))
        case StreamRequest.TAG, 4:
            return StreamRequest(_int(f[0]), _bytes(f[1]), tuple(_str(x) for x in _list(f[2])),
                                 _optional_bytes(f[3]))
        case StreamBatch.TAG, 3:
            return StreamBatch(_int(f[0]), _pairs(f[1], _bytes,
                                                  lambda x: tuple(decode_versions(x))),
                               _optional_bytes(f[2]))
    raise ValueError(f"unknown message tag {tag!r} with {len(f)} fields")


def decode_body(body: bytes) -> Message:
    """Decode one frame's body. Raises :class:`ProtocolError`."""
    try:
        raw = msgpack.unpackb(body, raw=False)
        if not isinstance(raw, list) or not raw:
            raise ValueError("frame is not a non-empty array")
        return _decode(raw[0], raw[1:])
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"malformed message: {exc}") from None


class FrameDecoder:
    """Bytes in, messages out; keeps a partial frame between :meth:`feed` calls.

    :attr:`max_frame` bounds a frame's length, so the buffer's size; :attr:`seal`, once set,
    checks every later frame's tag. Either may change between two messages (after a handshake).
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self.max_frame = max_frame
        self.seal: Seal | None = None

    def feed(self, data: bytes) -> Generator[Message, None, None]:
        """Add received bytes and yield every message now complete.

        Raises :class:`ProtocolError` on a frame longer than the limit or a malformed message;
        the decoder is then unusable and the connection must be closed.
        """
        self._buffer += data
        buffer = self._buffer
        start = 0
        try:
            while len(buffer) - start >= 4:
                (length,) = _LENGTH.unpack_from(buffer, start)
                if length > self.max_frame:
                    raise ProtocolError(f"frame of {length} bytes exceeds {self.max_frame}")
                seal = self.seal
                end = start + 4 + length
                if end + (TAG_BYTES if seal else 0) > len(buffer):
                    break
                body = bytes(buffer[start + 4:end])
                if seal is not None:
                    try:
                        seal.check(body, bytes(buffer[end:end + TAG_BYTES]))
                    except AuthError as exc:
                        raise ProtocolError(str(exc)) from None
                    end += TAG_BYTES
                message = decode_body(body)
                start = end
                yield message
        finally:
            del buffer[:start]
