"""The server: runs one node's logic over real sockets, timers and files, with trio.

One TCP port serves both people and peers. A connection that opens with
:data:`~kvcheck.store.messages.PREAMBLE` is a peer's: length-prefixed frames, each a message.
Anything else is HTTP/1.1 (see :mod:`kvcheck.store.http`), parsed with h11.

Each node keeps one outgoing connection to every other member (members come and go: the
node's :class:`~kvcheck.store.placement.Placement` lists them with their addresses) and sends all
its messages to that peer over it; replies come back over the peer's own outgoing connection. A
message for a peer whose connection is down is reported to the node logic as undeliverable at once,
so a write that cannot leave this node fails as surely-not-applied rather than timing out; only
while the first connection to a peer is being made (it just started, or just appeared in the
records) do messages wait for it.
"""

from __future__ import annotations

import base64
import heapq
import json
import logging
import math
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, replace
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes

import h11
import trio

from kvcheck.store.client import StoreClient, StoreError
from kvcheck.store.config import MAX_PAIR_BYTES, Address, ConfigError, NodeConfig
from kvcheck.store.datadir import (
    load_records,
    open_data_dir,
    record_from_json,
    record_json,
    save_records,
)
from kvcheck.store.hints import DurableHints
from kvcheck.store.http import APPLIED_HEADER, CONTEXT_HEADER, encode_siblings
from kvcheck.store.messages import (
    PREAMBLE,
    FrameDecoder,
    Hello,
    Message,
    ProtocolError,
    encode_frame,
)
from kvcheck.store.node import (
    Action,
    CancelTimer,
    ClientGet,
    ClientPut,
    Event,
    Failed,
    Found,
    Node,
    Now,
    Received,
    Respond,
    Response,
    Send,
    StartTimer,
    Timer,
    TimerFired,
    Undeliverable,
    Written,
)
from kvcheck.store.placement import Placement, initial_records
from kvcheck.store.ring import Member, natural_key
from kvcheck.store.storage import EngineOptions, LsmStorage
from kvcheck.store.versions import BadContext, Version, context_token, parse_context_token

log = logging.getLogger(__name__)

#: Messages queued for one peer before further sends count as undeliverable.
OUTBOX_SIZE = 10_000
CONNECT_TIMEOUT = 1.0
MAX_BACKOFF = 1.0
#: A peer connection whose sent data stays unacknowledged this long is aborted (Linux's
#: TCP_USER_TIMEOUT) and reconnected. Without it a connection that crossed a partition (DROP is
#: a black hole) resumes only at TCP's next retransmission, whose backoff doubles from 0.2 s:
#: seconds to minutes after the heal, during which every message to that peer waits.
PEER_USER_TIMEOUT_MS = 2000
#: How often the storage engine is offered background work when it has none in hand.
STORAGE_POLL_S = 0.1
HttpReply = tuple[int, list[tuple[str, str]], bytes]
#: Largest request head accepted over HTTP (a body is refused past the key/value limit).
MAX_HTTP_HEAD = 16 * 1024


