"""The server proper: one node's logic run over trio, its events fed in, its actions carried out.

A :class:`Server` owns the node (:class:`~kvcheck.store.node.Node`), its storage engine and its
durable hints. Everything that happens to the node — a client's request, a peer's message, a
message that could not leave, a timer — goes through :meth:`Server.dispatch`, which hands the
event to the node and carries out the actions it returns: messages to peers
(:mod:`.peers`), answers to the clients waiting in :meth:`Server.request`, and timers
(:mod:`.timers`). With ``fsync = "always"`` the actions that follow a write wait for the next sync
of the commit log (group commit); if that sync fails, their acknowledgements are taken back
(:func:`~kvcheck.store.replica.unacknowledged`) and the node refuses writes until restarted
(:class:`~kvcheck.store.storage.FailStop`). Between requests the storage engine's flushes and
compactions run a slice at a time, retried with a growing pause after an error (a full disk).

The server listens on one TCP port for both peers and people, and tells them apart by the first
bytes of a connection: the peer preamble (:mod:`.peers`), or else HTTP (:mod:`.http_connection`,
answered by :mod:`.routes`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from kvcheck.store.config import ConfigError, NodeConfig
from kvcheck.store.datadir import open_data_dir, save_records
from kvcheck.store.hints import DurableHints
from kvcheck.store.messages import PREAMBLE
from kvcheck.store.node import (
    Action,
    CancelTimer,
    Event,
    Failed,
    Node,
    Now,
    Refused,
    Respond,
    Response,
    Send,
    StartTimer,
    TimerFired,
    Undeliverable,
)
from kvcheck.store.peer_auth import read_secret
from kvcheck.store.placement import Placement
from kvcheck.store.replica import unacknowledged
from kvcheck.store.server.http_connection import HttpConnections, HttpLimits
from kvcheck.store.server.peers import Peers
from kvcheck.store.server.routes import Routes
from kvcheck.store.server.timers import Timers
from kvcheck.store.storage import EngineOptions, LsmStorage, StorageError

#: The server's one logger (``kvcheck.store.server``), shared by its modules.
log = logging.getLogger(__package__)

#: How often the storage engine is offered background work when it has none in hand.
STORAGE_POLL_S = 0.1
#: The longest pause before background work that failed (a full disk) is tried again.
STORAGE_RETRY_MAX_S = 2.0
#: Seconds an accepted connection has to send enough bytes to tell a peer's from HTTP.
FIRST_BYTES_TIMEOUT_S = 10


class _Waiter:
    """A client request waiting for the node's answer."""

    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: Response | None = None


