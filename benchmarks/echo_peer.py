"""The cheapest database a client worker can drive: a peer that echoes each request back.

    with running_peer() as port:             # a peer process on a port of its own
        client = EchoClient(port)

:class:`EchoClient` is a harness client (:class:`kvcheck.harness.databases.Client`) whose every
operation is one 64-byte exchange with this peer, answered ``ok``. Driven through the harness's
own workers, it costs what the harness itself costs per operation (pacing, timeouts, the
workload, the history, trio's scheduling) and next to nothing for a protocol: the floor under
``harness_bench``'s figures. The peer runs in its own process, so its CPU is not counted.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import subprocess
import sys
from collections.abc import Iterator

import trio

from kvcheck.harness.databases import Completion, Ok, Operation

REQUEST = b"x" * 64


class EchoClient:
    """One connection to the echo peer on ``127.0.0.1:port``, opened by the first operation."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._socket: socket.socket | None = None

    async def invoke(self, op: Operation) -> Completion:
        """One exchange; ``ok`` with the operation's own value."""
        sock = self._socket or await self._connect()
        sock.send(REQUEST)  # 64 bytes into an empty send buffer: never short
        received = 0
        while received < len(REQUEST):
            await trio.lowlevel.wait_readable(sock)
            received += len(sock.recv(65536))
        return Ok(op.value)

    async def close(self) -> None:
        if self._socket is not None:
            sock, self._socket = self._socket, None
            trio.lowlevel.notify_closing(sock)
            sock.close()
        await trio.lowlevel.checkpoint()

    async def _connect(self) -> socket.socket:
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        self._socket = socket.socket(fileno=stream.socket.detach())
        self._socket.setblocking(False)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._socket


@contextlib.contextmanager
def running_peer() -> Iterator[int]:
    """Run the peer in a process of its own for the ``with`` block; yield its port. It listens
    before it starts, so a client may connect at once; it is killed on the way out."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        peer = subprocess.Popen([sys.executable, __file__, str(listener.fileno())],
                                pass_fds=[listener.fileno()], stdin=subprocess.DEVNULL)
        try:
            yield listener.getsockname()[1]
        finally:
            peer.kill()
            peer.wait()


def serve(listener: socket.socket) -> None:
    """Echo whatever arrives on any connection ``listener`` accepts, until killed."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if sock is listener:
                connection, _ = listener.accept()
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(connection, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
                if data:
                    sock.sendall(data)
                    continue
            except ConnectionError:
                pass
            selector.unregister(sock)
            sock.close()


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))  # the listener running_peer passed