class _Timers:
    """Timers keyed by name; starting one again replaces it. ``run`` fires them on time."""

    def __init__(self, fire: Callable[[Timer], None]) -> None:
        self._fire = fire
        self._heap: list[tuple[float, int, Timer]] = []
        self._current: dict[Timer, int] = {}
        self._seq = 0
        self._scope: trio.CancelScope | None = None

    def start(self, timer: Timer, delay: float) -> None:
        self._seq += 1
        self._current[timer] = self._seq
        deadline = trio.current_time() + delay
        heapq.heappush(self._heap, (deadline, self._seq, timer))
        if self._scope is not None and deadline < self._scope.deadline:
            self._scope.deadline = deadline

    def cancel(self, timer: Timer) -> None:
        self._current.pop(timer, None)

    async def run(self) -> None:
        while True:
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                _, seq, timer = heapq.heappop(self._heap)
                if self._current.get(timer) == seq:
                    del self._current[timer]
                    self._fire(timer)
            with trio.CancelScope(deadline=self._heap[0][0] if self._heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None


class _Waiter:
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: Response | None = None


class Server:
    """One store node. ``await Server(config).run()`` serves until cancelled.

    Raises :class:`~kvcheck.store.config.ConfigError` for an unusable data directory and
    :class:`~kvcheck.store.storage.StorageError` (and its subclasses) or
    :class:`~kvcheck.store.storage.CorruptLogError` for damaged or missing storage files, before
    listening.
    """

    def __init__(self, config: NodeConfig, placement: Placement) -> None:
        self.config = config
        self.me = config.me
        identity = open_data_dir(config.data_dir, self.me.node_id)
        self.actor = identity.actor
        self.storage = LsmStorage(
            config.data_dir, EngineOptions(memtable_bytes=config.cluster.memtable_bytes))
        self.hints = DurableHints(config.data_dir / "hints.log")
        self.node = Node(self.me.node_id, self.actor, placement, config.cluster, self.storage,
                         identity.generation, self.hints)
        self._saved = placement  # saved by run(), before it serves, and on every change
        self.timers = _Timers(lambda timer: self.dispatch(TimerFired(timer)))
        #: per peer: True connected, False down, None the first connection is being made
        #: (messages wait for it, so a member that just appeared misses nothing sent to it)
        self.connected: dict[str, bool | None] = {}
        self._links: dict[str, trio.CancelScope] = {}
        self._outboxes: dict[str, trio.MemorySendChannel[Message]] = {}
        self._inboxes: dict[str, trio.MemoryReceiveChannel[Message]] = {}
        self._nursery: trio.Nursery | None = None
        self._group_commit = config.cluster.fsync == "always"
        self._held: list[Action] = []
        self._sync_wanted = trio.Event()
        self._waiting: dict[int, _Waiter] = {}
        self._next_request = 0
        self._started = time.monotonic()

    # -- running --

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, connect to peers, and serve until cancelled; then close storage cleanly."""
        try:
            async with trio.open_nursery() as nursery:
                listeners = await trio.open_tcp_listeners(self.me.address.port,
                                                          host=self.me.address.host)
                nursery.start_soon(self.timers.run)
                if self._group_commit:
                    nursery.start_soon(self._commit_groups)
                nursery.start_soon(self._storage_work)
                self._nursery = nursery
                self._apply(self.node.start(self._now()))
                self._placement_changed()
                nursery.start_soon(trio.serve_listeners, self._connection, listeners)
                log.info("node %s (%s) serving on %s", self.me.node_id, self.actor,
                         self.me.address)
                task_status.started()
        finally:
            self.hints.close()
            self.storage.close()
            log.info("node %s stopped; storage closed", self.me.node_id)

    def _now(self) -> Now:
        return Now(time.monotonic(), time.time_ns() // 1_000_000)

    def dispatch(self, event: Event) -> None:
        """Feed one event to the node logic and carry out the actions, to quiescence.

        With fsync ``always``, actions that follow a write not yet on disk are held back until
        the next sync (group commit): no acknowledgement leaves before the data is durable.
        """
        queue: deque[Event] = deque([event])
        while queue:
            actions = self.node.handle(queue.popleft(), self._now())
            if self.node.placement is not self._saved:
                self._placement_changed()
            if self._group_commit and (self._held or self.storage.unsynced
                                       or self.hints.unsynced):
                self._held.extend(actions)
                self._sync_wanted.set()
            else:
                self._apply(actions, queue)

    def _placement_changed(self) -> None:
        """Save the node's new records, and keep a link to exactly the members not left."""
        placement = self._saved = self.node.placement
        save_records(self.config.data_dir, placement.records.values())
        if self._nursery is None:
            return
        wanted = {m for m in placement.members() if m != self.me.node_id}
        for peer in set(self._links) - wanted:
            self._links.pop(peer).cancel()
            del self._outboxes[peer], self._inboxes[peer]
        for peer in wanted - set(self._links):
            self._outboxes[peer], self._inboxes[peer] = trio.open_memory_channel(OUTBOX_SIZE)
            self.connected[peer] = None
            self._links[peer] = scope = trio.CancelScope()
            self._nursery.start_soon(self._peer_link, peer, scope)

    async def _commit_groups(self) -> None:
        """Sync the commit log for each group of held actions, then carry them out.

        Every task that is ready runs first, so a group holds all the writes that arrived
        meanwhile. The sync itself runs on the event loop: the store runs under libfaketime,
        whose handling of timed waits starves helper threads of the GIL.
        """
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted = trio.Event()
            await trio.lowlevel.cancel_shielded_checkpoint()
            group, self._held = self._held, []
            self.storage.sync()
            self.hints.sync()
            self._apply(group)

    async def _storage_work(self) -> None:
        """Drive the storage engine's flushes and compactions a slice at a time, yielding to
        requests between slices; poll every ``STORAGE_POLL_S`` when idle or after an error."""
        while True:
            await trio.sleep(0 if self.storage.step() else STORAGE_POLL_S)

    def _apply(self, actions: list[Action], queue: deque[Event] | None = None) -> None:
        for action in actions:
            match action:
                case Send(peer, message):
                    if not self._enqueue(peer, message):
                        if queue is None:
                            self.dispatch(Undeliverable(peer, message))
                        else:
                            queue.append(Undeliverable(peer, message))
                case Respond(request, response):
                    waiter = self._waiting.pop(request, None)
                    if waiter is not None:
                        waiter.response = response
                        waiter.done.set()
                case StartTimer(timer, delay):
                    self.timers.start(timer, delay)
                case CancelTimer(timer):
                    self.timers.cancel(timer)

    def _enqueue(self, peer: str, message: Message) -> bool:
        outbox = self._outboxes.get(peer)
        if outbox is None or self.connected.get(peer) is False:
            return False
        try:
            outbox.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    async def request(self, event_for: Callable[[int], Event], timeout: float) -> Response:
        """Run one client request through the node logic and wait for its answer."""
        self._next_request += 1
        request = self._next_request
        waiter = self._waiting[request] = _Waiter()
        self.dispatch(event_for(request))
        with trio.move_on_after(timeout):
            await waiter.done.wait()
        self._waiting.pop(request, None)
        if waiter.response is None:
            return Failed("the node did not answer in time", "unknown")
        return waiter.response

    # -- peers --

    async def _peer_link(self, peer: str, scope: trio.CancelScope) -> None:
        """Keep one outgoing connection to ``peer`` and send everything queued for it, at the
        address its record names, until ``scope`` is cancelled (the peer left)."""
        with scope:
            await self._keep_link(peer)

    async def _keep_link(self, peer: str) -> None:
        inbox = self._inboxes[peer]
        backoff = 0.05
        hello = PREAMBLE + encode_frame(Hello(self.me.node_id, self.config.cluster.cluster_name))
        while True:
            stream = None
            try:
                address = Address.parse(self.node.placement.records[peer].address)
                with trio.fail_after(CONNECT_TIMEOUT):
                    stream = await trio.open_tcp_stream(address.host, address.port)
                    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
                        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                                          PEER_USER_TIMEOUT_MS)
                    await stream.send_all(hello)
            except (OSError, ConfigError, trio.TooSlowError, trio.BrokenResourceError):
                if stream is not None:
                    await stream.aclose()
                if self.connected.get(peer) is None:  # the first attempt failed
                    self.connected[peer] = False
                    self._fail_queued(peer)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            log.info("connected to %s at %s", peer, address)
            self.connected[peer] = True
            backoff = 0.05
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_close, stream, nursery.cancel_scope)
                    while True:
                        batch = [encode_frame(await inbox.receive())]
                        while len(batch) < 256:
                            try:
                                batch.append(encode_frame(inbox.receive_nowait()))
                            except trio.WouldBlock:
                                break
                        await stream.send_all(b"".join(batch))
            except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # raised inside the nursery, so in a group: the connection broke
            finally:
                self.connected[peer] = False
                with trio.CancelScope(shield=True):
                    await stream.aclose()
            log.warning("lost connection to %s", peer)
            self._fail_queued(peer)

    async def _watch_close(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` when the peer closes the connection (it never sends on it)."""
        try:
            while await stream.receive_some(4096):
                pass
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    def _fail_queued(self, peer: str) -> None:
        inbox = self._inboxes.get(peer)
        if inbox is None:
            return
        while True:
            try:
                message = inbox.receive_nowait()
            except trio.WouldBlock:
                return
            self.dispatch(Undeliverable(peer, message))

    async def _connection(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection: a peer's frames, or HTTP."""
        try:
            head = b""
            with trio.move_on_after(10):
                while len(head) < len(PREAMBLE) and PREAMBLE.startswith(head):
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    head += data
            if head.startswith(PREAMBLE):
                await self._peer_session(stream, head[len(PREAMBLE):])
            elif head:
                await self._http_session(stream, head)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("bug while serving a connection; closing it, the node keeps serving")
        finally:
            await stream.aclose()

    async def _peer_session(self, stream: trio.SocketStream, data: bytes) -> None:
        decoder = FrameDecoder()
        peer = None
        try:
            while True:
                for message in decoder.feed(data):
                    if peer is None:
                        peer = self._greet(message)
                    else:
                        self.dispatch(Received(peer, message))
                data = await stream.receive_some(65536)
                if not data:
                    return
        except ProtocolError as exc:
            log.warning("closing connection from %s: %s", peer or "unknown peer", exc)
            self.node.counters["protocol_errors"] = self.node.counters.get("protocol_errors", 0) + 1

    def _greet(self, message: Message) -> str:
        if not isinstance(message, Hello):
            raise ProtocolError("connection did not start with Hello")
        if message.cluster != self.config.cluster.cluster_name:
            raise ProtocolError(f"peer is in cluster {message.cluster!r}")
        return message.node_id

    # -- HTTP --

    async def _http_session(self, stream: trio.SocketStream, data: bytes) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HTTP_HEAD)
        conn.receive_data(data)
        while True:
            try:
                request, body = await self._read_request(conn, stream)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._respond(conn, stream, *_error(exc.error_status_hint, str(exc)))
                return
            except _TooLarge as exc:
                await self._respond(conn, stream, *_error(413, str(exc)))
                return
            if request is None:
                return
            status, headers, payload = await self._route(request, body)
            await self._respond(conn, stream, status, headers, payload,
                                head=request.method == b"HEAD")
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> tuple[h11.Request | None, bytes]:
        request = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None, b""
            elif isinstance(event, h11.Request):
                request = event
                length = dict(event.headers).get(b"content-length")
                if length is not None and length.isdigit() and int(length) >= MAX_PAIR_BYTES:
                    raise _TooLarge(f"request body of {int(length)} bytes; key and value must "
                                    f"stay under {MAX_PAIR_BYTES} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) >= MAX_PAIR_BYTES:
                    raise _TooLarge(f"key and value must stay under {MAX_PAIR_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, status: int,
        headers: list[tuple[str, str]], body: bytes, head: bool = False,
    ) -> None:
        """Send one response; for a HEAD request, its headers only."""
        headers = [*headers, ("content-length", str(len(body)))]
        data = conn.send(h11.Response(status_code=status, headers=headers,
                                       reason=HTTPStatus(status).phrase))
        if body and not head:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)

    async def _route(
        self, request: h11.Request, body: bytes
    ) -> HttpReply:
        path, _, query = request.target.partition(b"?")
        method = request.method.decode()
        if method == "HEAD":
            method = "GET"  # answered like GET; _respond leaves the body out
        if path.startswith(b"/kv/"):
            if method not in ("GET", "PUT", "DELETE"):
                return _error(405, f"{method} is not allowed on /kv/ (GET, PUT, DELETE)",
                              [("allow", "GET, PUT, DELETE")])
            return await self._kv(method, unquote_to_bytes(path[4:]), query, request, body)
        if path.startswith(b"/replica/"):
            if method != "GET":
                return _error(405, "/replica/ only answers GET", [("allow", "GET")])
            key = unquote_to_bytes(path[len(b"/replica/"):])
            if not key:
                return _error(400, "the key must not be empty: use /replica/{key}")
            return _json(200, self.replica(key))
        if path == b"/status":
            if method != "GET":
                return _error(405, "/status only answers GET", [("allow", "GET")])
            return _json(200, self.status())
        if path == b"/placement":
            if method != "GET":
                return _error(405, "/placement only answers GET", [("allow", "GET")])
            return _json(200, {"records": [record_json(r) for r in
                                           self.node.placement.records.values()]})
        if path == b"/leave":
            if method != "POST":
                return _error(405, "/leave only answers POST", [("allow", "POST")])
            refused = self.node.leave(self._now())
            self._placement_changed()
            if refused is not None:
                return _error(409 if refused.later else 400, refused.reason)
            return _json(202, {"status": "leaving"})
        return _error(404, f"no such resource: {path.decode(errors='replace')} "
                           "(try /kv/{key} or /status)")

    async def _kv(
        self, method: str, key: bytes, query: bytes, request: h11.Request, body: bytes
    ) -> HttpReply:
        if not key:
            return _error(400, "the key must not be empty: use /kv/{key}")
        try:
            params = parse_qs(query.decode(), keep_blank_values=True)
            quorum = _quorum(params, "r" if method == "GET" else "w", self.config.cluster.n)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, str(exc))
        if method != "PUT" and body:
            return _error(400, f"{method} takes no request body")
        if len(key) + len(body) >= MAX_PAIR_BYTES:
            return _error(413, f"key and value are {len(key) + len(body)} bytes; they must stay "
                               f"under {MAX_PAIR_BYTES}")
        timeout = 2 * self.config.cluster.request_timeout_ms / 1000 + 1
        if method == "GET":
            response = await self.request(lambda r: ClientGet(r, key, quorum), timeout)
            return _read_response(response)
        try:
            token = dict(request.headers).get(CONTEXT_HEADER.encode(), b"").decode("ascii")
            context = parse_context_token(token)
        except (BadContext, UnicodeDecodeError) as exc:
            return _error(400, f"bad {CONTEXT_HEADER} header: {exc}")
        value = body if method == "PUT" else None
        response = await self.request(lambda r: ClientPut(r, key, value, context, quorum),
                                      timeout)
        return _write_response(response)

    def replica(self, key: bytes) -> dict[str, Any]:
        """What ``GET /replica/{key}`` shows: the versions this node stores for ``key``, as they
        are on its disk, without asking any other replica. For tools that compare replicas."""
        return {
            "node_id": self.me.node_id,
            "key": key.decode("utf-8", "replace"),
            "versions": [_version_json(v) for v in self.storage.get(key)],
        }

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` shows: identity, ring, membership view, config, counters.

        Each member shows its status in the cluster (``joining``, ``normal``, ``leaving``,
        ``left``), its gossip state (``self``, ``alive``, ``suspect``, ``down``; ``gone`` once
        it has left), its heartbeat, how long it has been silent, who suspects it, and whether
        this node's connection to it is up.
        """
        ownership = self.node.ring.ownership()
        gossip = {v["node_id"]: v for v in self.node.membership.status(time.monotonic())}
        return {
            "node_id": self.me.node_id,
            "actor": self.actor,
            "address": str(self.me.address),
            "zone": self.me.zone,
            "wall_clock_ms": time.time_ns() // 1_000_000,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "cluster": asdict(self.config.cluster),
            "ring": {
                "vnodes_per_weight": self.config.cluster.vnodes_per_weight,
                "ownership": {n: round(share, 6) for n, share in sorted(ownership.items())},
            },
            "membership": [
                {"node_id": r.node_id, "address": r.address, "zone": r.zone,
                 "weight": r.weight, "status": r.status,
                 **gossip.get(r.node_id, {"state": "gone"}),
                 "connected": r.node_id == self.me.node_id
                 or bool(self.connected.get(r.node_id))}
                for r in sorted(self.node.placement.records.values(),
                                key=lambda r: natural_key(r.node_id))
            ],
            "node": self.node.status(),
            "storage": self.storage.stats(),
        }


def _version_json(version: Version) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dot": [version.dot.actor, version.dot.counter],
        "context": {actor: counter for actor, (counter, _) in sorted(version.context.items())},
        "timestamp_ms": version.timestamp,
        "deleted": version.value is None,
    }
    if version.value is not None:
        try:
            out["value"] = version.value.decode("utf-8")
        except UnicodeDecodeError:
            out["value_base64"] = base64.b64encode(version.value).decode("ascii")
    return out


class _TooLarge(Exception):
    pass


def _quorum(params: dict[str, list[str]], name: str, n: int) -> int | None:
    """The ``name`` (r or w) override in a parsed query string. Raises ValueError."""
    unknown = sorted(set(params) - {name})
    if unknown:
        raise ValueError(f"unknown query parameter(s): {', '.join(unknown)} (only {name})")
    if name not in params:
        return None
    if len(params[name]) > 1:
        raise ValueError(f"{name} is given more than once")
    text = params[name][0]
    if not text.isdigit() or not 1 <= int(text) <= n:
        raise ValueError(f"{name} must be an integer from 1 to n={n}, not {text!r}")
    return int(text)


def _json(status: int, payload: dict[str, Any],
          headers: list[tuple[str, str]] | None = None) -> HttpReply:
    body = json.dumps(payload, indent=1).encode() + b"\n"
    return status, [("content-type", "application/json"), *(headers or [])], body


def _error(status: int, message: str,
           headers: list[tuple[str, str]] | None = None) -> HttpReply:
    return _json(status, {"error": message}, headers)


def _failed(response: Failed) -> HttpReply:
    return _json(503, {"error": response.reason, "applied": response.applied},
                 [(APPLIED_HEADER, response.applied)])


def _read_response(response: Response) -> HttpReply:
    if isinstance(response, Failed):
        return _failed(response)
    assert isinstance(response, Found)
    context = [(CONTEXT_HEADER, context_token(response.context))]
    live = [v for v in response.versions if v.value is not None]
    if not live:
        return _error(404, "not found", context)
    if len(response.versions) == 1:
        return 200, [("content-type", "application/octet-stream"), *context], live[0].value or b""
    content_type, body = encode_siblings([v.value for v in response.versions])
    return 300, [("content-type", content_type), *context], body


def _write_response(response: Response) -> HttpReply:
    if isinstance(response, Failed):
        return _failed(response)
    assert isinstance(response, Written)
    return 204, [(CONTEXT_HEADER, context_token(response.context))], b""


async def placement_for(config: NodeConfig) -> Placement:
    """Where a starting node takes the cluster's layout from: what it saved in its data
    directory; else, with ``--join``, the seed's records plus its own as a joining member;
    else the configured peers. Raises ConfigError."""
    vnodes = config.cluster.vnodes_per_weight
    me = config.me
    saved = load_records(config.data_dir)
    if saved is not None:
        placement = Placement({r.node_id: r for r in saved}, vnodes, config.cluster.n)
        mine = placement.records.get(me.node_id)
        if mine is None:
            raise ConfigError(f"{config.data_dir} has no record of {me.node_id}")
        if (mine.zone, mine.weight) != (me.zone, me.weight):
            raise ConfigError(f"{me.node_id} was a member with zone {mine.zone!r} and weight "
                              f"{mine.weight}; a node cannot change them")
        if mine.address != str(me.address):
            placement = placement.with_record(
                replace(mine, address=str(me.address), version=mine.version + 1))
        return placement
    if config.join is None:
        members = [Member(m.node_id, m.zone, m.weight) for m in config.members]
        addresses = {m.node_id: str(m.address) for m in config.members}
        return Placement(initial_records(members, addresses, vnodes), vnodes, config.cluster.n)
    seed = config.join
    try:
        async with StoreClient(seed.host, seed.port, timeout=5.0) as client:
            theirs = (await client.status())["cluster"]
            raw = await client.placement()
        records = [record_from_json(r) for r in raw]
    except StoreError as exc:
        raise ConfigError(f"cannot join through {seed}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{seed} sent records this node cannot read: {exc}") from None
    differ = [f"{name} is {mine!r} here, {theirs.get(name)!r} there"
              for name, mine in asdict(config.cluster).items() if theirs.get(name) != mine]
    if differ:
        raise ConfigError(f"this node's cluster settings differ from those of the cluster it "
                          f"joins through {seed}: {'; '.join(differ)}. Every member needs the "
                          f"same settings")
    try:
        return Placement({r.node_id: r for r in records}, vnodes, config.cluster.n).joined(
            me.node_id, str(me.address), me.zone, me.weight)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGINT or SIGTERM, then shut down cleanly."""
    server = Server(config, await placement_for(config))
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(server.run)
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
