"""Ops, histories and test configurations: the checkers' input, read from files on disk.

The format is specified in ``docs/history-format.md`` (version 1). In short: JSON Lines, one op
per line, an optional header line ``{"format": "kvcheck-history", "version": 1}`` first.

Two views of a history:

* :class:`Op` -- one line: an invocation or a completion (or a nemesis event).
* :class:`Call` -- a client invocation paired with its completion (see :func:`pair_calls`).
  A call whose completion is ``info``, or that has none, is *indeterminate*: it may or may not
  have taken effect, at any time after its invocation.

Errors in the input raise :class:`HistoryError`, whose message names the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kvcheck.checkers.guarantees import GUARANTEES, derived_guarantee, quorums_intersect

HISTORY_FORMAT = "kvcheck-history"
HISTORY_FORMAT_VERSION = 1
FINAL_STATE_FORMAT = "kvcheck-final-state"
FINAL_STATE_FORMAT_VERSION = 1

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
OP_TYPES = frozenset({INVOKE, OK, FAIL, INFO})
NEMESIS = "nemesis"

_CORE_FIELDS = ("index", "time", "process", "type", "f", "key", "value", "node", "error")
_CORE_SET = frozenset(_CORE_FIELDS)
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


class HistoryError(ValueError):
    """Malformed input: a history, a test configuration or a final state.

    ``path`` and ``line`` (1-based, or ``None``) say where; ``str(err)`` reads
    ``path:line: message`` and is meant for the user as is.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None,
                 line: int | None = None) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)


