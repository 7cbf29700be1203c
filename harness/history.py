"""Recording a history as it happens: one JSON line per op, flushed at once.

The format is ``docs/history-format.md`` (version 1). A crash of the harness keeps every line
written so far; the checkers read exactly this file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

FORMAT_HEADER = {"format": "kvcheck-history", "version": 1}
#: An op as one compact line. Made once: ``json.dumps`` given options makes one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class HistoryWriter:
    """Appends ops to ``path``. ``time`` is ns since :meth:`start_clock` (or creation), read
    from ``clock`` (seconds: the monotonic clock, or a run's trio clock); ``index`` counts
    from 0.

    Not thread-safe: one trio task at a time writes (trio runs tasks one at a time anyway).
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self._file.write(json.dumps(FORMAT_HEADER) + "\n")
        self._clock = clock
        self._start = clock()
        self.index = 0
        self.counts = {"invoke": 0, "ok": 0, "fail": 0, "info": 0}

    def start_clock(self) -> None:
        """Make now time zero (the test starts: the cluster is up, the clients begin).
        Raises RuntimeError once an op has been recorded."""
        if self.index:
            raise RuntimeError("the history clock starts before the first op")
        self._start = self._clock()

    def elapsed(self) -> float:
        """Seconds since the history began."""
        return self._clock() - self._start

    def record(self, process: int | str, type_: str, f: str, key: Any = None,
               value: Any = None, node: str | None = None, error: str | None = None,
               *, error_detail: str | None = None, final: bool = False) -> dict[str, Any]:
        """Write one op and return it as written; ``error_detail`` (the raw error behind
        ``error``) and ``final`` (a final read) are written only when given."""
        op: dict[str, Any] = {
            "index": self.index, "time": round((self._clock() - self._start) * 1e9),
            "process": process, "type": type_, "f": f, "key": key, "value": value, "node": node,
        }
        if error is not None:
            op["error"] = error
        if error_detail is not None:
            op["error_detail"] = error_detail
        if final:
            op["final"] = True
        self._file.write(_ENCODER.encode(op) + "\n")
        self._file.flush()
        self.index += 1
        if process != "nemesis":
            self.counts[type_] += 1
        return op

    def close(self) -> None:
        self._file.close()
