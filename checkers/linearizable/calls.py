"""Prepared calls: one key's calls in the compact form both algorithms read.

A prepared call is ``(inv, ret, f, arg, out, names)``: the history positions of its invocation
and of its completion (:data:`INF` for an indeterminate call), its op (``"read"``, ``"write"``
or ``"cas"``), the value it wrote (``(old, new)`` for a cas), the value a read returned, and
the history indexes of its lines (what a witness names). Values are made hashable.

It is a plain tuple read through the index constants :data:`INV` ... :data:`NAMES`, not a
frozen dataclass or a NamedTuple, for speed: a 1M-op history prepares half a million of them,
and building a NamedTuple measured six times (a frozen dataclass nine times) the cost of a
tuple, over a second more for that history. Tuples also sort by invocation for free.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Final

from kvcheck.checkers.history import FAIL, OK, Call, HistoryError
from kvcheck.checkers.models import Model, Siblings

#: The completion position of an indeterminate call: it stays open to the end.
INF = sys.maxsize

Prepared = tuple[int, int, str, Any, Any, tuple[int, ...]]
# Field positions in a Prepared call (Final, so that a type checker knows each field's type).
INV: Final = 0
RET: Final = 1
F: Final = 2
ARG: Final = 3
OUT: Final = 4
NAMES: Final = 5


def _hashable(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return frozenset((k, _hashable(x)) for k, x in v.items())
    if isinstance(v, set):
        return frozenset(_hashable(x) for x in v)
    return v


def prepare(calls: Iterable[Call], model: Model, sibling_reads: bool = False) -> list[Prepared]:
    """Turn one key's calls into prepared calls, in the order given.

    ``fail`` calls are dropped (they did not happen), and so are indeterminate reads (they
    constrain nothing). With ``sibling_reads`` (kvcheck's register workload), a read's value
    that is a list means sibling versions: ``[]`` reads as nil, ``[v]`` as ``v``, two or more as
    :class:`Siblings`; and a delete is a write of nil. Raises :class:`HistoryError` for an op
    the model does not know or a malformed ``cas``.
    """
    out: list[Prepared] = []
    for c in calls:
        t = c.type
        if t == FAIL:
            continue
        f = c.f
        ret = c.complete.index if t == OK else INF  # type: ignore[union-attr]
        if f == "delete" and sibling_reads:
            # kvcheck's delete: the key reads as the empty value, i.e. a write of nil.
            out.append((c.inv_index, ret, "write", None, None, c.indexes))
            continue
        if f not in model.fs:
            raise HistoryError(f"op {c.inv_index}: f {f!r} is not an op of the "
                               f"{model.name} model ({', '.join(sorted(model.fs))})")
        if f == "read":
            if t != OK:
                continue
            v = c.value_out
            if sibling_reads and isinstance(v, list | tuple):
                v = None if not v else v[0] if len(v) == 1 else Siblings(tuple(v))
            out.append((c.inv_index, ret, f, None, _hashable(v), c.indexes))
        elif f == "write":
            out.append((c.inv_index, ret, f, _hashable(c.value_in), None, c.indexes))
        else:  # cas
            v = c.value_in
            if not (isinstance(v, list | tuple) and len(v) == 2):
                raise HistoryError(f"op {c.inv_index}: cas value must be [old, new], got {v!r}")
            out.append((c.inv_index, ret, f, _hashable(v), None, c.indexes))
    return out


def witness_names(ops: Iterable[Prepared]) -> tuple[int, ...]:
    """The history indexes of the lines of ``ops``, ascending."""
    return tuple(sorted(i for op in ops for i in op[NAMES]))
