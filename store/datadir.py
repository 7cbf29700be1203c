"""A node's data directory: the identity stored in it, and the cluster layout it last saw."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from kvcheck.store.config import ConfigError
from kvcheck.store.placement import STATUSES, Record, Status

IDENTITY_FILE = "node.json"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a data directory belongs to: the node's actor name, and how many times it started."""

    actor: str
    generation: int


class _IdentityFile(TypedDict):
    """The JSON object in :data:`IDENTITY_FILE`."""

    node_id: str
    actor: str
    generation: int


def open_data_dir(path: Path, node_id: str) -> Identity:
    """Create or open ``path`` for ``node_id``, counting one more start of the node.

    The actor is the node id plus a random incarnation chosen when the directory is first
    created, so a node whose data was wiped never stamps a dot it used before. The generation
    grows by one on every call (it orders the node's gossip heartbeats across restarts). On a
    full disk the file is rewritten in place (it fits in the space it has), so a node can start
    there. Raises :class:`~kvcheck.store.config.ConfigError` when the directory belongs to
    another node or cannot be used.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        identity = path / IDENTITY_FILE
        saved: _IdentityFile = {"node_id": node_id,
                                "actor": f"{node_id}.{secrets.token_hex(3)}", "generation": 0}
        if identity.exists():
            saved = json.loads(identity.read_text())
            if saved.get("node_id") != node_id:
                raise ConfigError(f"{path} holds the data of node {saved.get('node_id')!r}, "
                                  f"not {node_id!r}")
        saved["generation"] = int(saved.get("generation", 0)) + 1
        _save_identity(identity, json.dumps(saved) + "\n")
        return Identity(str(saved["actor"]), saved["generation"])
    except OSError as exc:
        raise ConfigError(f"cannot use data directory {path}: {exc.strerror}") from None
    except (ValueError, KeyError, AttributeError, TypeError):
        raise ConfigError(f"{path / IDENTITY_FILE} is not a valid node identity file") from None


def _save_identity(identity: Path, text: str) -> None:
    """Write ``text`` to ``identity`` durably: a new file renamed over it, or on a full disk
    (when there is an old one) the old one overwritten in place. Raises OSError."""
    temporary = identity.with_suffix(".tmp")
    try:
        temporary.write_text(text)
        with temporary.open("rb") as f:
            os.fsync(f.fileno())
        temporary.replace(identity)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not identity.exists():
            raise
        with identity.open("r+b") as f:
            f.write(text.encode())
            f.truncate()
            f.flush()
            os.fsync(f.fileno())


PLACEMENT_FILE = "placement.json"


class RecordJSON(TypedDict):
    """A :class:`~kvcheck.store.placement.Record` as JSON: tokens as a list, digests as hex."""

    node_id: str
    address: str
    zone: str
    weight: int
    status: Status
    version: int
    tokens: list[int]
    view: str
    streamed: str


def record_json(record: Record) -> RecordJSON:
    """A record as JSON (tokens as a list, digests as hex)."""
    return {"node_id": record.node_id, "address": record.address, "zone": record.zone,
            "weight": record.weight, "status": record.status, "version": record.version,
            "tokens": list(record.tokens), "view": record.view.hex(),
            "streamed": record.streamed.hex()}


def record_from_json(raw: RecordJSON) -> Record:
    """The inverse of :func:`record_json`. Raises ValueError, KeyError or TypeError."""
    status = raw["status"]
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    return Record(str(raw["node_id"]), str(raw["address"]), str(raw["zone"]),
                  int(raw["weight"]), status, int(raw["version"]),
                  tuple(int(t) for t in raw["tokens"]), bytes.fromhex(raw["view"]),
                  bytes.fromhex(raw["streamed"]))


def load_records(path: Path) -> list[Record] | None:
    """The records the node saved in data directory ``path`` (None if it saved none).
    Raises :class:`~kvcheck.store.config.ConfigError` for a damaged file."""
    file = path / PLACEMENT_FILE
    try:
        raw = json.loads(file.read_text())
        return [record_from_json(r) for r in raw["records"]]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{file} is damaged ({exc}); remove it to start from the "
                          f"configured peers or --join") from None


def save_records(path: Path, records: Iterable[Record]) -> None:
    """Save the records durably (write, fsync, rename). Raises OSError."""
    file = path / PLACEMENT_FILE
    temporary = file.with_suffix(".tmp")
    temporary.write_text(json.dumps({"records": [record_json(r) for r in records]}) + "\n")
    with temporary.open("rb") as f:
        os.fsync(f.fileno())
    temporary.replace(file)
