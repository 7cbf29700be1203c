"""The cluster settings as ``kvstore`` flags: one per field of :class:`ClusterConfig`, its type,
choices and default read from ``store/config.py``, its help written here.

A flag that is not given is None, so that what is not given on the command line comes from the
TOML file (``kvstore serve --config``), and what is in neither from :class:`ClusterConfig`. A
true/false setting is a flag with its ``--no-`` form (``--sloppy-quorum``,
``--no-sloppy-quorum``), as in ``kvcheck``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvcheck.store.config import ClusterConfig

#: What each setting does; ``--help`` adds its default.
_HELP = {
    "n": "replicas per key",
    "w": "write quorum: replicas that must acknowledge a put",
    "r": "read quorum: replicas that must answer a get",
    "versioning": "vclock: concurrent writes are kept as siblings; lww: the last write by wall "
                  "clock wins",
    "fsync": "when the commit log is synced to disk: always (before every acknowledgement, "
             "with group commit), every --fsync-interval-ms (interval), or never (the OS "
             "decides)",
    "fsync_interval_ms": "milliseconds between syncs with --fsync interval",
    "request_timeout_ms": "milliseconds a coordinator waits for its quorum before a request "
                          "fails",
    "vclock_max_entries": "entries a version's vector clock keeps; past it the oldest are "
                          "dropped",
    "tombstone_grace_ms": "milliseconds a delete's tombstone is kept before it may be purged",
    "vnodes_per_weight": "virtual nodes on the ring per unit of a node's weight",
    "gossip_interval_ms": "milliseconds between gossip rounds",
    "gossip_fanout": "peers each gossip round goes to",
    "suspect_after_ms": "milliseconds of silence after which a member is suspected (and shown "
                        "down once another source agrees)",
    "probe_timeout_ms": "milliseconds an indirect probe of a suspect waits for its answer",
    "sloppy_quorum": "sloppy quorums: requests go to the first N healthy nodes of the key's ring "
                     "walk and stand-ins keep hints; --no-sloppy-quorum keeps them to the key's "
                     "N preference-list replicas (strict quorums)",
    "antientropy_interval_ms": "milliseconds between anti-entropy sessions (Merkle trees "
                               "compared with one live peer at a time)",
    "read_repair": "async: a get answers, then repairs stale replicas; blocking: it repairs "
                   "them before answering",
    "cluster_name": "the name every node of a cluster shares: connections from a node of "
                    "another cluster are refused",
    "memtable_bytes": "the storage engine flushes its memtable to an SSTable past this many "
                      "bytes",
    "siblings_warning": "a write that leaves a key with more siblings than this is logged and "
                        "counted (siblings_warnings in /status)",
    "siblings_max": "a write that supersedes none of a key's siblings is refused (409) when the "
                    "key has this many; a write with a read's context is always taken",
    "http_request_timeout_ms": "milliseconds an HTTP client has from a request's first byte to "
                               "its last, and to take the reply (408, then closed); per node",
    "http_idle_timeout_ms": "milliseconds a kept-alive HTTP connection may stay idle between "
                            "requests before it is closed; per node",
    "http_max_connections": "HTTP connections served at once; past it a new one is answered "
                            "503 and closed; per node",
}


@dataclass(frozen=True, slots=True)
class Setting:
    """One cluster setting: its ClusterConfig field, type, choices, default and help."""

    name: str
    kind: type
    choices: tuple[str, ...] | None
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def metavar(self) -> str | None:
        """``MS``, ``BYTES`` or ``NAME`` where the name says the unit; None for argparse's."""
        for suffix, metavar in (("_ms", "MS"), ("_bytes", "BYTES"), ("_name", "NAME")):
            if self.name.endswith(suffix):
                return metavar
        return None


def _settings() -> tuple[Setting, ...]:
    types = typing.get_type_hints(ClusterConfig)
    settings = []
    for f in dataclasses.fields(ClusterConfig):
        if f.name == "bugs":  # not a setting: ``--bug NAME``, repeatable (kvstore serve)
            continue
        kind = types[f.name]
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else None
        settings.append(Setting(f.name, str if choices else kind, choices, f.default,
                                _HELP[f.name]))
    return tuple(settings)


SETTINGS = _settings()


def add_cluster_settings(parser: argparse.ArgumentParser, title: str) -> None:
    """One flag per cluster setting, each None unless given, in a group named ``title``."""
    group = parser.add_argument_group(title)
    for s in SETTINGS:
        if s.kind is bool:
            default = "on" if s.default else "off"
            group.add_argument(s.flag, dest=s.name, action=argparse.BooleanOptionalAction,
                               default=None, help=f"{s.help} (default: {default})")
        else:
            group.add_argument(s.flag, dest=s.name, type=s.kind, choices=s.choices,
                               metavar=s.metavar, default=None,
                               help=f"{s.help} (default: {s.default})")


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The cluster settings given as flags, by name."""
    return {s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name) is not None}


def as_flags(values: Mapping[str, Any]) -> list[str]:
    """``kvstore serve`` flags that give these cluster settings."""
    flags = []
    for s in SETTINGS:
        if s.name in values:
            value = values[s.name]
            if s.kind is bool:
                flags.append(s.flag if value else "--no-" + s.flag[2:])
            else:
                flags.append(f"{s.flag}={value}")
    return flags
