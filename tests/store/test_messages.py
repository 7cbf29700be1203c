"""Peer frames: every message round-trips; hostile bytes only ever raise ProtocolError."""

from __future__ import annotations

import contextlib
import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcheck.store.membership import GossipEntry
from kvcheck.store.messages import (
    Challenge,
    FrameDecoder,
    Gossip,
    Hello,
    KeyRequest,
    LeafKeys,
    Message,
    Probe,
    ProbeAck,
    ProbeRequest,
    ProbeResult,
    ProtocolError,
    ReadReply,
    ReadRequest,
    Rejected,
    Replicate,
    ReplicateAck,
    StampRefused,
    StampReply,
    StampRequest,
    StreamBatch,
    StreamRequest,
    TreeLevel,
    Welcome,
    encode_frame,
)
from kvcheck.store.peer_auth import Seal
from kvcheck.store.placement import Record
from kvcheck.store.versions import stamp

_, SIBLINGS = stamp("n1.ab", [], {"n2.cd": (3, 17)}, b"value", 99, 10)

MESSAGES: list[Message] = [
    Hello("n1", "kvcheck", b"n" * 32, b"p" * 32),
    Hello("n1", "kvcheck", b"n" * 32, b""),
    Challenge(b"c" * 32),
    Welcome(b"w" * 32),
    StampRequest(1, b"key", {"n1.ab": (2, 5)}, b"v", 123),
    StampRequest(2, b"key", {}, None, 123),
    StampReply(3, b"key", SIBLINGS[0].dot, tuple(SIBLINGS)),
    Replicate(4, b"\x00\xff", tuple(SIBLINGS)),
    ReplicateAck(5),
    ReadRequest(6, b"k"),
    ReadReply(7, ()),
    Rejected(8, "disk full"),
    StampRefused(8, 100),
    Gossip((GossipEntry("n1", (3, 17), False), GossipEntry("n2", (1, 0), True))),
    ProbeRequest(9, "n3"),
    Probe(10),
    ProbeAck(10),
    ProbeResult(9, "n3", False),
    StampRequest(11, b"k", {}, b"v", 5, "n4"),
    Replicate(12, b"k", tuple(SIBLINGS), "n4"),
    TreeLevel("n1", 13, 1, ((0, b"\x01" * 8), (15, b"\x02" * 8))),
    LeafKeys("n1", 13, (7, 4095), ((b"k", b"\x03" * 8),)),
    KeyRequest(13, (b"k", b"\xff")),
    Gossip((GossipEntry("n1", (3, 17), False),),
           (Record("n1", "10.0.0.1:7000", "a", 2, "joining", 4, (0, 2**64 - 1, 12345),
                   b"\x01" * 8, b""),
            Record("n2", "[::1]:7001", "b", 1, "left", 0, ()))),
    StreamRequest(14, b"\x09" * 8, ("n3", "n4"), None),
    StreamRequest(15, b"\x09" * 8, (), b"last-key"),
    StreamBatch(14, ((b"k", tuple(SIBLINGS)), (b"j", ())), b"k"),
    StreamBatch(15, (), None),
]


def test_every_message_round_trips_even_when_fed_byte_by_byte() -> None:
    stream = b"".join(encode_frame(m) for m in MESSAGES)
    decoder = FrameDecoder()
    received = [m for i in range(len(stream)) for m in decoder.feed(stream[i:i + 1])]
    assert received == MESSAGES


@given(st.integers(1, 64), st.integers(0, len(MESSAGES) - 1), st.integers(0, 7), st.data())
def test_sealed_frames_round_trip_in_any_chunks_and_any_flipped_bit_is_refused(
        chunk: int, victim: int, bit: int, data: st.DataObject) -> None:
    sender, receiver = (Seal(b"s" * 32, b"c" * 32, b"n" * 32) for _ in range(2))
    frames = [encode_frame(m, sender) for m in MESSAGES]
    stream = b"".join(frames)
    decoder = FrameDecoder()
    decoder.seal = receiver
    received = [m for i in range(0, len(stream), chunk) for m in decoder.feed(stream[i:i + chunk])]
    assert received == MESSAGES

    sender, receiver = (Seal(b"s" * 32, b"c" * 32, b"n" * 32) for _ in range(2))
    frames = [bytearray(encode_frame(m, sender)) for m in MESSAGES]
    frames[victim][data.draw(st.integers(4, len(frames[victim]) - 1))] ^= 1 << bit  # not its length
    decoder = FrameDecoder()
    decoder.seal = receiver
    with pytest.raises(ProtocolError):
        list(decoder.feed(b"".join(frames)))


def test_a_frame_sealed_under_another_session_is_refused() -> None:
    frame = encode_frame(Probe(1), Seal(b"s" * 32, b"c" * 32, b"other nonce"))
    decoder = FrameDecoder()
    decoder.seal = Seal(b"s" * 32, b"c" * 32, b"n" * 32)
    with pytest.raises(ProtocolError, match="fails its tag"):
        list(decoder.feed(frame))


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        list(FrameDecoder().feed(data))


@given(st.deferred(lambda: garbage))
def test_well_framed_garbage_never_raises_anything_but_protocol_error(body: object) -> None:
    packed = msgpack.packb(body, use_bin_type=True)
    with contextlib.suppress(ProtocolError):
        list(FrameDecoder().feed(struct.pack(">I", len(packed)) + packed))


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        list(FrameDecoder(max_frame=1024).feed(struct.pack(">I", 1 << 30)))


@pytest.mark.parametrize("body", [
    [99, 1], [2, 1, b"k", [], b"v"], [5, "one"], [1, "n1"], [6, 1, "text-key"],
    [3, 1, "a", 0, []],
    [9, [], [["n1", "h:1", "", 1, "normal", 0, b"", b"", b""]]],  # a record without a zone
    [9, [], [["", "h:1", "z", 1, "normal", 0, b"", b"", b""]]],  # ... or an id
    [9, [], [["n1", "h:1", "z", 1, "normal", 0, b"\x00" * 7, b"", b""]]],  # a torn token
    [9, [], [["n1", "h:1", "z", 1, "gone", 0, b"", b"", b""]]],  # an unknown status
])
def test_messages_with_wrong_shapes_are_refused(body: list[object]) -> None:
    packed = msgpack.packb(body, use_bin_type=True)
    with pytest.raises(ProtocolError, match="malformed message"):
        list(FrameDecoder().feed(struct.pack(">I", len(packed)) + packed))


garbage = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=8)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4), max_leaves=10)


@given(st.sampled_from(MESSAGES), st.data())
def test_valid_messages_with_one_field_replaced_by_garbage_are_decoded_or_refused(
    message: Message, data: st.DataObject
) -> None:
    body = msgpack.unpackb(encode_frame(message)[4:], raw=False)
    index = data.draw(st.integers(1, len(body) - 1))
    body[index] = data.draw(garbage)
    packed = msgpack.packb(body, use_bin_type=True)
    with contextlib.suppress(ProtocolError):
        list(FrameDecoder().feed(struct.pack(">I", len(packed)) + packed))