def freeze(value: Any) -> Any:
    """JSON value to an immutable one: lists become tuples (recursively, also inside dicts)."""
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return {k: freeze(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class Op:
    """One history line. Validated on construction (raises ``ValueError``).

    ``process`` is a non-negative int for clients, ``"nemesis"`` for the nemesis. ``time`` is
    nanoseconds since the test started. ``value`` is frozen (lists become tuples). ``extra``
    holds the workload's own fields (e.g. ``final``).
    """

    index: int
    time: int
    process: int | str
    type: str
    f: str
    key: Any = None
    value: Any = None
    node: str | None = None
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _NO_EXTRA)

    def __post_init__(self) -> None:
        if type(self.index) is not int or self.index < 0:
            raise ValueError(f"index must be a non-negative int, got {self.index!r}")
        if type(self.time) is not int or self.time < 0:
            raise ValueError(f"time must be a non-negative int (ns), got {self.time!r}")
        p = self.process
        if not ((type(p) is int and p >= 0) or p == NEMESIS):
            raise ValueError(f'process must be a non-negative int or "nemesis", got {p!r}')
        if self.type not in OP_TYPES:
            raise ValueError(f"type must be one of invoke/ok/fail/info, got {self.type!r}")
        if not isinstance(self.f, str) or not self.f:
            raise ValueError(f"f must be a non-empty string, got {self.f!r}")
        if self.node is not None and not isinstance(self.node, str):
            raise ValueError(f"node must be a string or null, got {self.node!r}")
        if self.error is not None and not isinstance(self.error, str):
            raise ValueError(f"error must be a string or null, got {self.error!r}")
        if not (self.key is None or isinstance(self.key, str | int | tuple)):
            raise ValueError(f"key must be a string, int or null, got {self.key!r}")

    @property
    def final(self) -> bool:
        """True for a final read (made after the heal and the recovery wait)."""
        return bool(self.extra.get("final", False))

    def to_json(self) -> dict[str, Any]:
        """The op as a JSON object (the inverse of :func:`op_from_json`)."""
        out: dict[str, Any] = {
            "index": self.index, "time": self.time, "process": self.process,
            "type": self.type, "f": self.f, "key": self.key, "value": self.value,
            "node": self.node,
        }
        if self.error is not None:
            out["error"] = self.error
        out.update(self.extra)
        return out


def op_from_json(obj: Mapping[str, Any]) -> Op:
    """Build an :class:`Op` from a decoded JSON object; raises ``ValueError`` if malformed."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("index", "time", "process", "type", "f") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    extra = {k: freeze(v) for k, v in obj.items() if k not in _CORE_SET} or _NO_EXTRA
    return Op(
        index=obj["index"], time=obj["time"], process=obj["process"], type=obj["type"],
        f=obj["f"], key=freeze(obj.get("key")), value=freeze(obj.get("value")),
        node=obj.get("node"), error=obj.get("error"), extra=extra,
    )


def iter_history(path: str | os.PathLike[str]) -> Iterator[Op]:
    """Yield the ops of a kvcheck JSONL history file, validating as it goes.

    Raises :class:`HistoryError` (naming file and line) on a malformed line, an unsupported
    format version, or indexes that do not strictly increase. Blank lines are skipped.
    """
    last_index = -1
    loads = json.loads
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as e:
        raise HistoryError(f"cannot read history: {e.strerror}", path) from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = loads(line)
            except ValueError as e:
                raise HistoryError(f"not valid JSON: {e}", path, lineno) from None
            if lineno == 1 and isinstance(obj, dict) and "format" in obj and "index" not in obj:
                _check_header(obj, path)
                continue
            try:
                op = op_from_json(obj)
            except (ValueError, TypeError) as e:
                raise HistoryError(f"malformed op: {e}", path, lineno) from None
            if op.index <= last_index:
                raise HistoryError(
                    f"index {op.index} does not follow {last_index} (indexes must increase)",
                    path, lineno)
            last_index = op.index
            yield op


def _check_header(obj: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    if obj.get("format") != HISTORY_FORMAT:
        raise HistoryError(f"not a kvcheck history header: {obj.get('format')!r}", path, 1)
    if obj.get("version") != HISTORY_FORMAT_VERSION:
        raise HistoryError(
            f"history format version {obj.get('version')!r} is not supported "
            f"(this kvcheck reads version {HISTORY_FORMAT_VERSION})", path, 1)


def read_history(path: str | os.PathLike[str]) -> list[Op]:
    """All ops of a kvcheck JSONL history file; see :func:`iter_history` for errors."""
    return list(iter_history(path))


def write_history(path: str | os.PathLike[str], ops: Iterable[Op], header: bool = True) -> None:
    """Write ops as a version-1 JSONL history (used by tests and benchmarks)."""
    with open(path, "w", encoding="utf-8") as f:
        if header:
            f.write(json.dumps({"format": HISTORY_FORMAT, "version": HISTORY_FORMAT_VERSION}))
            f.write("\n")
        for op in ops:
            f.write(json.dumps(op.to_json()))
            f.write("\n")


@dataclass(frozen=True, slots=True)
class Call:
    """A client invocation paired with its completion (``None`` if the history ends first).

    ``type`` is the completion's type, or ``"info"`` when there is no completion.
    ``ret_index`` is ``None`` for an indeterminate call: it stays open to the end.
    """

    invoke: Op
    complete: Op | None

    @property
    def process(self) -> int | str:
        return self.invoke.process

    @property
    def f(self) -> str:
        return self.invoke.f

    @property
    def key(self) -> Any:
        return self.invoke.key

    @property
    def type(self) -> str:
        return INFO if self.complete is None else self.complete.type

    @property
    def inv_index(self) -> int:
        return self.invoke.index

    @property
    def ret_index(self) -> int | None:
        """Index of the completion; ``None`` when indeterminate (info or missing)."""
        if self.complete is None or self.complete.type == INFO:
            return None
        return self.complete.index

    @property
    def value_in(self) -> Any:
        return self.invoke.value

    @property
    def value_out(self) -> Any:
        return None if self.complete is None else self.complete.value

    @property
    def indexes(self) -> tuple[int, ...]:
        """The history indexes of this call's lines (invocation, and completion if any)."""
        if self.complete is None:
            return (self.invoke.index,)
        return (self.invoke.index, self.complete.index)

    @property
    def latency_ns(self) -> int | None:
        """Nanoseconds from invocation to completion; None for a call that never completed."""
        if self.complete is None:
            return None
        return self.complete.time - self.invoke.time


def pair_calls(ops: Iterable[Op], path: str | os.PathLike[str] | None = None) -> list[Call]:
    """Pair each client invocation with the next completion of the same process.

    Returns calls ordered by invocation. Nemesis ops are skipped. Raises :class:`HistoryError`
    when a process invokes twice without completing, completes without invoking, or completes
    with a different ``f`` or ``key`` (the line named is the op's ``index``).
    """
    pending: dict[int | str, int] = {}
    calls: list[Call | None] = []
    invokes: list[Op] = []
    for op in ops:
        p = op.process
        if p == NEMESIS:
            continue
        if op.type == INVOKE:
            if p in pending:
                raise HistoryError(
                    f"process {p} invokes op {op.index} while op "
                    f"{invokes[pending[p]].index} is still open", path)
            pending[p] = len(invokes)
            invokes.append(op)
            calls.append(None)
            continue
        slot = pending.pop(p, None)
        if slot is None:
            raise HistoryError(f"op {op.index}: process {p} completes {op.f!r} without an "
                               "invocation", path)
        inv = invokes[slot]
        if inv.f != op.f:
            raise HistoryError(f"op {op.index}: completion f {op.f!r} does not match "
                               f"invocation {inv.index} f {inv.f!r}", path)
        if op.key is not None and inv.key is not None and op.key != inv.key:
            raise HistoryError(f"op {op.index}: completion key {op.key!r} does not match "
                               f"invocation {inv.index} key {inv.key!r}", path)
        calls[slot] = Call(inv, op)
    return [c if c is not None else Call(invokes[i], None) for i, c in enumerate(calls)]


@dataclass(frozen=True, slots=True)
class TestConfig:
    """The fields of ``test.json`` the checkers read (others are kept in ``raw``).

    ``n``, ``w``, ``r``: replication factor and quorums (``None`` if the store has none);
    ``sloppy_quorum``: whether writes may land on nodes outside the preference list;
    ``versioning``: ``"vector-clock"`` (reads may return siblings) or ``"lww"``;
    ``workload``: ``"register"`` or ``"set"``; ``checkers``: names to run (``None``: the
    workload's default); ``guarantee``: what the test declares it expects (one of
    :data:`~.guarantees.GUARANTEES`; ``None``: derived from N, W, R, see :attr:`expected`);
    ``zones``: node → the zone (data center) it is in, every node of the test and maybe spares
    (empty: one implicit zone; see :func:`zone_groups`); ``write_context``: ``"last-read"``
    when each write of a register carries the causal context of its process's last ok read of
    the key, as the reference store's client does (``None``: unknown); ``vclock_max_entries``:
    how many entries a version's vector clock keeps before it is pruned (``None``: unknown).
    """

    __test__ = False  # not a pytest test class

    workload: str = "register"
    n: int | None = None
    w: int | None = None
    r: int | None = None
    sloppy_quorum: bool = False
    versioning: str = "vector-clock"
    nodes: tuple[str, ...] = ()
    nemesis: Any = None
    checkers: tuple[str, ...] | None = None
    guarantee: str | None = None
    history_format: int = HISTORY_FORMAT_VERSION
    zones: Mapping[str, str] = field(default_factory=dict)
    write_context: str | None = None
    vclock_max_entries: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("n", "w", "r"):
            v = getattr(self, name)
            if v is not None and (type(v) is not int or v < 1):
                raise ValueError(f"{name} must be a positive int or null, got {v!r}")
        if not isinstance(self.sloppy_quorum, bool):
            raise ValueError(f"sloppy_quorum must be a boolean, got {self.sloppy_quorum!r}")
        if self.versioning not in ("vector-clock", "lww"):
            raise ValueError(f'versioning must be "vector-clock" or "lww", '
                             f"got {self.versioning!r}")
        if not isinstance(self.workload, str):
            raise ValueError(f"workload must be a string, got {self.workload!r}")
        if self.guarantee is not None and self.guarantee not in GUARANTEES:
            raise ValueError(f"guarantee must be one of {', '.join(GUARANTEES)}, "
                             f"got {self.guarantee!r}")
        if self.write_context not in (None, "last-read"):
            raise ValueError(f'write_context must be "last-read" or null, '
                             f"got {self.write_context!r}")
        v = self.vclock_max_entries
        if v is not None and (type(v) is not int or v < 1):
            raise ValueError(f"vclock_max_entries must be a positive int or null, got {v!r}")
        if self.history_format != HISTORY_FORMAT_VERSION:
            raise ValueError(f"history_format {self.history_format!r} is not supported")
        zones_from_json(self.zones)

    @property
    def expected(self) -> str | None:
        """The guarantee the test is held to: the declared one, else the one its N, W, R and
        quorums promise (:func:`~.guarantees.derived_guarantee`), else ``None`` (unknown)."""
        if self.guarantee is not None:
            return self.guarantee
        if self.n is None or self.w is None or self.r is None:
            return None
        return derived_guarantee(self.n, self.w, self.r, self.sloppy_quorum)

    @property
    def strict_quorum(self) -> bool:
        """True when N, W, R are known, W + R > N, and quorums are not sloppy."""
        return (self.n is not None and self.w is not None and self.r is not None
                and quorums_intersect(self.n, self.w, self.r, self.sloppy_quorum))

    @property
    def promises_latest_reads(self) -> bool:
        """Whether a read must see every write completed before it began (no stale reads):
        whether the :attr:`expected` guarantee promises it."""
        expected = self.expected
        return expected is not None and GUARANTEES[expected].latest_reads

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TestConfig:
        """Build from a decoded ``test.json``; raises ``ValueError`` if a field is malformed."""
        if not isinstance(obj, Mapping):
            raise ValueError("test.json must hold a JSON object")
        checkers = obj.get("checkers")
        if checkers is not None:
            if not (isinstance(checkers, list) and all(isinstance(c, str) for c in checkers)):
                raise ValueError("checkers must be a list of names")
            checkers = tuple(checkers)
        nodes = obj.get("nodes", ())
        if not (isinstance(nodes, list | tuple) and all(isinstance(n, str) for n in nodes)):
            raise ValueError("nodes must be a list of node names")
        return cls(
            workload=obj.get("workload", "register"), n=obj.get("n"), w=obj.get("w"),
            r=obj.get("r"), sloppy_quorum=obj.get("sloppy_quorum", False),
            versioning=obj.get("versioning", "vector-clock"), nodes=tuple(nodes),
            nemesis=obj.get("nemesis"), checkers=checkers,
            guarantee=obj.get("guarantee") or obj.get("expect") or None,
            history_format=obj.get("history_format", HISTORY_FORMAT_VERSION),
            zones=zones_from_json(obj.get("zones", {})),
            write_context=obj.get("write_context"),
            vclock_max_entries=obj.get("vclock_max_entries"), raw=dict(obj),
        )


def zones_from_json(zones: Any) -> dict[str, str]:
    """``test.json``'s ``zones`` as a new dict, node → zone; raises ``ValueError`` unless it is
    an object of strings to non-empty strings."""
    if not isinstance(zones, Mapping):
        raise ValueError("zones must be an object of node names to zone names, got "
                         f"{type(zones).__name__}")
    for node, zone in zones.items():
        if not isinstance(node, str) or not isinstance(zone, str) or not zone:
            raise ValueError(f"zones: node {node!r} must name a non-empty zone, got {zone!r}")
    return dict(zones)


def zone_groups(zones: Mapping[str, str]) -> dict[str, list[str]]:
    """Zone → its nodes: zones sorted by name, nodes in ``zones``' order. Empty unless
    ``zones`` names two zones or more: the one rule for whether a test *has zones*. A single
    zone is the one implicit zone of a ``test.json`` without ``zones``, and nothing is counted
    or shown per zone then."""
    groups: dict[str, list[str]] = {}
    for node, zone in zones.items():
        groups.setdefault(zone, []).append(node)
    return dict(sorted(groups.items())) if len(groups) >= 2 else {}


def read_test_config(path: str | os.PathLike[str]) -> TestConfig:
    """Read ``test.json``; raises :class:`HistoryError` naming the file when malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise HistoryError(f"cannot read test configuration: {e.strerror}", path) from None
    try:
        return TestConfig.from_json(json.loads(text))
    except ValueError as e:
        raise HistoryError(f"malformed test configuration: {e}", path) from None


def read_final_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``final-state.json`` (format in ``docs/history-format.md``).

    Returns the decoded object. Raises :class:`HistoryError` naming the file when malformed.
    """
    try:
        obj: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))  # validated below
    except OSError as e:
        raise HistoryError(f"cannot read final state: {e.strerror}", path) from None
    except ValueError as e:
        raise HistoryError(f"not valid JSON: {e}", path) from None
    try:
        validate_final_state(obj)
    except ValueError as e:
        raise HistoryError(f"malformed final state: {e}", path) from None
    return obj


