"""The peer protocol: incoming sessions over in-memory streams, outgoing links on loopback."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from conftest import free_ports

from kvcheck.store.messages import (
    PREAMBLE,
    FrameDecoder,
    Hello,
    Message,
    Probe,
    ProbeAck,
    encode_frame,
)
from kvcheck.store.node import Event, Received, Undeliverable
from kvcheck.store.server.peers import Peers


class Recorder:
    """A Peers with its node events and protocol errors recorded."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.protocol_errors = 0
        self.peers = Peers(Hello("n1", "kvcheck"), lambda peer: "127.0.0.1:1",
                           self.events.append, self.count)

    def count(self) -> None:
        self.protocol_errors += 1

    def serve(self, frames: bytes) -> None:
        """Serve a peer's connection that sends ``frames`` (after the preamble), then closes."""

        async def run() -> None:
            ours, theirs = trio.testing.memory_stream_pair()
            await theirs.send_all(frames)
            await theirs.send_eof()
            await self.peers.serve(ours, b"")

        trio.run(run)


def frames(*messages: Message) -> bytes:
    return b"".join(encode_frame(m) for m in messages)


def test_a_greeted_connection_delivers_each_message_from_the_peer_it_named() -> None:
    recorder = Recorder()
    recorder.serve(frames(Hello("n2", "kvcheck"), Probe(1), ProbeAck(1)))
    assert recorder.events == [Received("n2", Probe(1)), Received("n2", ProbeAck(1))]
    assert recorder.protocol_errors == 0


@pytest.mark.parametrize(("sent", "logged"), [
    (frames(Probe(1)), "closing connection from unknown peer: connection did not start with Hello"),
    (frames(Hello("n2", "other")), "closing connection from unknown peer: peer is in cluster"),
    (frames(Hello("n2", "kvcheck"), Probe(1)) + b"\x00\x00\x00\x02\xc1\xc1",
     "closing connection from n2: malformed message"),
])
def test_a_connection_that_breaks_the_protocol_is_logged_counted_and_given_up(
    sent: bytes, logged: str, caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="kvcheck.store.server"):
        recorder.serve(sent)
    assert recorder.protocol_errors == 1
    assert logged in caplog.text
    assert all(isinstance(e, Received) and e.peer == "n2" for e in recorder.events)


def test_messages_go_nowhere_without_a_link_and_nobody_counts_as_connected() -> None:
    peers = Recorder().peers
    assert not peers.send("n2", Probe(1))
    assert not peers.connected("n2")


def test_a_link_says_hello_then_sends_what_waited_for_its_first_connection() -> None:
    received: list[Message] = []

    async def run() -> None:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        peers = Peers(Hello("n1", "kvcheck"), lambda peer: f"127.0.0.1:{port}",
                      lambda event: None, lambda: None)
        async with trio.open_nursery() as nursery:
            peers.keep_links(["n2"], nursery)
            assert peers.send("n2", Probe(1))  # waits for the first connection
            stream = await listener.accept()
            head = b""
            while len(head) < len(PREAMBLE):
                head += await stream.receive_some(65536)
            assert head.startswith(PREAMBLE)
            decoder = FrameDecoder()
            received.extend(decoder.feed(head[len(PREAMBLE):]))
            while len(received) < 2:
                received.extend(decoder.feed(await stream.receive_some(65536)))
            assert peers.connected("n2")  # the link is up: a message now goes at once
            assert peers.send("n2", Probe(2))
            while len(received) < 3:
                received.extend(decoder.feed(await stream.receive_some(65536)))
            peers.keep_links([], nursery)  # n2 left: its link closes
            assert not peers.connected("n2")
            await stream.aclose()
            await listener.aclose()

    trio.run(run)
    assert received == [Hello("n1", "kvcheck"), Probe(1), Probe(2)]


def test_what_waited_for_a_first_connection_that_fails_is_reported_undeliverable() -> None:
    [port] = free_ports(1)  # nothing listens there
    recorder = Recorder()
    peers = Peers(Hello("n1", "kvcheck"), lambda peer: f"127.0.0.1:{port}",
                  recorder.events.append, recorder.count)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            peers.keep_links(["n2"], nursery)
            assert peers.send("n2", Probe(1))
            while not recorder.events:
                await trio.sleep(0.01)
            assert not peers.send("n2", Probe(2))  # the connection is down: at once
            nursery.cancel_scope.cancel()

    trio.run(run)
    assert recorder.events == [Undeliverable("n2", Probe(1))]
