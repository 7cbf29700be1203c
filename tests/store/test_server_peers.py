"""The peer protocol: incoming sessions over in-memory streams, outgoing links on loopback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from local_cluster import free_ports

from kvcheck.store.messages import (
    MAX_HANDSHAKE_FRAME,
    PREAMBLE,
    Challenge,
    FrameDecoder,
    Hello,
    Message,
    Probe,
    ProbeAck,
    Welcome,
    encode_frame,
)
from kvcheck.store.node import Event, Received, Undeliverable
from kvcheck.store.peer_auth import Seal, hello_proof, new_nonce, seal_for, welcome_proof
from kvcheck.store.server import peers as peers_module
from kvcheck.store.server.peers import LOGGED_REFUSALS_PER_MINUTE, MAX_HANDSHAKES, Peers

SECRET = b"0123456789abcdef0123456789abcdef"
#: What a connecting peer does on its end of the connection, given its stream and its decoder.
Connector = Callable[[trio.abc.Stream, FrameDecoder], Awaitable[None]]


class Recorder:
    """n1's Peers, with its node events and protocol errors recorded."""

    def __init__(self, secret: bytes | None = SECRET, address: str = "127.0.0.1:1") -> None:
        self.events: list[Event] = []
        self.protocol_errors = 0
        self.peers = Peers("n1", "kvcheck", secret, lambda peer: address, self.events.append,
                           self.count)

    def count(self) -> None:
        self.protocol_errors += 1

    def serve(self, connector: Connector, clock: trio.abc.Clock | None = None) -> None:
        """Serve a connection whose other end ``connector`` drives, then closes."""

        async def run() -> None:
            ours, theirs = trio.testing.memory_stream_pair()

            async def accept() -> None:
                try:
                    await self.peers.serve(ours, b"")
                finally:
                    await ours.aclose()  # as the server does

            async def connect() -> None:
                try:
                    await connector(theirs, FrameDecoder())
                    await theirs.send_eof()
                except (trio.BrokenResourceError, EOFError):
                    pass  # n1 closed the connection first

            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept)
                nursery.start_soon(connect)

        trio.run(run, clock=clock)


async def receive(stream: trio.abc.ReceiveStream, decoder: FrameDecoder) -> Message:
    """The next message. Raises EOFError if the stream ends first."""
    while True:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        for message in decoder.feed(data):
            return message


def introduce(then: tuple[Message, ...] = (), *, secret: bytes | None = SECRET, node: str = "n2",
              cluster: str = "kvcheck", proof: bytes | None = None, raw: bytes = b"",
              tamper: Callable[[bytes], bytes] = lambda frames: frames) -> Connector:
    """A connector that passes the handshake as ``node`` (with ``proof`` instead of the right
    one, if given), then sends ``then`` sealed (``tamper`` may change those bytes) and
    ``raw``."""

    async def connector(stream: trio.abc.Stream, decoder: FrameDecoder) -> None:
        challenge = await receive(stream, decoder)
        assert isinstance(challenge, Challenge)
        nonce = new_nonce()
        right = hello_proof(secret, challenge.nonce, nonce, node, cluster)
        await stream.send_all(encode_frame(
            Hello(node, cluster, nonce, right if proof is None else proof)))
        welcome = await receive(stream, decoder)
        assert welcome == Welcome(welcome_proof(secret, challenge.nonce, nonce, "n1"))
        seal = seal_for(secret, challenge.nonce, nonce)
        await stream.send_all(tamper(b"".join(encode_frame(m, seal) for m in then)) + raw)

    return connector


def sends(data: bytes) -> Connector:
    """A connector that sends ``data`` as soon as it is challenged."""

    async def connector(stream: trio.abc.Stream, decoder: FrameDecoder) -> None:
        assert isinstance(await receive(stream, decoder), Challenge)
        await stream.send_all(data)

    return connector


@pytest.mark.parametrize("secret", [SECRET, None])
def test_a_peer_that_passes_the_handshake_gets_each_message_delivered(
        secret: bytes | None) -> None:
    recorder = Recorder(secret)
    recorder.serve(introduce((Probe(1), ProbeAck(1)), secret=secret))
    assert recorder.events == [Received("n2", Probe(1)), Received("n2", ProbeAck(1))]
    assert recorder.protocol_errors == 0


