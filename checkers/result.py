"""Verdicts, anomalies and checker results; combining them; writing ``results.json``.

A checker returns a :class:`CheckResult`: a :class:`Verdict`, its figures (plain JSON-able
numbers and strings), and its anomalies, each naming the history ops (by ``index``) that show
it. Verdicts combine as ``INVALID > UNKNOWN > VALID``: one invalid checker makes the run
invalid; otherwise one undecided checker makes it unknown. See ``docs/checkers.md``.
"""

from __future__ import annotations

import enum
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

RESULTS_FORMAT_VERSION = 1


class Verdict(enum.Enum):
    """Whether the store kept a promise: yes, no, or undecided (out of budget, no data, crash).

    A verdict's value is its word, the one spelling every output uses (a terminal may shout
    ``INVALID``, derived from it); ``results.json`` writes it as :meth:`to_json` says.
    """

    VALID = "valid"
    INVALID = "invalid"
    UNKNOWN = "unknown"

    def to_json(self) -> bool | Literal["unknown"]:
        """``true``, ``false`` or ``"unknown"``, as in Jepsen's ``:valid?``."""
        if self is Verdict.VALID:
            return True
        if self is Verdict.INVALID:
            return False
        return "unknown"

    @classmethod
    def from_json(cls, value: object) -> Verdict:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything else."""
        if value is True:
            return cls.VALID
        if value is False:
            return cls.INVALID
        if value == "unknown":
            return cls.UNKNOWN
        raise ValueError(f"not a verdict: {value!r}")

    @classmethod
    def read(cls, value: object) -> Verdict:
        """:meth:`from_json` for a file that may be damaged: anything else is UNKNOWN."""
        try:
            return cls.from_json(value)
        except ValueError:
            return cls.UNKNOWN


_RANK = {Verdict.VALID: 0, Verdict.UNKNOWN: 1, Verdict.INVALID: 2}


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """The worst of ``verdicts``: INVALID > UNKNOWN > VALID. No verdicts at all is VALID."""
    worst = Verdict.VALID
    for v in verdicts:
        if _RANK[v] > _RANK[worst]:
            worst = v
    return worst


#: Every kind of anomaly the checkers report, and the checker that reports it
#: (``docs/checkers.md``, "Anomalies", says what each means).
ANOMALY_KINDS: Mapping[str, str] = {
    "never-succeeded": "stats",
    "nonlinearizable": "linearizable",
    "stale-read": "stale-reads",
    "superseded-sibling": "stale-reads",
    "lost": "lost-writes",
    "unexpected": "lost-writes",
    "stale": "lost-writes",
    "diverged": "convergence",
    "final-reads-disagree": "convergence",
}


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One way a promise was broken (or, for measured-only anomalies, bent).

    ``kind`` is one of :data:`ANOMALY_KINDS` (``"stale-read"``, ``"lost"``, ...); ``ops`` are
    the ``index`` values of the history lines that show it, ascending; ``details`` holds
    JSON-able specifics. Raises ``ValueError`` for an unknown kind or an op that is not an
    index.
    """

    kind: str
    ops: tuple[int, ...]
    message: str = ""
    key: Any = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ANOMALY_KINDS:
            raise ValueError(f"not an anomaly kind: {self.kind!r} "
                             f"(known: {', '.join(ANOMALY_KINDS)})")
        ops = tuple(sorted(set(self.ops)))
        if any(not isinstance(i, int) or isinstance(i, bool) for i in ops):
            raise ValueError(f"anomaly ops must be op indexes (ints), got {self.ops!r}")
        object.__setattr__(self, "ops", ops)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "ops": list(self.ops)}
        if self.key is not None:
            out["key"] = _jsonable(self.key)
        if self.message:
            out["message"] = self.message
        if self.details:
            out["details"] = _jsonable(self.details)
        return out


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one checker decided. ``basis`` says in words what the verdict rests on (how much
    of the history could have shown a violation) or, for UNKNOWN, why it could not decide;
    ``error`` is set when the checker crashed (verdict UNKNOWN)."""

    checker: str
    valid: Verdict
    figures: Mapping[str, Any] = field(default_factory=dict)
    anomalies: tuple[Anomaly, ...] = ()
    error: str | None = None
    basis: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.valid, Verdict):
            raise TypeError(f"valid must be a Verdict, got {self.valid!r}")
        object.__setattr__(self, "anomalies", tuple(self.anomalies))

    @property
    def anomaly_counts(self) -> dict[str, int]:
        """How many anomalies of each kind, in the order the kinds were first found."""
        counts: dict[str, int] = {}
        for a in self.anomalies:
            counts[a.kind] = counts.get(a.kind, 0) + 1
        return counts

    def anomalies_of(self, kind: str) -> list[Anomaly]:
        """The anomalies of one kind, in the order the checker found them."""
        return [a for a in self.anomalies if a.kind == kind]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "checker": self.checker,
            "valid": self.valid.to_json(),
            **({"basis": self.basis} if self.basis else {}),
            "figures": _jsonable(self.figures),
            "anomaly_counts": self.anomaly_counts,
            "anomalies": [a.to_json() for a in self.anomalies],
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class Results:
    """The combined verdict of several checkers: the content of ``results.json``."""

    checks: tuple[CheckResult, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> Verdict:
        return combine(c.valid for c in self.checks)

    def __getitem__(self, checker: str) -> CheckResult:
        for c in self.checks:
            if c.checker == checker:
                return c
        raise KeyError(checker)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "kvcheck-results",
            "version": RESULTS_FORMAT_VERSION,
            "valid": self.valid.to_json(),
            **({"meta": _jsonable(self.meta)} if self.meta else {}),
            "checkers": {c.checker: c.to_json() for c in self.checks},
        }


def write_results(path: str | os.PathLike[str], results: Results) -> Path:
    """Write ``results.json`` atomically (temp file + rename) and return its path.

    Raises ``OSError`` if the directory is not writable; a partial file is never left behind.
    """
    path = Path(path)
    text = json.dumps(results.to_json(), indent=2, sort_keys=False, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".results.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(x: Any) -> Any:
    """Convert checker figures to strict JSON: tuples/sets to lists, non-finite floats to None."""
    if isinstance(x, Verdict):
        return x.to_json()
    if isinstance(x, Mapping):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, set | frozenset):
        items = [_jsonable(v) for v in x]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)
