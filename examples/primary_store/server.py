"""A tiny primary-backup key-value store: the system under test of kvcheck's example adapter.

    python3 server.py --listen HOST:PORT --nodes PRIMARY,BACKUP... --data-dir DIR [--reads local]

Every node serves ``GET /kv/KEY`` (200 and the value; 404 if the key was never written) and
``PUT /kv/KEY`` (the body is the value; 204). The first of ``--nodes`` is the primary and holds
the truth: it appends each write to ``DIR/log`` and fsyncs it before answering, and every
:data:`PUSH_EVERY` seconds it sends all it holds to each backup (``PUT /copy``). A backup
forwards writes to the primary, and reads too — unless ``--reads local``: then it answers from
its copy, which may be :data:`PUSH_EVERY` seconds old. When a backup cannot reach the primary it
says whether the request got there: 502 (it was never sent: nothing happened) or 504 (it was
sent, and no answer came: a write may have happened). ``GET /health`` is 200 once the node
serves: at once on the primary, on a backup once it has its first copy.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PUSH_EVERY = 0.5  # seconds between two copies sent to a backup
FORWARD_TIMEOUT = 1.0  # seconds a backup waits for the primary


class Unsent(Exception):
    """No connection could be made: the request was never sent."""


def send(address: str, method: str, path: str, body: str | None = None) -> tuple[int, str]:
    """The status and body of ``address``'s answer to one request. Raises :class:`Unsent`, or
    ``OSError`` / ``http.client.HTTPException`` when the answer did not come."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=FORWARD_TIMEOUT)
    try:
        try:
            connection.connect()
        except OSError as error:
            raise Unsent(error) from error
        connection.request(method, path, body)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


class Node(ThreadingHTTPServer):
    """One node: its data, and whether it is the primary."""

    def __init__(self, listen: str, nodes: list[str], data_dir: str, reads: str) -> None:
        host, port = listen.rsplit(":", 1)
        super().__init__((host, int(port)), Handler)
        self.primary, self.backups = nodes[0], nodes[1:]
        self.is_primary = listen == self.primary
        self.local_reads = self.is_primary or reads == "local"
        self.has_copy = self.is_primary
        self.lock = threading.Lock()
        self.data: dict[str, str] = {}
        os.makedirs(data_dir, exist_ok=True)
        path = os.path.join(data_dir, "log")
        if os.path.exists(path):  # restarted (after a kill): replay the log
            with open(path) as log:
                self.data.update(json.loads(line) for line in log)
        self.log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def write(self, key: str, value: str) -> None:
        """Apply a write on the primary, on disk first (one append, then fsync)."""
        with self.lock:
            os.write(self.log, (json.dumps([key, value]) + "\n").encode())
            os.fsync(self.log)
            self.data[key] = value

    def push_forever(self, backup: str) -> None:
        """Send ``backup`` a copy of everything every :data:`PUSH_EVERY` seconds."""
        never = threading.Event()  # its wait() is the sleep: time.sleep fails under libfaketime
        while not never.wait(PUSH_EVERY):
            with self.lock:
                copy = json.dumps(self.data)
            with contextlib.suppress(Unsent, OSError, http.client.HTTPException):
                send(backup, "PUT", "/copy", copy)  # if it fails, the next one will do


class Handler(BaseHTTPRequestHandler):
    server: Node

    def do_GET(self) -> None:
        node = self.server
        if self.path == "/health":
            self.answer(200 if node.has_copy else 503)
        elif not node.local_reads:
            self.forward()
        else:
            with node.lock:
                value = node.data.get(self.path.removeprefix("/kv/"))
            if value is None:
                self.answer(404)
            else:
                self.answer(200, value)

    def do_PUT(self) -> None:
        node = self.server
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        if self.path == "/copy":
            with node.lock:
                node.data, node.has_copy = json.loads(body), True
            self.answer(204)
        elif node.is_primary:
            node.write(self.path.removeprefix("/kv/"), body)
            self.answer(204)
        else:
            self.forward(body)

    def forward(self, body: str | None = None) -> None:
        """Ask the primary, and answer what it answered (or 502 / 504: module docstring)."""
        try:
            status, text = send(self.server.primary, self.command, self.path, body)
        except Unsent as error:
            status, text = 502, f"primary unreachable: {error}"
        except (OSError, http.client.HTTPException) as error:
            status, text = 504, f"primary did not answer: {error}"
        self.answer(status, text)

    def answer(self, status: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser(description="A tiny primary-backup key-value store.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--nodes", required=True, metavar="PRIMARY,BACKUP...",
                        help="every node's HOST:PORT, the primary first")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--reads", choices=("primary", "local"), default="primary",
                        help="where a backup reads: through the primary, or its own copy")
    args = parser.parse_args()
    node = Node(args.listen, args.nodes.split(","), args.data_dir, args.reads)
    for backup in node.backups if node.is_primary else []:
        threading.Thread(target=node.push_forever, args=(backup,), daemon=True).start()
    print(f"serving on {args.listen} as {'primary' if node.is_primary else 'a backup'}",
          flush=True)
    node.serve_forever()


if __name__ == "__main__":
    main()
