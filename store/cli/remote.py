"""``kvstore get``, ``put``, ``delete``, ``status`` and ``leave``: talk to a running node.

Values go to standard output as they are; contexts and progress to standard error, so that
``kvstore get`` can be piped.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from kvcheck.store.cli.exitcodes import Exit
from kvcheck.store.client import ConnectionFailed, RequestRejected, StoreClient, StoreError
from kvcheck.store.config import Address

DEFAULT_NODE = "127.0.0.1:7001"
DEFAULT_TIMEOUT = 5.0


def register(commands: Any) -> None:
    """Add the commands that talk to a node to the ``kvstore`` subcommands ``commands``."""
    for name, text in (("get", "read a key"), ("put", "write a key"),
                       ("delete", "delete a key"), ("status", "show a node's status"),
                       ("leave", "decommission a node: hand its keys over, then leave")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--node", default=DEFAULT_NODE, metavar="HOST:PORT",
                         help="the node to ask (default: %(default)s)")
        sub.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                         help="seconds to wait for the answer (default: %(default)g)")
        if name == "leave":
            sub.add_argument("--wait", action="store_true",
                             help="wait until the node has left, showing progress")
        elif name != "status":
            sub.add_argument("key")
        if name == "put":
            sub.add_argument("value", help="the value, or - to read it from standard input")
        if name in ("put", "delete"):
            sub.add_argument("--context", default="",
                             help="causal context from a get (default: none: a new version "
                             "concurrent with any there)")
            sub.add_argument("--w", type=int,
                             help="write quorum for this request (default: the cluster's)")
        if name == "get":
            sub.add_argument("--r", type=int,
                             help="read quorum for this request (default: the cluster's)")
        sub.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    return trio.run(_talk, args)


async def _talk(args: argparse.Namespace) -> int:
    address = Address.parse(args.node)
    async with StoreClient(address.host, address.port, timeout=args.timeout) as client:
        try:
            if args.command == "status":
                print(json.dumps(await client.status(), indent=2))
            elif args.command == "leave":
                await client.leave()
                print(f"{args.node} is leaving", file=sys.stderr)
                if args.wait:
                    await _wait_until_left(client)
            elif args.command == "get":
                read = await client.get(args.key, r=args.r)
                return _print_read(read.values, read.context)
            elif args.command == "put":
                value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
                context = await client.put(args.key, value, args.context, w=args.w)
                print(f"context: {context}", file=sys.stderr)
            else:
                context = await client.delete(args.key, args.context, w=args.w)
                print(f"context: {context}", file=sys.stderr)
        except RequestRejected as exc:
            print(f"kvstore: rejected: {exc}", file=sys.stderr)
            return Exit.USAGE
        except ConnectionFailed as exc:
            print(f"kvstore: {exc} (write applied: {exc.applied})", file=sys.stderr)
            return Exit.UNREACHABLE
        except StoreError as exc:
            print(f"kvstore: {exc} (write applied: {exc.applied})", file=sys.stderr)
            return Exit.UNAVAILABLE
    return Exit.OK


async def _wait_until_left(client: StoreClient) -> None:
    """Poll the node's status until its record says ``left``, printing what it waits for
    whenever that changes."""
    said = ""
    while True:
        status = await client.status()
        layout = status["node"]["placement"]
        records = {r["node_id"]: r for r in layout["records"]}
        me = records[status["node_id"]]
        if me["status"] == "left":
            print(f"{status['node_id']} has left the cluster; it can be stopped", file=sys.stderr)
            return
        down = {m["node_id"] for m in status["membership"] if m["state"] == "down"}
        line = f"{me['status']}: " + _leave_progress(layout, records, down,
                                                     status["cluster"]["n"])
        if line != said:
            print(line, file=sys.stderr)
            said = line
        await trio.sleep(0.5)


def _leave_progress(layout: dict[str, Any], records: dict[str, dict[str, Any]],
                    down: set[str], n: int) -> str:
    """What a leave waits for, in words, from a ``/status`` layout (``down``: members the
    node's gossip shows down, which the change does not wait for)."""
    if not layout["in_transition"]:
        staying = sum(r["status"] in ("joining", "normal") for r in records.values())
        return (f"on hold: {staying} members would remain, the cluster needs n={n}; "
                f"it goes on once members join")
    behind = [i for i, r in records.items()
              if r["status"] != "left" and not r["uses_this_placement"] and i not in down]
    if behind:
        return f"waiting until every member has seen the change (not yet: {', '.join(behind)})"
    streaming = [g for g in layout["gainers"] if not records[g]["streamed_this_transition"]]
    if streaming:
        return f"keys are moving to their new replicas (still pulling: {', '.join(streaming)})"
    return "switching"


def _print_read(values: tuple[bytes | None, ...], context: str) -> int:
    out = sys.stdout.buffer
    if not values:
        print("not found", file=sys.stderr)
    elif len(values) == 1:
        out.write(values[0] or b"")
        out.write(b"\n")
    else:
        for i, value in enumerate(values, 1):
            out.write(f"sibling {i}: ".encode() + (b"<deleted>" if value is None else value))
            out.write(b"\n")
    out.flush()
    if context:
        print(f"context: {context}", file=sys.stderr)
    return Exit.OK if values else Exit.NOT_FOUND
