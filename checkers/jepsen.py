"""Reading Jepsen histories into kvcheck ops.

A path is a history file or a Jepsen run directory (whose history :mod:`.jepsen_store` finds,
as it finds the runs of a test directory or of the whole ``store/``). Three layouts of a file
are recognised, by its first character outside whitespace and ``;`` comments:

* ``{`` -- EDN op maps, one per line, as in Jepsen's ``history.edn``
  (``{:type :invoke, :f :write, :value 3, :process 0, :time 123, :index 0}``); a map may also
  span lines. Tagged maps such as ``#jepsen.history.Op{...}`` read as maps.
* ``[`` or ``(`` -- one EDN vector or list of op maps (as in Knossos' test data).
* anything else -- text: ``jepsen.util``'s lines of process, type, f, value and an optional
  error, as ``history.txt`` holds them (``3<TAB>:ok<TAB>:cas<TAB>[3 0]``) and ``jepsen.log``
  logs them after ``jepsen.util -`` (Jepsen before 0.2) or ``jepsen.util:`` (since). Columns
  may be separated by any whitespace, tabs or runs of spaces (a copied log has lost its tabs):
  each of the first four is one EDN form, and the rest of the line is the error. Lines that do
  not read ``PROCESS :TYPE ...`` (after the log prefix, if any) are ignored.

Independent keys (``jepsen.independent``): when every client op's value is a ``[key value]``
pair (and every ``cas`` value a ``[key [old new]]`` pair), ops are split by key. This is
detected (``independent="auto"``) or forced (``"yes"``/``"no"``).

Missing ``:index`` fields are numbered in file order; a missing ``:time`` is 0. Keywords in
``:f``, ``:type`` and ``:process`` become strings (``:nemesis`` -> ``"nemesis"``); keywords in
values stay :class:`~kvcheck.checkers.edn.Keyword`.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvcheck.checkers.edn import EDNError, Keyword, Symbol, dumps, loads, loads_all, loads_some
from kvcheck.checkers.history import NEMESIS, HistoryError, Op
from kvcheck.checkers.jepsen_store import HISTORY_FILES, run_history

# Where a jepsen.log line's op starts: after "jepsen.util - " (log4j) or "jepsen.util: " (logback).
_LOG_PREFIX = re.compile(r"\bjepsen\.util(?::|\s+-)\s")
# What an op line starts with: a process (an integer or a keyword), then a type.
_OP_START = re.compile(r"[\s,]*(?:-?\d+|:[^\s,]+)[\s,]+:(?:invoke|ok|fail|info)(?:[\s,]|$)")


def _name(x: Any) -> Any:
    if isinstance(x, Keyword | Symbol):
        return x.name
    return x


def _error_text(x: Any) -> str | None:
    if x is None:
        return None
    if isinstance(x, str):
        return x
    return dumps(x)


def op_from_edn(m: Mapping[Any, Any], default_index: int) -> Op:
    """Build an :class:`Op` from a Jepsen op map; raises ``ValueError`` when malformed."""
    if not isinstance(m, Mapping):
        raise ValueError(f"expected an op map, got {dumps(m)}")
    fields = {_name(k): v for k, v in m.items()}
    for req in ("type", "f", "process"):
        if req not in fields:
            raise ValueError(f"op map has no :{req}")
    process = _name(fields["process"])
    if isinstance(process, str):
        if process != NEMESIS:
            raise ValueError(f"process must be an integer or :nemesis, got {process!r}")
    elif type(process) is not int:
        raise ValueError(f"process must be an integer or :nemesis, got {dumps(process)}")
    f = _name(fields["f"])
    if not isinstance(f, str):
        f = dumps(f)
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


# The common shape of a jepsen.util op line -- a process, a type, a plain :f keyword and a value
# that is nil, an integer or a pair of them, nothing after -- read without the EDN reader, which
# reads every other line. Both read a line of this shape as the same op.
_INT = r"(?:0|-?[1-9][0-9]*)"
_PLAIN_VALUE = rf"nil|{_INT}|\[[\s,]*(?:nil|{_INT})[\s,]+(?:nil|{_INT})[\s,]*\]"
_PLAIN_OP = re.compile(rf"[\s,]*(0|[1-9][0-9]*|:nemesis)[\s,]+:(invoke|ok|fail|info)[\s,]+"
                       rf":([A-Za-z][A-Za-z0-9_*+!?<>=.-]*)(?:[\s,]+({_PLAIN_VALUE}))?[\s,]*")
_PLAIN_ATOM = re.compile(rf"nil|{_INT}")


def _parse_log_line(rest: str, index: int) -> Op:
    """An op from ``rest``, the columns of a ``jepsen.util`` line; raises ``ValueError``."""
    plain = _PLAIN_OP.fullmatch(rest)
    if plain is None:
        return _parse_edn_columns(rest, index)
    process, typ, f, text = plain.groups()
    atoms = tuple(None if a == "nil" else int(a) for a in _PLAIN_ATOM.findall(text or "nil"))
    return Op(index=index, time=0, process=NEMESIS if process == ":nemesis" else int(process),
              type=typ, f=f, value=atoms if text and text.startswith("[") else atoms[0])


def _parse_edn_columns(rest: str, index: int) -> Op:
    """:func:`_parse_log_line` for any line: its columns read as EDN forms."""
    forms, error = loads_some(rest, 4)
    if len(forms) < 3:
        raise ValueError("expected process, type, f and value")
    process, typ, f = forms[:3]
    m = {"process": process, "type": typ, "f": f, "value": forms[3] if len(forms) > 3 else None,
         "index": index}
    error = error.strip(" \t\r\n,")  # commas are whitespace in EDN
    if error:
        m["error"] = error
    return op_from_edn(m, index)


def read_jepsen_history(path: str | os.PathLike[str], independent: str = "auto") -> list[Op]:
    """Read a Jepsen history (any layout above, or a run directory's history) into ops.

    ``independent``: ``"auto"``, ``"yes"`` or ``"no"`` (see module docstring). Raises
    :class:`HistoryError` naming the file and line for unreadable, empty or binary files,
    malformed EDN, op maps that are not ops, indexes that do not increase, and a directory
    without a history; ``ValueError`` for another ``independent``.
    """
    if independent not in ("auto", "yes", "no"):
        raise ValueError(f"independent must be auto, yes or no, got {independent!r}")
    p = Path(path)
    if p.is_dir():
        found = run_history(p)
        if found is None:
            raise HistoryError(f"not a Jepsen run directory (no {', '.join(HISTORY_FILES)})", p)
        p = found
    text = read_text(p)
    first = _first_significant(text)
    ops: list[Op] = []
    if not first:
        raise HistoryError("empty history", p)
    if first in "{#":
        ops = _read_edn_lines(text, p)
    elif first in "[(":
        try:
            forms = loads_all(text)
        except EDNError as e:
            raise _malformed(e, p) from None
        if len(forms) != 1 or not isinstance(forms[0], tuple):
            raise HistoryError("expected one vector or list of op maps", p)
        for i, m in enumerate(forms[0]):
            try:
                ops.append(op_from_edn(m, i))
            except ValueError as e:
                raise HistoryError(f"op {i}: {e}", p) from None
    else:
        ops = _read_text_lines(text, p)
    last = -1
    for op in ops:
        if op.index <= last:
            raise HistoryError(f"op index {op.index} does not follow {last}", p)
        last = op.index
    return _split_independent(ops, independent, p)


def read_text(path: str | os.PathLike[str], limit: int | None = None) -> str:
    """The file at ``path`` (or its first ``limit`` bytes) as text.

    Raises :class:`HistoryError` naming the file (and the line) when it cannot be read, is not
    UTF-8, or holds a NUL byte (binary data).
    """
    try:
        with open(path, "rb") as f:
            data = f.read(-1 if limit is None else limit)
    except OSError as e:
        raise HistoryError(f"cannot read: {e.strerror}", path) from None
    whole = limit is None or len(data) < limit  # else a character may be cut at the end
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=whole)
    except UnicodeDecodeError as e:
        raise HistoryError(f"not UTF-8 text: byte {data[e.start]:#04x} at offset {e.start} "
                           "(a binary file?)", path, data.count(b"\n", 0, e.start) + 1) from None
    nul = text.find("\0")
    if nul >= 0:
        raise HistoryError("binary data (a NUL byte), not text", path,
                           text.count("\n", 0, nul) + 1)
    return text


def _read_text_lines(text: str, path: Path) -> list[Op]:
    ops: list[Op] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        columns = _op_columns(line)
        if columns is None:
            continue
        try:
            ops.append(_parse_log_line(columns, len(ops)))
        except (EDNError, ValueError) as e:
            raise HistoryError(f"malformed jepsen.util line: {e}", path, lineno) from None
    if not ops:
        raise HistoryError("no jepsen.util op lines found (PROCESS :TYPE :F VALUE)", path)
    return ops


def _op_columns(line: str) -> str | None:
    """The op's columns in a text line: the line (``history.txt``), what follows the log
    prefix (``jepsen.log``), or ``None`` for a line without an op."""
    if _OP_START.match(line):
        return line
    prefix = _LOG_PREFIX.search(line)
    if prefix is not None and _OP_START.match(line, prefix.end()):
        return line[prefix.end():]
    return None


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
                raise _malformed(e, path, lineno) from None
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
        raise _malformed(e, path) from None
    ops = []
    for i, m in enumerate(forms):
        try:
            ops.append(op_from_edn(m, i))
        except ValueError as e:
            raise HistoryError(f"op {i}: {e}", path) from None
    return ops


def _malformed(e: EDNError, path: str | os.PathLike[str], line: int | None = None
               ) -> HistoryError:
    # The reader says "unclosed" only when the text ends inside a form.
    cut = " (the file ends inside it: cut short?)" if e.message.startswith("unclosed") else ""
    return HistoryError(f"malformed EDN: {e.message}{cut}", path, line or e.line)


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
            k = dumps(k)
        out.append(Op(op.index, op.time, op.process, op.type, op.f, k, v, op.node, op.error,
                      op.extra))
    return out