class Server:
    """One store node. ``await Server(config, placement).run()`` serves until cancelled.

    ``placement`` is the cluster's layout to start from (see
    :func:`~kvcheck.store.server.startup.placement_for`). Raises
    :class:`~kvcheck.store.config.ConfigError` for an unusable data directory and
    :class:`~kvcheck.store.storage.StorageError` (and its subclasses) or
    :class:`~kvcheck.store.storage.CorruptLogError` for damaged or missing storage files, and
    ConfigError for an unreadable or too short secret file, before listening.
    """

    def __init__(self, config: NodeConfig, placement: Placement) -> None:
        self.config = config
        self.me = config.me
        identity = open_data_dir(config.data_dir, self.me.node_id)
        self.actor = identity.actor
        self.storage = LsmStorage(
            config.data_dir, EngineOptions(memtable_bytes=config.cluster.memtable_bytes))
        self.hints = DurableHints(config.data_dir / "hints.log", self.storage.fail_stop)
        self.node = Node(self.me.node_id, self.actor, placement, config.cluster, self.storage,
                         identity.generation, self.hints)
        self._saved = placement  # saved by run(), before it serves, and on every change
        self._unsaved = False  # the last save of the records failed: retried in the background
        self.timers = Timers(lambda timer: self.dispatch(TimerFired(timer)))
        self.peer_auth = config.secret_file is not None
        self.peers = Peers(self.me.node_id, config.cluster.cluster_name, _secret(config),
                           lambda peer: self.node.placement.records[peer].address,
                           self.dispatch, self._count_protocol_error)
        self.routes = Routes(self)
        cluster = config.cluster
        self.http = HttpConnections(
            self.routes.reply, HttpLimits(cluster.http_request_timeout_ms / 1000,
                                          cluster.http_idle_timeout_ms / 1000),
            cluster.http_max_connections, self.node.counters)
        self._nursery: trio.Nursery | None = None
        self._group_commit = config.cluster.syncs_before_ack
        self._held: list[Action] = []
        self._sync_wanted = trio.Event()
        self._waiting: dict[int, _Waiter] = {}
        self._next_request = 0
        self.started_at = time.monotonic()  # /status counts uptime from it

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

    async def _connection(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection: a peer's frames, or HTTP (within the node's HTTP
        limits and connection cap, :class:`.HttpConnections`). One that sends nothing within
        ``FIRST_BYTES_TIMEOUT_S`` is closed."""
        try:
            head = b""
            with trio.move_on_after(FIRST_BYTES_TIMEOUT_S):
                while len(head) < len(PREAMBLE) and PREAMBLE.startswith(head):
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    head += data
            if head.startswith(PREAMBLE):
                await self.peers.serve(stream, head[len(PREAMBLE):])
            elif head:
                await self.http.serve(stream, head)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("bug while serving a connection; closing it, the node keeps serving")
        finally:
            await stream.aclose()

    # -- events in, actions out --

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

    def _apply(self, actions: list[Action], queue: deque[Event] | None = None) -> None:
        """Carry out ``actions``; a message that cannot leave becomes an Undeliverable event,
        appended to ``queue`` if given, else dispatched at once."""
        for action in actions:
            match action:
                case Send(peer, message):
                    if not self.peers.send(peer, message):
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

    async def request(self, event_for: Callable[[int], Event], timeout: float) -> Response:
        """Run one client request through the node logic and wait for its answer:
        ``event_for`` makes the request's event from its id. After ``timeout`` seconds without
        an answer, a Failed response whose outcome is unknown."""
        self._next_request += 1
        request = self._next_request
        waiter = self._waiting[request] = _Waiter()
        try:
            self.dispatch(event_for(request))
            with trio.move_on_after(timeout):
                await waiter.done.wait()
        finally:
            self._waiting.pop(request, None)
        if waiter.response is None:
            return Failed("the node did not answer in time", "unknown")
        return waiter.response

    def leave(self) -> Refused | None:
        """Start this node's leave (the node logic then moves its keys away and gossips it), or
        say why it is refused."""
        refused = self.node.leave(self._now())
        self._placement_changed()
        return refused

    def _placement_changed(self) -> None:
        """Save the node's new records, and keep a link to exactly the members not left."""
        placement = self._saved = self.node.placement
        self._save_records()
        if self._nursery is not None:
            self.peers.keep_links((m for m in placement.members() if m != self.me.node_id),
                                  self._nursery)

    def _save_records(self) -> None:
        """Save the records in use; on failure (a full disk), log it and leave it to
        :meth:`_storage_work` to try again. Gossip brings back what a restart meanwhile
        would start without."""
        try:
            save_records(self.config.data_dir, self._saved.records.values())
        except OSError as exc:
            if not self._unsaved:
                log.error("cannot save the cluster's layout, will retry: %s", exc)
            self._unsaved = True
        else:
            self._unsaved = False

    def _count_protocol_error(self) -> None:
        self.node.counters["protocol_errors"] = self.node.counters.get("protocol_errors", 0) + 1

    # -- background --

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
            try:
                self.storage.sync()
                self.hints.sync()
            except StorageError as exc:  # the fail-stop has tripped: no acknowledgement
                group = unacknowledged(group, str(exc))
            self._apply(group)

    async def _storage_work(self) -> None:
        """Drive the storage engine's flushes and compactions a slice at a time, yielding to
        requests between slices; poll every ``STORAGE_POLL_S`` when idle. After an error (a full
        disk), wait twice as long each time, up to ``STORAGE_RETRY_MAX_S``, and try again; a
        save of the records that failed is tried again at the same pace."""
        pause = STORAGE_POLL_S
        while True:
            pending = self.storage.step()
            if self._unsaved:
                self._save_records()
            if self.storage.background_error is None and not self._unsaved:
                pause = STORAGE_POLL_S
                await trio.sleep(0 if pending else STORAGE_POLL_S)
            else:
                await trio.sleep(pause)
                pause = min(pause * 2, STORAGE_RETRY_MAX_S)


def _secret(config: NodeConfig) -> bytes | None:
    """The secret of ``config.secret_file``, with a warning for a file others may read; without
    one, a warning that peers are not authenticated. Raises ConfigError."""
    if config.secret_file is None:
        log.warning("no --secret-file: peers are not authenticated, and anyone who can reach "
                    "this node's port can change its data (docs/store.md, \"Security and "
                    "failure model\")")
        return None
    try:
        secret, warning = read_secret(config.secret_file)
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {config.secret_file}: "
                          f"{exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if warning:
        log.warning("%s", warning)
    return secret
