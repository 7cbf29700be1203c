"""Peer connections: the node's messages to and from the other members, over TCP.

A connection between peers opens with :data:`~kvcheck.store.messages.PREAMBLE` and a
:class:`~kvcheck.store.messages.Hello` frame naming the sender and its cluster; length-prefixed
frames follow, each a message (:mod:`kvcheck.store.messages`). Traffic is one way: each node keeps
one outgoing connection to every other member (members come and go: the node's
:class:`~kvcheck.store.placement.Placement` lists them with their addresses) and sends all its
messages to that peer over it; replies come back over the peer's own outgoing connection.

A message for a peer whose connection is down is reported to the node logic as undeliverable at
once, so a write that cannot leave this node fails as surely-not-applied rather than timing out;
only while the first connection to a peer is being made (it just started, or just appeared in the
records) do messages wait for it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable

import trio

from kvcheck.store.config import Address, ConfigError
from kvcheck.store.messages import (
    PREAMBLE,
    FrameDecoder,
    Hello,
    Message,
    ProtocolError,
    encode_frame,
)
from kvcheck.store.node import Event, Received, Undeliverable

#: The server's one logger (``kvcheck.store.server``), shared by its modules.
log = logging.getLogger(__package__)

#: Messages queued for one peer before further sends count as undeliverable.
OUTBOX_SIZE = 10_000
CONNECT_TIMEOUT = 1.0
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

    __slots__ = ("connected", "inbox", "outbox", "scope")

    def __init__(self) -> None:
        self.outbox, self.inbox = trio.open_memory_channel[Message](OUTBOX_SIZE)
        #: True connected, False down, None the first connection is being made (messages wait
        #: for it, so a member that just appeared misses nothing sent to it)
        self.connected: bool | None = None
        self.scope = trio.CancelScope()  # cancelled when the peer is no longer a member


class Peers:
    """This node's side of the peer protocol: links to the other members, and their sessions.

    ``hello`` is what this node says first on every connection it opens (its id and cluster);
    ``address_of(peer)`` is where to reach ``peer`` now (read at every connection attempt);
    ``dispatch`` takes the node events the peers cause (:class:`~kvcheck.store.node.Received`,
    :class:`~kvcheck.store.node.Undeliverable`); ``protocol_error`` is called once for every
    incoming connection closed for breaking the protocol.
    """

    def __init__(self, hello: Hello, address_of: Callable[[str], str],
                 dispatch: Callable[[Event], None], protocol_error: Callable[[], None]) -> None:
        self._hello = hello
        self._address_of = address_of
        self._dispatch = dispatch
        self._protocol_error = protocol_error
        self._links: dict[str, _Link] = {}

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

    # -- outgoing --

    async def _keep_link(self, peer: str, link: _Link) -> None:
        """Keep one outgoing connection to ``peer`` and send everything queued for it, at the
        address its record names, until the link's scope is cancelled (the peer left)."""
        with link.scope:
            await self._connect_and_send(peer, link)

    async def _connect_and_send(self, peer: str, link: _Link) -> None:
        backoff = FIRST_BACKOFF
        hello = PREAMBLE + encode_frame(self._hello)
        while True:
            stream = None
            try:
                address = Address.parse(self._address_of(peer))
                with trio.fail_after(CONNECT_TIMEOUT):
                    stream = await trio.open_tcp_stream(address.host, address.port)
                    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
                        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                                          PEER_USER_TIMEOUT_MS)
                    await stream.send_all(hello)
            except (OSError, ConfigError, trio.TooSlowError, trio.BrokenResourceError):
                if stream is not None:
                    await stream.aclose()
                if link.connected is None:  # the first attempt failed
                    link.connected = False
                    self._fail_queued(peer, link)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            log.info("connected to %s at %s", peer, address)
            link.connected = True
            backoff = FIRST_BACKOFF
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_watch_close, stream, nursery.cancel_scope)
                    while True:
                        batch = [encode_frame(await link.inbox.receive())]
                        while len(batch) < SEND_BATCH:
                            try:
                                batch.append(encode_frame(link.inbox.receive_nowait()))
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

    def _fail_queued(self, peer: str, link: _Link) -> None:
        """Report every message queued on ``link`` as undeliverable, emptying the queue."""
        while True:
            try:
                message = link.inbox.receive_nowait()
            except trio.WouldBlock:
                return
            self._dispatch(Undeliverable(peer, message))

    # -- incoming --

    async def serve(self, stream: trio.abc.ReceiveStream, data: bytes) -> None:
        """Deliver the messages of a connection a peer opened, until it closes or breaks the
        protocol (then the connection is logged, counted and left to be closed). ``data`` is
        what was received after the preamble."""
        decoder = FrameDecoder()
        peer = None
        try:
            while True:
                for message in decoder.feed(data):
                    if peer is None:
                        peer = self._greet(message)
                    else:
                        self._dispatch(Received(peer, message))
                data = bytes(await stream.receive_some(65536))
                if not data:
                    return
        except ProtocolError as exc:
            log.warning("closing connection from %s: %s", peer or "unknown peer", exc)
            self._protocol_error()

    def _greet(self, message: Message) -> str:
        """The id of the peer whose first message is ``message``. Raises ProtocolError unless
        it is a Hello from this node's cluster."""
        if not isinstance(message, Hello):
            raise ProtocolError("connection did not start with Hello")
        if message.cluster != self._hello.cluster:
            raise ProtocolError(f"peer is in cluster {message.cluster!r}")
        return message.node_id


async def _watch_close(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the peer closes the connection (it never sends on it)."""
    try:
        while await stream.receive_some(4096):
            pass
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()