def _flip_last_byte(frames: bytes) -> bytes:
    return frames[:-1] + bytes([frames[-1] ^ 1])


def _repeat_first_frame(frames: bytes) -> bytes:
    first = frames[:len(encode_frame(Probe(1))) + 16]
    return first + first


@pytest.mark.parametrize(("connector", "logged"), [
    (sends(encode_frame(Probe(1))), "expected Hello, got Probe"),
    (introduce(cluster="other"), "peer is in cluster 'other'"),
    (introduce(proof=b"\x00" * 32), "failed to prove it holds the cluster's secret"),
    (introduce(proof=b""), "has no secret, but this node has one"),
    (introduce((Probe(1),), tamper=_flip_last_byte), "frame 1 fails its tag"),
    (introduce((Probe(1), Probe(2)), tamper=_repeat_first_frame), "frame 2 fails its tag"),
    (introduce((Probe(1),), raw=b"\x00\x00\x00\x02\xc1\xc1" + b"t" * 16), "fails its tag"),
    (sends(b"\x00\x10\x00\x00" + b"x" * 100), f"exceeds {MAX_HANDSHAKE_FRAME}"),
])
def test_a_connection_that_fails_the_handshake_or_a_tag_delivers_nothing_more(
    connector: Connector, logged: str, caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="kvcheck.store.server"):
        recorder.serve(connector)
    assert recorder.protocol_errors == 1
    assert logged in caplog.text
    assert recorder.events in ([], [Received("n2", Probe(1))])  # only what came sealed


def test_strangers_are_all_counted_but_only_a_few_a_minute_logged(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(peers_module.time, "monotonic", lambda: clock[0])
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="kvcheck.store.server"):
        for _ in range(25):
            recorder.serve(sends(encode_frame(Probe(1))))
        assert caplog.text.count("closing connection") == LOGGED_REFUSALS_PER_MINUTE
        clock[0] += 60
        recorder.serve(sends(encode_frame(Probe(1))))
    assert recorder.protocol_errors == 26
    assert caplog.text.count("closing connection") == LOGGED_REFUSALS_PER_MINUTE + 1
    assert f"(and {25 - LOGGED_REFUSALS_PER_MINUTE} more not logged)" in caplog.text


