"""The server: runs one node's logic over real sockets, timers and files, with trio.

One TCP port serves both people and peers. A connection that opens with
:data:`~kvcheck.store.messages.PREAMBLE` is a peer's: length-prefixed frames, each a message.
Anything else is HTTP/1.1 (see :mod:`kvcheck.store.http`), read by llhttp (httptools).

Read it in this order:

- :mod:`~kvcheck.store.server.driver` — :class:`Server`, the server proper: listens, feeds every
  event to the node logic and carries out the actions it returns (group commit included), and
  gives the storage engine its background steps;
- :mod:`~kvcheck.store.server.timers` — the node's named timers on trio's clock;
- :mod:`~kvcheck.store.server.peers` — the peer protocol: one outgoing connection to every other
  member with its queue, the handshake, frames, and messages reported undeliverable;
- :mod:`~kvcheck.store.server.http_connection` — HTTP/1.1 on one connection: requests read
  within limits of size and time, replies sent;
- :mod:`~kvcheck.store.server.routes` — the HTTP connections, up to a cap, and what each
  request asks of the node;
- :mod:`~kvcheck.store.server.views` — the node's state as JSON, and its answers as replies;
- :mod:`~kvcheck.store.server.startup` — the layout a starting node takes, and :func:`serve`,
  which runs a node until SIGINT or SIGTERM.
"""

from kvcheck.store.server.driver import Server
from kvcheck.store.server.startup import placement_for, serve

__all__ = ["Server", "placement_for", "serve"]