def validate_final_state(obj: Any) -> None:
    """Raise ``ValueError`` unless ``obj`` is a version-1 final state."""
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    if obj.get("format") != FINAL_STATE_FORMAT or obj.get("version") != FINAL_STATE_FORMAT_VERSION:
        raise ValueError(f'expected "format": "{FINAL_STATE_FORMAT}", '
                         f'"version": {FINAL_STATE_FORMAT_VERSION}')
    samples = obj.get("samples")
    if not isinstance(samples, list):
        raise ValueError("samples must be a list")
    last = -1
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or type(s.get("time")) is not int:
            raise ValueError(f"sample {i}: needs an int time")
        if s["time"] < last:
            raise ValueError(f"sample {i}: times must not decrease")
        last = s["time"]
        nodes = s.get("nodes")
        if not isinstance(nodes, dict):
            raise ValueError(f"sample {i}: nodes must be an object")
        for node, keys in nodes.items():
            if keys is None:
                continue  # node unreachable at that sample
            if not isinstance(keys, dict):
                raise ValueError(f"sample {i}: node {node}: expected an object of keys or null")
            for key, rep in keys.items():
                if not isinstance(rep, dict) or not ("digest" in rep or "versions" in rep):
                    raise ValueError(f"sample {i}: node {node}: key {key}: "
                                     "needs digest or versions")
    replicas = obj.get("replicas")
    if replicas is not None and not (
        isinstance(replicas, dict)
        and all(isinstance(v, list) and all(isinstance(n, str) for n in v)
                for v in replicas.values())):
        raise ValueError("replicas must map keys to lists of node names")
    heal = obj.get("heal_time")
    if heal is not None and type(heal) is not int:
        raise ValueError("heal_time must be an int (ns) or null")


def by_key(calls: Iterable[Call]) -> dict[Any, list[Call]]:
    """Group calls by key, keeping their order."""
    out: dict[Any, list[Call]] = {}
    for c in calls:
        out.setdefault(c.key, []).append(c)
    return out
