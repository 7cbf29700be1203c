"""Configuration of a cluster and of one node, validated when built; loadable from TOML.

A TOML file holds the same names as the command line (all optional but ``node_id``)::

    node_id = "n1"
    listen = "127.0.0.1:7001"
    data_dir = "data/n1"
    zone = "a"
    weight = 1
    # join = "127.0.0.1:7001"    # instead of [peers]: join a running cluster through a member

    [cluster]
    n = 3
    w = 2
    r = 2
    versioning = "vclock"        # or "lww"
    fsync = "always"             # or "interval" (with fsync_interval_ms) or "never"

    [peers]
    n2 = "127.0.0.1:7002"
    n3 = { address = "127.0.0.1:7003", zone = "b", weight = 2 }
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from kvcheck.store.bugs import check_bugs
from kvcheck.store.versions import Versioning

#: When the commit log is synced to disk: before every acknowledgement (with group commit),
#: every ``fsync_interval_ms``, or never (the OS decides).
FsyncPolicy = Literal["always", "interval", "never"]

#: Key plus value must stay under this many bytes (the design's limit).
MAX_PAIR_BYTES = 10 * 1024


class ConfigError(ValueError):
    """A configuration that cannot work, with a message that says which setting and why."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Settings every node of a cluster must share, and the node's own limits (marked "per
    node") that are set the same way."""

    n: int = 3
    w: int = 2
    r: int = 2
    versioning: Versioning = "vclock"
    fsync: FsyncPolicy = "always"
    fsync_interval_ms: int = 50
    request_timeout_ms: int = 1000
    vclock_max_entries: int = 10
    tombstone_grace_ms: int = 600_000
    vnodes_per_weight: int = 128
    gossip_interval_ms: int = 500
    gossip_fanout: int = 2
    suspect_after_ms: int = 3000
    probe_timeout_ms: int = 1000
    sloppy_quorum: bool = True
    antientropy_interval_ms: int = 1000
    read_repair: Literal["async", "blocking"] = "async"
    cluster_name: str = "kvcheck"
    #: The storage engine flushes its memtable to an SSTable past this many bytes.
    memtable_bytes: int = 32 << 20
    #: A write that leaves a key with more siblings than this is logged and counted.
    siblings_warning: int = 25
    #: A write that supersedes none of a key's siblings is refused when the key has this many.
    siblings_max: int = 100
    #: An HTTP client has this long from a request's first byte to its last, and to take the
    #: reply; it sends none for ``http_idle_timeout_ms`` between requests (per node).
    http_request_timeout_ms: int = 10_000
    http_idle_timeout_ms: int = 60_000
    #: HTTP connections a node serves at once; past it, a new one is answered 503 (per node).
    http_max_connections: int = 1000
    #: Deliberate mistakes switched on (:mod:`kvcheck.store.bugs`): for testing the tester.
    bugs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("n", "w", "r", "fsync_interval_ms", "request_timeout_ms",
                     "vclock_max_entries", "vnodes_per_weight", "gossip_interval_ms",
                     "gossip_fanout", "suspect_after_ms", "probe_timeout_ms",
                     "antientropy_interval_ms", "siblings_warning", "siblings_max",
                     "http_request_timeout_ms", "http_idle_timeout_ms", "http_max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(self.memtable_bytes, int) or self.memtable_bytes < 4096:
            raise ConfigError(f"memtable_bytes must be an integer of at least 4096, "
                              f"not {self.memtable_bytes!r}")
        if self.siblings_warning > self.siblings_max:
            raise ConfigError(f"siblings_warning ({self.siblings_warning}) must not exceed "
                              f"siblings_max ({self.siblings_max})")
        if not 1 <= self.w <= self.n or not 1 <= self.r <= self.n:
            raise ConfigError(f"w and r must be between 1 and n={self.n} (w={self.w}, r={self.r})")
        if self.versioning not in get_args(Versioning):
            raise ConfigError(f"versioning must be 'vclock' or 'lww', not {self.versioning!r}")
        if self.fsync not in get_args(FsyncPolicy):
            raise ConfigError(f"fsync must be 'always', 'interval' or 'never', not {self.fsync!r}")
        if self.read_repair not in ("async", "blocking"):
            raise ConfigError(f"read_repair must be 'async' or 'blocking', not "
                              f"{self.read_repair!r}")
        if not isinstance(self.sloppy_quorum, bool):
            raise ConfigError(f"sloppy_quorum must be true or false, not {self.sloppy_quorum!r}")
        if not isinstance(self.tombstone_grace_ms, int) or self.tombstone_grace_ms < 0:
            raise ConfigError("tombstone_grace_ms must be a non-negative integer")
        try:
            object.__setattr__(self, "bugs", check_bugs(self.bugs))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def syncs_before_ack(self) -> bool:
        """Whether the driver holds back what follows a write until the write is synced
        (group commit): fsync ``always``, unless the ``ack-before-fsync`` bug is on."""
        return self.fsync == "always" and "ack-before-fsync" not in self.bugs

    @property
    def sync_period_s(self) -> float | None:
        """How often the node logic syncs storage on a timer; None: never (the driver syncs
        before acknowledging, or nobody does)."""
        timed = self.fsync == "interval" or (self.fsync == "always" and not self.syncs_before_ack)
        return self.fsync_interval_ms / 1000 if timed else None


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6). Raises :class:`ConfigError`."""
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"address must be HOST:PORT, not {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One member of the cluster as every node knows it."""

    node_id: str
    address: Address
    zone: str = "default"
    weight: int = 1

    def __post_init__(self) -> None:
        if not self.node_id or any(c.isspace() or c in ",=" for c in self.node_id):
            raise ConfigError(f"node id must be non-empty, without spaces, ',' or '=': "
                              f"{self.node_id!r}")
        if not isinstance(self.weight, int) or self.weight < 1:
            raise ConfigError(f"weight of {self.node_id} must be a positive integer")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything ``kvstore serve`` needs: who this node is, its peers, and the cluster."""

    me: NodeSpec
    peers: tuple[NodeSpec, ...]
    data_dir: Path
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    #: A running member to join the cluster through, instead of configured peers.
    join: Address | None = None
    #: The file of the secret members prove they hold (:mod:`kvcheck.store.peer_auth`); None:
    #: peers are not authenticated.
    secret_file: Path | None = None

    def __post_init__(self) -> None:
        ids = [self.me.node_id, *(p.node_id for p in self.peers)]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"node ids must be unique: {', '.join(ids)}")
        if self.join is not None and self.peers:
            raise ConfigError("give either peers (a new cluster) or join (a running one), "
                              "not both")
        if self.join is None and self.cluster.n > len(ids):
            raise ConfigError(f"n={self.cluster.n} needs at least {self.cluster.n} nodes, "
                              f"the cluster has {len(ids)}")

    @property
    def members(self) -> tuple[NodeSpec, ...]:
        return (self.me, *self.peers)


def parse_peers(text: str) -> tuple[NodeSpec, ...]:
    """Parse ``n2=HOST:PORT,n3=HOST:PORT``. Raises :class:`ConfigError`."""
    peers = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        node_id, sep, address = item.partition("=")
        if not sep:
            raise ConfigError(f"peer must be ID=HOST:PORT, not {item!r}")
        peers.append(NodeSpec(node_id.strip(), Address.parse(address)))
    return tuple(peers)


def cluster_from_mapping(values: Mapping[str, Any]) -> ClusterConfig:
    """Build a :class:`ClusterConfig`, rejecting unknown names."""
    known = {f.name for f in dataclasses.fields(ClusterConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown cluster setting(s): {', '.join(unknown)}")
    try:
        return ClusterConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


def load_toml(path: Path) -> dict[str, Any]:
    """Read a node configuration file into plain values. Raises :class:`ConfigError`."""
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = sorted(set(raw) - {"node_id", "listen", "data_dir", "zone", "weight",
                                 "cluster", "peers", "join"})
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return raw


def peers_from_mapping(values: Mapping[str, Any]) -> tuple[NodeSpec, ...]:
    """Peers from a TOML ``[peers]`` table: ``id = "HOST:PORT"`` or an inline table."""
    peers = []
    for node_id, spec in values.items():
        if isinstance(spec, str):
            peers.append(NodeSpec(node_id, Address.parse(spec)))
        elif isinstance(spec, Mapping) and "address" in spec:
            extra = sorted(set(spec) - {"address", "zone", "weight"})
            if extra:
                raise ConfigError(f"peer {node_id}: unknown setting(s) {', '.join(extra)}")
            peers.append(NodeSpec(node_id, Address.parse(spec["address"]),
                                  spec.get("zone", "default"), spec.get("weight", 1)))
        else:
            raise ConfigError(f"peer {node_id} must be \"HOST:PORT\" or {{ address = ... }}")
    return tuple(peers)
