"""``kvstore secret``: print a new cluster secret, for ``kvstore serve --secret-file``."""

from __future__ import annotations

import argparse
from typing import Any

from kvcheck.store.cli.exitcodes import Exit
from kvcheck.store.peer_auth import new_secret


def register(commands: Any) -> None:
    """Add ``secret`` to the ``kvstore`` subcommands ``commands``."""
    secret = commands.add_parser(
        "secret", help="print a new cluster secret",
        description="Print a new random secret (256 bits, hex). Save it once, readable only by "
        "the store's user (umask 077; kvstore secret > FILE), and give every member the same "
        "file with --secret-file.")
    secret.set_defaults(handler=_secret)


def _secret(args: argparse.Namespace) -> int:
    print(new_secret())
    return Exit.OK
