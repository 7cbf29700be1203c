"""Reading Jepsen histories into kvcheck ops.

Three layouts are recognised, by the file's first character outside whitespace and ``;``
comments:

* ``{`` -- EDN op maps, one per line, as in Jepsen's ``history.edn``
  (``{:type :invoke, :f :write, :value 3, :process 0, :time 123, :index 0}``); a map may also
  span lines. Tagged maps such as ``#jepsen.history.Op{...}`` read as maps.
* ``[`` or ``(`` -- one EDN vector or list of op maps (as in Knossos' test data).
* anything else -- a log: lines of the ``jepsen.util`` form
  ``INFO  jepsen.util - 3<TAB>:ok<TAB>:cas<TAB>[3 0]`` (process, type, f, value and an optional
  error, tab-separated); other log lines are ignored.

Independent keys (``jepsen.independent``): when every client op's value is a ``[key value]``
pair (and every ``cas`` value a ``[key [old new]]`` pair), ops are split by key. This is
detected (``independent="auto"``) or forced (``"yes"``/``"no"``).

Missing ``:index`` fields are numbered in file order; a missing ``:time`` is 0. Keywords in
``:f``, ``:type`` and ``:process`` become strings (``:nemesis`` -> ``"nemesis"``); keywords in
values stay :class:`~kvcheck.checkers.edn.Keyword`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvcheck.checkers.edn import EDNError, Keyword, Symbol, loads, loads_all
from kvcheck.checkers.history import NEMESIS, HistoryError, Op

_LOG_LINE = re.compile(r"jepsen\.util\s+-\s+(.*)$")


def _name(x: Any) -> Any:
    if isinstance(x, Keyword | Symbol):
        return x.name
    return x


def _error_text(x: Any) -> str | None:
    if x is None:
        return None
    if isinstance(x, str):
        return x
    if isinstance(x, Keyword | Symbol):
        return str(x)
    return _edn_repr(x)


def _edn_repr(x: Any) -> str:
    if x is None:
        return "nil"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, tuple):
        return "[" + " ".join(_edn_repr(v) for v in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{_edn_repr(k)} {_edn_repr(v)}" for k, v in x.items()) + "}"
    if isinstance(x, str):
        return '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(x)


def op_from_edn(m: Mapping[Any, Any], default_index: int) -> Op:
    """Build an :class:`Op` from a Jepsen op map; raises ``ValueError`` when malformed."""
    if not isinstance(m, Mapping):
        raise ValueError(f"expected an op map, got {_edn_repr(m)}")
    fields = {_name(k): v for k, v in m.items()}
    for req in ("type", "f", "process"):
        if req not in fields:
            raise ValueError(f"op map has no :{req}")
    process = _name(fields["process"])
    if isinstance(process, str):
        if process != NEMESIS:
            raise ValueError(f"process must be an integer or :nemesis, got {process!r}")
    elif type(process) is not int:
        raise ValueError(f"process must be an integer or :nemesis, got {_edn_repr(process)}")
    f = _name(fields["f"])
    if not isinstance(f, str):
        f = _edn_repr(f)
    index = fields.get("index", default_index)
    t = fields.get("time", 0)
    extra = {k: v for k, v in fields.items()
             if isinstance(k, str) and k not in ("type", "f", "process", "value", "index",
                                                 "time", "error", "node")}
    node = fields.get("node")
    return Op(index=index, time=t if type(t) is int and t >= 0 else 0, process=process,
              type=_name(fields["type"]), f=f, key=None, value=fields.get("value"),
              node=_name(node) if isinstance(node, str | Keyword | Symbol) else None,
              error=_error_text(fields.get("error")), extra=extra)


def _parse_log_line(rest: str, index: int) -> Op:
    parts = rest.split("\t")
    if len(parts) < 3:
        raise ValueError("expected process, type, f and value separated by tabs")
    process = loads(parts[0])
    typ = loads(parts[1])
    f = loads(parts[2])
    value = loads(parts[3]) if len(parts) > 3 and parts[3].strip() else None
    error = "\t".join(parts[4:]).strip() or None if len(parts) > 4 else None
    m = {"process": process, "type": typ, "f": f, "value": value, "index": index}
    if error is not None:
        m["error"] = error
    return op_from_edn(m, index)


def read_jepsen_history(path: str | os.PathLike[str], independent: str = "auto") -> list[Op]:
    """Read a Jepsen history file (any layout above) into ops.

    ``independent``: ``"auto"``, ``"yes"`` or ``"no"`` (see module docstring). Raises
    :class:`HistoryError` naming the file and line for unreadable files, malformed EDN, op maps
    that are not ops, and indexes that do not increase.
    """
    if independent not in ("auto", "yes", "no"):
        raise ValueError(f"independent must be auto, yes or no, got {independent!r}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise HistoryError(f"cannot read history: {e.strerror}", path) from None
    except UnicodeDecodeError as e:
        raise HistoryError(f"not UTF-8 text: {e.reason}", path) from None
    first = _first_significant(text)
    ops: list[Op] = []
    if not first:
        raise HistoryError("empty history", path)
    if first in "{#":
        ops = _read_edn_lines(text, path)
    elif first in "[(":
        try:
            forms = loads_all(text)
        except EDNError as e:
            raise HistoryError(f"malformed EDN: {e.message}", path, e.line) from None
        if len(forms) != 1 or not isinstance(forms[0], tuple):
            raise HistoryError("expected one vector or list of op maps", path)
        for i, m in enumerate(forms[0]):
            try:
                ops.append(op_from_edn(m, i))
            except ValueError as e:
                raise HistoryError(f"op {i}: {e}", path) from None
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            mo = _LOG_LINE.search(line)
            if mo is None:
                continue
            try:
                ops.append(_parse_log_line(mo.group(1), len(ops)))
            except (EDNError, ValueError) as e:
                raise HistoryError(f"malformed jepsen.util line: {e}", path, lineno) from None
        if not ops:
            raise HistoryError("no jepsen.util op lines found", path)
    last = -1
    for op in ops:
        if op.index <= last:
            raise HistoryError(f"op index {op.index} does not follow {last}", path)
        last = op.index
    return _split_independent(ops, independent, path)


def _first_significant(text: str) -> str:
    """The first character that is not whitespace or inside a ``;`` comment ("" if none)."""
    for line in text.splitlines():
        s = line.lstrip(" \t\r,")
        if s and not s.startswith(";"):
            return s[0]
    return ""


def _read_edn_lines(text: str, path: str | os.PathLike[str]) -> list[Op]:
    ops: list[Op] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        try:
            m = loads(line)
        except EDNError as e:
            if "unclosed" not in e.message and "end of input" not in e.message:
                raise HistoryError(f"malformed EDN: {e.message}", path, lineno) from None
            break  # a map spanning lines: read the whole text below
        try:
            ops.append(op_from_edn(m, len(ops)))
        except ValueError as e:
            raise HistoryError(f"malformed op: {e}", path, lineno) from None
    else:
        return ops
    # Maps spanning lines: read the whole text.
    try:
        forms = loads_all(text)
    except EDNError as e:
        raise HistoryError(f"malformed EDN: {e.message}", path, e.line) from None
    ops = []
    for i, m in enumerate(forms):
        try:
            ops.append(op_from_edn(m, i))
        except ValueError as e:
            raise HistoryError(f"op {i}: {e}", path) from None
    return ops


def _is_pair(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) == 2


def _split_independent(ops: list[Op], independent: str, path: str | os.PathLike[str]
                       ) -> list[Op]:
    client = [op for op in ops if op.process != NEMESIS]
    if independent == "no" or not client:
        return ops
    looks = all(_is_pair(op.value) and (op.f != "cas" or _is_pair(op.value[1])
                                        or op.value[1] is None)
                for op in client)
    if independent == "auto" and not looks:
        return ops
    out = []
    for op in ops:
        if op.process == NEMESIS:
            out.append(op)
            continue
        if not _is_pair(op.value):
            raise HistoryError(f"op {op.index}: expected a [key value] pair", path)
        k, v = op.value
        if not isinstance(k, str | int | tuple):
            k = _edn_repr(k)
        out.append(Op(op.index, op.time, op.process, op.type, op.f, k, v, op.node, op.error,
                      op.extra))
    return out
