"""A node's data directory and the identity stored in it."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from store.config import ConfigError

IDENTITY_FILE = "node.json"


def open_data_dir(path: Path, node_id: str) -> str:
    """Create or open ``path`` for ``node_id``; return the node's actor name.

    The actor is the node id plus a random incarnation chosen when the directory is first
    created, so a node whose data was wiped never stamps a dot it used before. Raises
    :class:`~store.config.ConfigError` when the directory belongs to another node or cannot be
    used.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        identity = path / IDENTITY_FILE
        if identity.exists():
            saved = json.loads(identity.read_text())
            if saved.get("node_id") != node_id:
                raise ConfigError(f"{path} holds the data of node {saved.get('node_id')!r}, "
                                  f"not {node_id!r}")
            return str(saved["actor"])
        actor = f"{node_id}.{secrets.token_hex(3)}"
        temporary = identity.with_suffix(".tmp")
        temporary.write_text(json.dumps({"node_id": node_id, "actor": actor}) + "\n")
        with temporary.open("rb") as f:
            os.fsync(f.fileno())
        temporary.replace(identity)
        return actor
    except OSError as exc:
        raise ConfigError(f"cannot use data directory {path}: {exc.strerror}") from None
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"{path / IDENTITY_FILE} is not a valid node identity file") from None
