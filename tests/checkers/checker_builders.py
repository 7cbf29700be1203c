"""Terse history builders for checker tests.

``H`` appends ops in history order; ``index`` and ``time`` follow the order of the calls
(``time`` in ms unless given). Each ``invoke``/``ok``/... returns the op's index, so a test can
name the ops it expects a checker to report.
"""

from __future__ import annotations

from typing import Any

from kvcheck.checkers.history import Op


class H:
    def __init__(self, key: Any = "k") -> None:
        self.ops: list[Op] = []
        self.key = key

    def _add(self, process: int | str, type_: str, f: str, value: Any = None, key: Any = ...,
             time: int | None = None, node: str | None = None, **extra: Any) -> int:
        index = len(self.ops)
        t = index * 1_000_000 if time is None else time
        self.ops.append(Op(index, t, process, type_, f, self.key if key is ... else key,
                           value, node, None, extra))
        return index

    def invoke(self, p: int | str, f: str, value: Any = None, **kw: Any) -> int:
        return self._add(p, "invoke", f, value, **kw)

    def ok(self, p: int, f: str, value: Any = None, **kw: Any) -> int:
        return self._add(p, "ok", f, value, **kw)

    def fail(self, p: int, f: str, value: Any = None, **kw: Any) -> int:
        return self._add(p, "fail", f, value, **kw)

    def info(self, p: int, f: str, value: Any = None, **kw: Any) -> int:
        return self._add(p, "info", f, value, **kw)

    def call(self, p: int, f: str, value: Any = None, out: Any = ..., type_: str = "ok",
             **kw: Any) -> tuple[int, int]:
        """An invocation immediately followed by its completion."""
        i = self.invoke(p, f, value, **kw)
        j = self._add(p, type_, f, value if out is ... else out, **kw)
        return i, j

    def nemesis(self, f: str, value: Any = None, **kw: Any) -> int:
        return self._add("nemesis", "info", f, value, key=None, **kw)