def test_a_node_without_a_secret_refuses_a_peer_that_has_one(
        caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(secret=None)
    with caplog.at_level(logging.WARNING, logger="kvcheck.store.server"):
        recorder.serve(introduce((Probe(1),), proof=b"p" * 32))
    assert recorder.events == []
    assert "proves membership with a secret, but this node has none" in caplog.text


def test_a_connection_that_never_completes_the_handshake_is_closed_in_time() -> None:
    async def silent(stream: trio.abc.Stream, decoder: FrameDecoder) -> None:
        await receive(stream, decoder)
        while await stream.receive_some(65536):  # until n1 closes the connection
            pass

    recorder = Recorder()
    recorder.serve(silent, clock=trio.testing.MockClock(autojump_threshold=0))
    assert recorder.protocol_errors == 1


def test_past_the_handshakes_allowed_at_once_a_connection_is_closed_unanswered() -> None:
    recorder = Recorder()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(MAX_HANDSHAKES):  # strangers that never answer their challenge
                ours, _theirs = trio.testing.memory_stream_pair()
                nursery.start_soon(recorder.peers.serve, ours, b"")
            await trio.testing.wait_all_tasks_blocked()
            ours, theirs = trio.testing.memory_stream_pair()
            await recorder.peers.serve(ours, b"")  # returns at once
            assert recorder.protocol_errors == 1
            await ours.aclose()
            assert await theirs.receive_some(100) == b""  # no challenge
            nursery.cancel_scope.cancel()

    trio.run(run)


def test_messages_go_nowhere_without_a_link_and_nobody_counts_as_connected() -> None:
    peers = Recorder().peers
    assert not peers.send("n2", Probe(1))
    assert not peers.connected("n2")
    assert peers.unready() == []


async def _accept(listener: trio.SocketListener, acceptor: str = "n2",
                  secret: bytes = SECRET) -> tuple[trio.SocketStream, FrameDecoder, Seal]:
    """Accept a link and play ``acceptor``'s part of the handshake: the stream, its decoder
    (sealed) and the connector's Hello."""
    stream = await listener.accept()
    head = b""
    while len(head) < len(PREAMBLE):
        head += await stream.receive_some(len(PREAMBLE) - len(head))
    assert head == PREAMBLE
    challenge = new_nonce()
    await stream.send_all(encode_frame(Challenge(challenge)))
    decoder = FrameDecoder()
    hello = await receive(stream, decoder)
    assert isinstance(hello, Hello)
    assert hello.proof == hello_proof(secret, challenge, hello.nonce, "n1", "kvcheck")
    await stream.send_all(encode_frame(
        Welcome(welcome_proof(secret, challenge, hello.nonce, acceptor))))
    seal = seal_for(secret, challenge, hello.nonce)
    assert seal is not None
    decoder.seal = seal
    return stream, decoder, seal


def test_a_link_proves_membership_then_sends_sealed_what_waited_for_it() -> None:
    received: list[Message] = []

    async def run() -> None:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        recorder = Recorder(address=f"127.0.0.1:{port}")
        peers = recorder.peers
        async with trio.open_nursery() as nursery:
            peers.keep_links(["n2"], nursery)
            assert peers.unready() == ["connecting to n2"]
            assert peers.send("n2", Probe(1))  # waits for the first connection
            stream, decoder, _ = await _accept(listener)
            while len(received) < 1:
                received.extend(decoder.feed(await stream.receive_some(65536)))
            assert peers.connected("n2")  # the link is up: a message now goes at once
            assert peers.unready() == ["n2 has not connected back"]
            assert peers.send("n2", Probe(2))
            while len(received) < 2:
                received.extend(decoder.feed(await stream.receive_some(65536)))
            peers.keep_links([], nursery)  # n2 left: its link closes
            assert not peers.connected("n2")
            await stream.aclose()
            await listener.aclose()

    trio.run(run)
    assert received == [Probe(1), Probe(2)]


def test_a_link_to_a_node_that_cannot_prove_membership_never_comes_up(
        caplog: pytest.LogCaptureFixture) -> None:
    recorder_events: list[Event] = []

    async def run() -> None:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        peers = Peers("n1", "kvcheck", SECRET, lambda peer: f"127.0.0.1:{port}",
                      recorder_events.append, lambda: None)
        async with trio.open_nursery() as nursery:
            peers.keep_links(["n2"], nursery)
            assert peers.send("n2", Probe(1))
            stream = await listener.accept()  # an impostor: the secret is not n2's, nor the id
            await stream.receive_some(len(PREAMBLE))
            challenge = new_nonce()
            await stream.send_all(encode_frame(Challenge(challenge)))
            hello = await receive(stream, FrameDecoder())
            assert isinstance(hello, Hello)
            await stream.send_all(encode_frame(
                Welcome(welcome_proof(SECRET, challenge, hello.nonce, "n3"))))
            while not recorder_events:
                await trio.sleep(0.01)
            assert not peers.connected("n2")
            [reason] = peers.unready()
            assert reason.startswith("n2: handshake failed")
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING, logger="kvcheck.store.server"):
        trio.run(run)
    assert recorder_events == [Undeliverable("n2", Probe(1))]
    assert "cannot connect to n2: handshake failed" in caplog.text


def test_what_waited_for_a_first_connection_that_fails_is_reported_undeliverable() -> None:
    [port] = free_ports(1)  # nothing listens there
    recorder = Recorder(address=f"127.0.0.1:{port}")
    peers = recorder.peers

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            peers.keep_links(["n2"], nursery)
            assert peers.send("n2", Probe(1))
            while not recorder.events:
                await trio.sleep(0.01)
            assert not peers.send("n2", Probe(2))  # the connection is down: at once
            assert peers.unready() == []  # n2 does not answer: nothing to wait for
            nursery.cancel_scope.cancel()

    trio.run(run)
    assert recorder.events == [Undeliverable("n2", Probe(1))]
