"""A small, strict reader and writer for the subset of EDN that Jepsen histories use.

Why not a library: the maintained PyPI reader (``edn_format``) is built on a PLY grammar and is
slow on million-line histories; this reader is one recursive-descent pass over the text.

Mapping to Python:

=====================  ======================================================
EDN                    Python
=====================  ======================================================
``nil true false``     ``None True False``
integers, ``42N``      ``int``
floats, ``1.5M``       ``float`` (``##Inf``, ``##-Inf``, ``##NaN`` too)
ratios ``1/3``         ``float``
strings                ``str``
characters ``\\a``      ``str`` of length one (``\\newline`` and friends by name)
keywords ``:a/b``      :class:`Keyword`
symbols ``foo``        :class:`Symbol`
vectors, lists         ``tuple`` (immutable and hashable, as Jepsen compares them)
maps                   ``dict``
sets ``#{}``           ``frozenset``
``#_ form``            discarded
``#tag form``          the form, tag dropped (``#inst "..."`` gives the string,
                       ``#jepsen.history.Op{...}`` gives the map)
=====================  ======================================================

Errors raise :class:`EDNError` with the 1-based line and column. :func:`dumps` writes the
same mapping back (a ``list`` too, as a vector; a ``set`` as a set), as Clojure's ``pr`` would.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any


class EDNError(ValueError):
    """Malformed EDN; ``line`` and ``column`` are 1-based positions in the text read."""

    def __init__(self, message: str, text: str, pos: int) -> None:
        self.line = text.count("\n", 0, pos) + 1
        self.column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        self.message = message
        super().__init__(f"{message} (line {self.line}, column {self.column})")


@dataclass(frozen=True, slots=True)
class Keyword:
    """An EDN keyword such as ``:invoke`` (``name`` without the colon)."""

    name: str

    def __str__(self) -> str:
        return ":" + self.name


@dataclass(frozen=True, slots=True)
class Symbol:
    """An EDN symbol such as ``foo/bar``."""

    name: str

    def __str__(self) -> str:
        return self.name


_WS = " \t\n\r,"
_DELIMS = frozenset(_WS + "()[]{}\";")
_INT = re.compile(r"[+-]?\d+N?\Z")
_FLOAT = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?M?\Z")
_RATIO = re.compile(r"[+-]?\d+/\d+\Z")
_SYMBOL = re.compile(r"[A-Za-z.*+!\-_?$%&=<>/'][\w.*+!\-_?$%&=<>/:#']*\Z")
_CHARS = {"newline": "\n", "space": " ", "tab": "\t", "return": "\r",
          "backspace": "\b", "formfeed": "\f"}
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_CLOSE = {"(": ")", "[": "]", "{": "}"}


class _Reader:
    __slots__ = ("n", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.n = len(text)

    def error(self, message: str, pos: int | None = None) -> EDNError:
        return EDNError(message, self.text, self.pos if pos is None else pos)

    def skip_ws(self) -> None:
        text, n = self.text, self.n
        pos = self.pos
        while pos < n:
            c = text[pos]
            if c in _WS:
                pos += 1
            elif c == ";":
                nl = text.find("\n", pos)
                pos = n if nl < 0 else nl + 1
            else:
                break
        self.pos = pos

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= self.n

    def read(self) -> Any:
        self.skip_ws()
        if self.pos >= self.n:
            raise self.error("unexpected end of input")
        text = self.text
        c = text[self.pos]
        if c in "([{":
            start = self.pos
            self.pos += 1
            items = self.read_until(_CLOSE[c], start)
            if c == "{":
                return self.make_map(items, start)
            return tuple(items)
        if c in ")]}":
            raise self.error(f"unexpected {c!r}")
        if c == '"':
            return self.read_string()
        if c == ":":
            start = self.pos
            tok = self.token()
            if len(tok) < 2 or (tok.startswith("::") and len(tok) < 3):
                raise self.error("empty keyword", start)
            return Keyword(tok[1:])
        if c == "\\":
            return self.read_char()
        if c == "#":
            return self.read_dispatch()
        start = self.pos
        return self.atom(self.token(), start)

    def read_until(self, close: str, start: int) -> list[Any]:
        items: list[Any] = []
        text = self.text
        while True:
            self.skip_ws()
            if self.pos >= self.n:
                raise self.error(f"unclosed {text[start]!r}", start)
            c = text[self.pos]
            if c == close:
                self.pos += 1
                return items
            if c in ")]}":
                raise self.error(f"expected {close!r}, got {c!r}")
            if c == "#" and text.startswith("#_", self.pos):
                self.pos += 2
                self.read()
                continue
            items.append(self.read())

    def make_map(self, items: list[Any], start: int) -> dict[Any, Any]:
        if len(items) % 2:
            raise self.error("map literal needs an even number of forms", start)
        out: dict[Any, Any] = {}
        for i in range(0, len(items), 2):
            k = items[i]
            try:
                if k in out:
                    raise self.error(f"duplicate map key {k}", start)
            except TypeError:
                raise self.error("unhashable map key", start) from None
            out[k] = items[i + 1]
        return out

    def token(self) -> str:
        text, n = self.text, self.n
        start = self.pos
        pos = start + 1
        while pos < n and text[pos] not in _DELIMS:
            pos += 1
        self.pos = pos
        return text[start:pos]

    def atom(self, tok: str, start: int) -> Any:
        if tok == "nil":
            return None
        if tok == "true":
            return True
        if tok == "false":
            return False
        c = tok[0]
        if c.isdigit() or (c in "+-" and len(tok) > 1 and tok[1].isdigit()):
            if _INT.match(tok):
                return int(tok.rstrip("N"))
            if _FLOAT.match(tok):
                return float(tok.rstrip("M"))
            if _RATIO.match(tok):
                num, den = tok.split("/")
                if int(den) == 0:
                    raise self.error(f"ratio with zero denominator: {tok}", start)
                return int(num) / int(den)
            raise self.error(f"malformed number {tok!r}", start)
        if _SYMBOL.match(tok):
            return Symbol(tok)
        raise self.error(f"unexpected token {tok!r}", start)

    def read_string(self) -> str:
        text = self.text
        start = self.pos
        pos = start + 1
        parts = []
        while True:
            j = pos
            while j < self.n and text[j] != '"' and text[j] != "\\":
                j += 1
            if j >= self.n:
                raise self.error("unterminated string", start)
            parts.append(text[pos:j])
            if text[j] == '"':
                self.pos = j + 1
                return "".join(parts)
            esc = text[j + 1:j + 2]
            if esc in _ESCAPES:
                parts.append(_ESCAPES[esc])
                pos = j + 2
            elif esc == "u":
                hexd = text[j + 2:j + 6]
                if len(hexd) != 4 or not all(h in "0123456789abcdefABCDEF" for h in hexd):
                    raise self.error("malformed \\u escape", j)
                parts.append(chr(int(hexd, 16)))
                pos = j + 6
            else:
                raise self.error(f"unknown string escape \\{esc}", j)

    def read_char(self) -> str:
        start = self.pos
        self.pos += 1
        if self.pos >= self.n:
            raise self.error("character literal at end of input", start)
        # A single character, even a delimiter, or a name.
        tok = self.token() if self.text[self.pos] not in _DELIMS else self.text[self.pos]
        if len(tok) == 1:
            if self.pos == start + 1:
                self.pos += 1
            return tok
        if tok in _CHARS:
            return _CHARS[tok]
        if tok.startswith("u") and len(tok) == 5:
            try:
                return chr(int(tok[1:], 16))
            except ValueError:
                pass
        raise self.error(f"unknown character literal \\{tok}", start)

    def read_dispatch(self) -> Any:
        text = self.text
        start = self.pos
        nxt = text[start + 1:start + 2]
        if nxt == "{":
            self.pos += 2
            items = self.read_until("}", start + 1)
            try:
                s = frozenset(items)
            except TypeError:
                raise self.error("unhashable set element", start) from None
            if len(s) != len(items):
                raise self.error("duplicate set element", start)
            return s
        if nxt == "_":
            self.pos += 2
            self.read()
            return self.read()
        if nxt == "#":
            self.pos += 2
            tok = self.token() if self.pos < self.n else ""
            vals = {"Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
            if tok not in vals:
                raise self.error(f"unknown symbolic value ##{tok}", start)
            return vals[tok]
        if nxt and (nxt.isalpha()):
            self.pos += 1
            tag = self.token()
            if not _SYMBOL.match(tag):
                raise self.error(f"malformed tag #{tag}", start)
            self.skip_ws()
            if self.pos >= self.n:
                raise self.error(f"tag #{tag} without a form", start)
            return self.read()
        raise self.error(f"unknown dispatch #{nxt}", start)


def loads(text: str) -> Any:
    """Read exactly one EDN form from ``text``; raises :class:`EDNError` otherwise."""
    r = _Reader(text)
    value = r.read()
    if not r.at_end():
        raise r.error("trailing data after the form")
    return value


def loads_all(text: str) -> list[Any]:
    """Read every top-level EDN form in ``text``; raises :class:`EDNError`."""
    return _read_forms(_Reader(text), math.inf)


def _read_forms(r: _Reader, count: float) -> list[Any]:
    out: list[Any] = []
    while len(out) < count and not r.at_end():
        if r.text.startswith("#_", r.pos):
            r.pos += 2
            r.read()
            continue
        out.append(r.read())
    return out


def loads_some(text: str, count: int) -> tuple[list[Any], str]:
    """Read up to ``count`` EDN forms from the start of ``text``.

    Returns the forms read (fewer when ``text`` ends first) and the text after the last one,
    unread. Raises :class:`EDNError` for a malformed form.
    """
    r = _Reader(text)
    forms = _read_forms(r, count)
    return forms, text[r.pos:]


def is_keyword_name(name: str) -> bool:
    """Whether ``:name`` reads back as the keyword ``name`` (no spaces, no leading digit...)."""
    return bool(_SYMBOL.match(name)) and not name.endswith(":")


_STRING_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _string(s: str) -> str:
    def escape(m: re.Match[str]) -> str:
        c = m.group()
        return _STRING_ESCAPES.get(c) or f"\\u{ord(c):04x}"
    return '"' + _NEEDS_ESCAPE.sub(escape, s) + '"'


def _float(x: float) -> str:
    if math.isnan(x):
        return "##NaN"
    if math.isinf(x):
        return "##Inf" if x > 0 else "##-Inf"
    return repr(x)


def dumps(value: Any) -> str:
    """``value`` as EDN text on one line (the inverse of :func:`loads`, see the table above).

    Maps are written ``{k v, k v}`` in their order, sets sorted (by value, else by text).
    Raises ``TypeError`` for a value with no EDN form (an object, bytes).
    """
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Keyword):
        return ":" + value.name
    if isinstance(value, Symbol):
        return value.name
    if isinstance(value, tuple | list):
        return "[" + " ".join(dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{dumps(k)} {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, frozenset | set):
        items = list(value)
        try:
            items.sort()
        except TypeError:  # elements of several types
            items.sort(key=dumps)
        return "#{" + " ".join(dumps(v) for v in items) + "}"
    raise TypeError(f"no EDN form for {type(value).__name__}: {value!r}")
