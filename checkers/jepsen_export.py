"""Writing kvcheck histories as Jepsen histories (``kvcheck export --format jepsen``).

Layout: one op map per line, in the order of the history, as Jepsen's store writes
``history.edn`` (``prn`` of each op) and as Knossos' command line, Elle and
``jepsen.history`` read it. The maps are plain (``{...}``, not ``#jepsen.history.Op{...}``) so
that any EDN reader takes them without knowing Jepsen's record types. Keys come in the order of
Jepsen's ``Op`` record: ``:index :time :type :process :f :value``, then ``:error``, ``:node`` and
the workload's own fields (``:final``; a name that cannot be a keyword stays a string).

What maps to what (docs/history-format.md, "Exported histories", has the table):

* ``process``: the integer, or ``:nemesis``; ``type`` and ``f`` become keywords (an ``f`` that
  cannot be a keyword stays a string). ``index`` and ``time`` (ns) are kept as they are, so the
  ops that kvcheck's anomalies name keep their numbers.
* Keys: when any client op has a key, every client op's value becomes a ``[key value]`` tuple,
  as ``jepsen.independent`` writes them (a ``cas`` value ``[key [old new]]``; a missing key is
  ``nil``); nemesis values are never wrapped.
* Register reads (a list of sibling versions in kvcheck): none -> ``nil``, one -> the value,
  several -> an EDN set of them, ``#{v1 v2}``, a value no register write wrote (so Knossos, as
  kvcheck, finds the read not linearizable). A ``delete`` is a ``:write`` of ``nil``: the
  register reads as ``nil`` after it, as kvcheck's linearizability checker has it.
* Set reads: the elements as an EDN set, ``#{1 2 3}``, as Jepsen's set workloads read them.
  Where an element repeats (a set cannot hold it twice) a vector keeps every copy.
* Nemesis values: JSON objects become maps with keyword keys (``{:fault "partition",
  :targets ["n1"]}``), as Jepsen's nemeses write theirs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from kvcheck.checkers.edn import Keyword, dumps, is_keyword_name
from kvcheck.checkers.history import NEMESIS, OK, Op


def workload_of(ops: Iterable[Op]) -> str:
    """The workload a history without ``test.json`` comes from: ``"set"`` if any op adds an
    element, else ``"register"``."""
    return "set" if any(op.f == "add" for op in ops) else "register"


def jepsen_lines(ops: Sequence[Op], workload: str = "register") -> Iterator[str]:
    """Each op of ``ops`` as one line of Jepsen EDN, newline included (module docstring).

    ``workload`` (``"register"`` or ``"set"``) says what a read's list of values means. Raises
    ``ValueError`` for another workload and ``TypeError`` for a value with no EDN form.
    """
    if workload not in ("register", "set"):
        raise ValueError(f'workload must be "register" or "set", got {workload!r}')
    keyed = any(op.key is not None for op in ops if op.process != NEMESIS)
    return (dumps(jepsen_op(op, workload, keyed)) + "\n" for op in ops)


def jepsen_op(op: Op, workload: str, keyed: bool) -> dict[Keyword | str, Any]:
    """The Jepsen op map of ``op``; ``keyed``: wrap client values in ``[key value]`` tuples."""
    nemesis = op.process == NEMESIS
    f = "write" if op.f == "delete" and workload == "register" else op.f
    value = _nemesis_value(op.value) if nemesis else _client_value(op, workload)
    if keyed and not nemesis:
        value = (op.key, value)
    m: dict[Keyword | str, Any] = {
        Keyword("index"): op.index, Keyword("time"): op.time, Keyword("type"): Keyword(op.type),
        Keyword("process"): Keyword(NEMESIS) if nemesis else op.process,
        Keyword("f"): Keyword(f) if is_keyword_name(f) else f, Keyword("value"): value}
    if op.error is not None:
        m[Keyword("error")] = op.error
    if op.node is not None:
        m[Keyword("node")] = op.node
    for name, v in op.extra.items():
        m[Keyword(name) if is_keyword_name(name) else name] = v
    return m


def _client_value(op: Op, workload: str) -> Any:
    v = op.value
    if op.f == "delete" and workload == "register":
        return None
    if op.f != "read" or op.type != OK or not isinstance(v, list | tuple):
        return v
    if workload == "set":
        return _as_set(v)
    if not v:
        return None
    if len(v) == 1:
        return v[0]
    return _as_set(v)


def _as_set(values: Sequence[Any]) -> Any:
    """``values`` as a set, or as they are when one repeats or cannot be a set element."""
    try:
        s = frozenset(values)
    except TypeError:  # a dict or a list among them
        return values
    return s if len(s) == len(values) else values


def _nemesis_value(v: Any) -> Any:
    if isinstance(v, dict):
        return {Keyword(k) if isinstance(k, str) and is_keyword_name(k) else k: _nemesis_value(x)
                for k, x in v.items()}
    if isinstance(v, list | tuple):
        return tuple(_nemesis_value(x) for x in v)
    return v
