"""A node's data directory and the identity stored in it."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from store.config import ConfigError

IDENTITY_FILE = "node.json"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a data directory belongs to: the node's actor name, and how many times it started."""

    actor: str
    generation: int


def open_data_dir(path: Path, node_id: str) -> Identity:
    """Create or open ``path`` for ``node_id``, counting one more start of the node.

    The actor is the node id plus a random incarnation chosen when the directory is first
    created, so a node whose data was wiped never stamps a dot it used before. The generation
    grows by one on every call (it orders the node's gossip heartbeats across restarts). Raises
    :class:`~store.config.ConfigError` when the directory belongs to another node or cannot be
    used.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        identity = path / IDENTITY_FILE
        saved = {"node_id": node_id, "actor": f"{node_id}.{secrets.token_hex(3)}",
                 "generation": 0}
        if identity.exists():
            saved = json.loads(identity.read_text())
            if saved.get("node_id") != node_id:
                raise ConfigError(f"{path} holds the data of node {saved.get('node_id')!r}, "
                                  f"not {node_id!r}")
        saved["generation"] = int(saved.get("generation", 0)) + 1
        temporary = identity.with_suffix(".tmp")
        temporary.write_text(json.dumps(saved) + "\n")
        with temporary.open("rb") as f:
            os.fsync(f.fileno())
        temporary.replace(identity)
        return Identity(str(saved["actor"]), saved["generation"])
    except OSError as exc:
        raise ConfigError(f"cannot use data directory {path}: {exc.strerror}") from None
    except (ValueError, KeyError, AttributeError, TypeError):
        raise ConfigError(f"{path / IDENTITY_FILE} is not a valid node identity file") from None
