"""Peer connections: the node's messages to and from the other members, over TCP.

A connection between peers opens with :data:`~kvcheck.store.messages.PREAMBLE` and the
handshake of :mod:`kvcheck.store.peer_auth`, in which the sender names itself and its cluster and
both ends prove they hold the cluster's secret (when it has one); length-prefixed frames follow,
each a message (:mod:`kvcheck.store.messages`), tagged under the secret. Traffic is one way: each
node keeps one outgoing connection to every other member (members come and go: the node's
:class:`~kvcheck.store.placement.Placement` lists them with their addresses) and sends all its
messages to that peer over it; replies come back over the peer's own outgoing connection.

Until its handshake is over, an incoming connection gets :data:`HANDSHAKE_TIMEOUT` seconds and
frames of at most :data:`~kvcheck.store.messages.MAX_HANDSHAKE_FRAME` bytes, and nothing it
sends reaches the node; at most :data:`MAX_HANDSHAKES` are under way at once, and one more is
closed at once: strangers can hold a few kilobytes each for a few seconds, no more.

A message for a peer whose connection is down is reported to the node logic as undeliverable at
once, so a write that cannot leave this node fails as surely-not-applied rather than timing out;
only while the first connection to a peer is being made (it just started, or just appeared in the
records) do messages wait for it.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

import trio

from kvcheck.store.config import Address, ConfigError
from kvcheck.store.messages import (
    MAX_FRAME,
    MAX_HANDSHAKE_FRAME,
    PREAMBLE,
    Challenge,
    FrameDecoder,
    Hello,
    Message,
    ProtocolError,
    Welcome,
    encode_frame,
)
from kvcheck.store.node import Event, Received, Undeliverable
from kvcheck.store.peer_auth import (
    AuthError,
    Seal,
    check,
    hello_proof,
    new_nonce,
    seal_for,
    welcome_proof,
)

#: The server's one logger (``kvcheck.store.server``), shared by its modules.
log = logging.getLogger(__package__)

M = TypeVar("M", Hello, Challenge, Welcome)

#: Messages queued for one peer before further sends count as undeliverable.
OUTBOX_SIZE = 10_000
CONNECT_TIMEOUT = 1.0
#: Seconds either end of a connection has to complete the handshake.
HANDSHAKE_TIMEOUT = 5.0
#: Incoming connections in their handshake at once, at most (members need one each).
MAX_HANDSHAKES = 64
#: Incoming connections closed (refused, or for breaking the protocol) that are logged in a
#: minute, at most, so strangers cannot fill the log; every one is counted (protocol_errors).
LOGGED_REFUSALS_PER_MINUTE = 10
#: Seconds between failed connection attempts: doubling from the first to the most.
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0
#: A peer connection whose sent data stays unacknowledged this long is aborted (Linux's
#: TCP_USER_TIMEOUT) and reconnected. Without it a connection that crossed a partition (DROP is
#: a black hole) resumes only at TCP's next retransmission, whose backoff doubles from 0.2 s:
#: seconds to minutes after the heal, during which every message to that peer waits.
PEER_USER_TIMEOUT_MS = 2000
#: Messages written to a connection in one send, at most.
SEND_BATCH = 256


class _Link:
    """The outgoing connection to one peer: its queue, and whether it is up."""

    __slots__ = ("connected", "inbox", "outbox", "refused", "scope")

    def __init__(self) -> None:
        self.outbox, self.inbox = trio.open_memory_channel[Message](OUTBOX_SIZE)
        #: True connected, False down, None the first connection is being made (messages wait
        #: for it, so a member that just appeared misses nothing sent to it)
        self.connected: bool | None = None
        #: Why the peer's last answer failed the handshake (None: it did not fail so)
        self.refused: str | None = None
        self.scope = trio.CancelScope()  # cancelled when the peer is no longer a member


class Peers:
    """This node's side of the peer protocol: links to the other members, and their sessions.

    ``node_id`` and ``cluster`` name this node and its cluster in every handshake; ``secret``
    (None: none) is what members prove they hold; ``address_of(peer)`` is where to reach
    ``peer`` now (read at every connection attempt); ``dispatch`` takes the node events the
    peers cause (:class:`~kvcheck.store.node.Received`,
    :class:`~kvcheck.store.node.Undeliverable`); ``protocol_error`` is called once for every
    incoming connection closed for breaking the protocol or failing the handshake.
    """

    def __init__(self, node_id: str, cluster: str, secret: bytes | None,
                 address_of: Callable[[str], str], dispatch: Callable[[Event], None],
                 protocol_error: Callable[[], None]) -> None:
        self._node_id, self._cluster, self._secret = node_id, cluster, secret
        self._address_of = address_of
        self._dispatch = dispatch
        self._protocol_error = protocol_error
        self._links: dict[str, _Link] = {}
        self._incoming: Counter[str] = Counter()  # open authenticated sessions, by peer
        self._handshakes = 0  # incoming connections in their handshake
        self._minute_started, self._logged, self._unlogged = time.monotonic(), 0, 0

    def keep_links(self, peers: Iterable[str], nursery: trio.Nursery) -> None:
        """Keep a link to exactly ``peers``: close the links to others (their queued messages
        are dropped), and start a link in ``nursery`` to each new one."""
        wanted = set(peers)
        for peer in set(self._links) - wanted:
            self._links.pop(peer).scope.cancel()
        for peer in wanted - set(self._links):
            self._links[peer] = link = _Link()
            nursery.start_soon(self._keep_link, peer, link)

    def send(self, peer: str, message: Message) -> bool:
        """Queue ``message`` for ``peer``. False, and nothing queued, if it cannot go: no link
        to ``peer``, its connection is down, or its queue is full."""
        link = self._links.get(peer)
        if link is None or link.connected is False:
            return False
        try:
            link.outbox.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    def connected(self, peer: str) -> bool:
        """Whether this node's connection to ``peer`` is up."""
        link = self._links.get(peer)
        return link is not None and bool(link.connected)

    def unready(self) -> list[str]:
        """Why messages to or from a peer that answers could be lost now, one reason per peer:
        the first connection to it is still being made, it answers but fails the handshake
        (a secret that differs), or it is connected to but has not connected back (its replies
        would have no way here). Empty when there is none."""
        reasons = []
        for peer, link in sorted(self._links.items()):
            if link.connected is None:
                reasons.append(f"connecting to {peer}")
            elif link.refused is not None:
                reasons.append(f"{peer}: {link.refused}")
            elif link.connected and not self._incoming[peer]:
                reasons.append(f"{peer} has not connected back")
        return reasons

    # -- outgoing --

    async def _keep_link(self, peer: str, link: _Link) -> None:
        """Keep one outgoing connection to ``peer`` and send everything queued for it, at the
        address its record names, until the link's scope is cancelled (the peer left)."""
        with link.scope:
            await self._connect_and_send(peer, link)

    async def _connect_and_send(self, peer: str, link: _Link) -> None:
        backoff = FIRST_BACKOFF
        while True:
            stream = None
            try:
                address = Address.parse(self._address_of(peer))
                with trio.fail_after(CONNECT_TIMEOUT):
                    stream = await trio.open_tcp_stream(address.host, address.port)
                    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
                        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                                          PEER_USER_TIMEOUT_MS)
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    seal = await self._introduce(stream, peer)
            except (OSError, ConfigError, trio.TooSlowError, trio.BrokenResourceError,
                    ProtocolError, AuthError) as exc:
                refused = (f"handshake failed: {exc}"
                           if isinstance(exc, (ProtocolError, AuthError)) else None)
                if refused is not None and refused != link.refused:  # each reason once
                    log.warning("cannot connect to %s: %s", peer, refused)
                link.refused = refused
                if stream is not None:
                    await stream.aclose()
                if link.connected is None:  # the first attempt failed
                    link.connected = False
                    self._fail_queued(peer, link)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            log.info("connected to %s at %s", peer, address)
            link.connected, link.refused = True, None
            backoff = FIRST_BACKOFF
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_watch_close, stream, nursery.cancel_scope)
                    while True:
                        batch = [encode_frame(await link.inbox.receive(), seal)]
                        while len(batch) < SEND_BATCH:
                            try:
                                batch.append(encode_frame(link.inbox.receive_nowait(), seal))
                            except trio.WouldBlock:
                                break
                        await stream.send_all(b"".join(batch))
            except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # raised inside the nursery, so in a group: the connection broke
            finally:
                link.connected = False
                with trio.CancelScope(shield=True):
                    await stream.aclose()
            log.warning("lost connection to %s", peer)
            self._fail_queued(peer, link)

    async def _introduce(self, stream: trio.SocketStream, peer: str) -> Seal | None:
        """The connector's side of the handshake with ``peer``: the seal of the frames to
        send. Raises ProtocolError or AuthError."""
        await stream.send_all(PREAMBLE)
        decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
        challenge = await _expect(stream, decoder, Challenge)
        nonce = new_nonce()
        proof = hello_proof(self._secret, challenge.nonce, nonce, self._node_id, self._cluster)
        await stream.send_all(encode_frame(Hello(self._node_id, self._cluster, nonce, proof)))
        welcome = await _expect(stream, decoder, Welcome)
        check(self._secret, welcome.proof,
              welcome_proof(self._secret, challenge.nonce, nonce, peer), f"the node at {peer}'s "
              f"address")
        return seal_for(self._secret, challenge.nonce, nonce)

    def _fail_queued(self, peer: str, link: _Link) -> None:
        """Report every message queued on ``link`` as undeliverable, emptying the queue."""
        while True:
            try:
                message = link.inbox.receive_nowait()
            except trio.WouldBlock:
                return
            self._dispatch(Undeliverable(peer, message))

    # -- incoming --

    async def serve(self, stream: trio.abc.Stream, data: bytes) -> None:
        """Deliver the messages of a connection a peer opened, once it has passed the
        handshake, until it closes or breaks the protocol (then the connection is logged,
        counted and left to be closed). ``data`` is what was received after the preamble."""
        if self._handshakes >= MAX_HANDSHAKES:
            self._refuse(f"unknown peer: {self._handshakes} handshakes under way")
            return
        decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
        peer = None
        try:
            self._handshakes += 1
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    peer, seal = await self._admit(stream, decoder, data)
            finally:
                self._handshakes -= 1
            decoder.seal, decoder.max_frame = seal, MAX_FRAME
            self._incoming[peer] += 1
            try:
                data = b""
                while True:
                    for message in decoder.feed(data):
                        self._dispatch(Received(peer, message))
                    data = bytes(await stream.receive_some(65536))
                    if not data:
                        return
            finally:
                self._incoming[peer] -= 1
        except (ProtocolError, AuthError) as exc:
            self._refuse(f"{peer or 'unknown peer'}: {exc}")
        except trio.TooSlowError:
            self._refuse(f"unknown peer: no handshake within {HANDSHAKE_TIMEOUT:g} s")

    def _refuse(self, why: str) -> None:
        """Count an incoming connection closed for ``why``; log it, unless
        :data:`LOGGED_REFUSALS_PER_MINUTE` were logged this minute (the next line logged says
        how many were not)."""
        self._protocol_error()
        now = time.monotonic()
        if now - self._minute_started >= 60:
            self._minute_started, self._logged = now, 0
        if self._logged >= LOGGED_REFUSALS_PER_MINUTE:
            self._unlogged += 1
            return
        self._logged += 1
        more = f" (and {self._unlogged} more not logged)" if self._unlogged else ""
        self._unlogged = 0
        log.warning("closing connection from %s%s", why, more)

    async def _admit(self, stream: trio.abc.Stream, decoder: FrameDecoder, data: bytes,
                     ) -> tuple[str, Seal | None]:
        """The acceptor's side of the handshake (``data`` already received): the peer's id and
        the seal of its frames. Raises ProtocolError unless it is a member of this node's
        cluster, AuthError unless it proves so."""
        challenge = new_nonce()
        await stream.send_all(encode_frame(Challenge(challenge)))
        hello = await _expect(stream, decoder, Hello, data)
        if hello.cluster != self._cluster:
            raise ProtocolError(f"peer is in cluster {hello.cluster!r}")
        check(self._secret, hello.proof,
              hello_proof(self._secret, challenge, hello.nonce, hello.node_id, hello.cluster),
              f"peer {hello.node_id!r}")
        await stream.send_all(encode_frame(
            Welcome(welcome_proof(self._secret, challenge, hello.nonce, self._node_id))))
        return hello.node_id, seal_for(self._secret, challenge, hello.nonce)


async def _expect(stream: trio.abc.ReceiveStream, decoder: FrameDecoder, kind: type[M],
                  data: bytes = b"") -> M:
    """The next message on ``stream`` (after ``data``), which must be a ``kind``; what follows
    it stays in ``decoder``. Raises ProtocolError."""
    while True:
        messages = decoder.feed(data)
        try:
            for message in messages:
                if not isinstance(message, kind):
                    raise ProtocolError(f"expected {kind.__name__}, got "
                                        f"{type(message).__name__}")
                return message
        finally:
            messages.close()
        data = bytes(await stream.receive_some(65536))
        if not data:
            raise ProtocolError(f"connection closed before {kind.__name__}")


async def _watch_close(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the peer closes the connection (it never sends on it)."""
    try:
        while await stream.receive_some(4096):
            pass
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()
