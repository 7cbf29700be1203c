"""``kvcheck serve``: browse past runs over HTTP, read-only."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from kvcheck.harness.cli.options import add_histories
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.serve import make_server


def register(commands: Any) -> None:
    """Add ``serve`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser("serve", help="browse past runs over HTTP",
                            description="Serve the runs under --histories, newest first, with "
                            "their reports and files (read-only; nothing outside --histories).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080,
                   help="port (default: %(default)s; 0 picks a free one)")
    add_histories(p, "the directory of runs (default: %(default)s)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, out: Console, err: Console) -> int:
    if not args.histories.is_dir():
        err.print(f"kvcheck serve: no such directory: {args.histories}", markup=False)
        return Exit.USAGE
    try:
        server = make_server(args.histories, args.host, args.port)
    except OSError as exc:
        err.print(f"kvcheck serve: cannot listen on {args.host}:{args.port}: {exc}",
                  markup=False)
        return Exit.USAGE
    host, port = server.socket.getsockname()[:2]
    out.print(f"serving {args.histories} on http://{host}:{port}/ (Ctrl-C stops)",
              markup=False, highlight=False)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            return Exit.OK
    return Exit.OK
