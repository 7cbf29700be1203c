"""The unique-value algorithm: O(n log n) for registers whose writes all write distinct values.

Gibbons & Korach's test in Golab, Li & Shah's zone form; the rule and its conditions are in the
package docstring (:mod:`kvcheck.checkers.linearizable`).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kvcheck.checkers.linearizable.calls import INF, INV, RET, Prepared
from kvcheck.checkers.models import FREE, Siblings


class NotApplicable(Exception):
    """The history is not one the unique-value algorithm decides (see :func:`check_unique`)."""


@dataclass(slots=True)
class _Cluster:
    """A write and the reads of its value: the earliest completion and the latest invocation
    among them, the positions (in ops) of the calls that set those, and the write's (-1 for
    the initial value)."""

    first_ret: int
    first_ret_at: int
    last_inv: int
    last_inv_at: int
    write_at: int

    def calls(self) -> list[int]:
        """The positions of the (at most three) calls that fix the cluster's zone."""
        return [i for i in {self.first_ret_at, self.last_inv_at, self.write_at} if i >= 0]


_INIT_KEY = object()


def check_unique(ops: Sequence[Prepared], init: Any) -> tuple[bool, list[int], str]:
    """Decide a unique-value register history, ``ops`` sorted by invocation.

    Returns ``(linearizable, witness positions in ops, message)``; the witness is empty when
    linearizable. ``init`` may be :data:`FREE`. Raises :class:`NotApplicable` if values are not
    unique, a write writes the initial value, values are unhashable, or there is a ``cas``.
    """
    free = init is FREE
    writes: dict[Any, int] = {}
    for i, (_inv, _ret, f, arg, _out, _names) in enumerate(ops):
        if f == "write":
            try:
                if arg in writes or (not free and arg == init):
                    raise NotApplicable
            except TypeError:
                raise NotApplicable from None
            writes[arg] = i
        elif f != "read":
            raise NotApplicable
    clusters: dict[Any, _Cluster] = {}
    init_value: Any = FREE if free else init
    init_reader = -1
    for i, (inv, ret, f, _arg, out, _names) in enumerate(ops):
        if f != "read":
            continue
        if isinstance(out, Siblings):
            return False, [i], "a read returned several sibling values"
        try:
            w = writes.get(out)
        except TypeError:
            raise NotApplicable from None
        if w is not None:
            winv = ops[w][INV]
            if ret < winv:
                if free:  # the unknown initial state may be this very value: search instead
                    raise NotApplicable
                return False, [i, w], "a read completed before the write of its value began"
            cl = clusters.get(out)
            if cl is None:
                cl = clusters[out] = _Cluster(ops[w][RET], w, winv, w, w)
        else:
            if init_value is FREE:
                init_value, init_reader = out, i
            elif out != init_value:
                if free:
                    return (False, [init_reader, i],
                            "two reads of different values that no write wrote")
                return False, [i], "a read returned a value that no write wrote"
            cl = clusters.get(_INIT_KEY)
            if cl is None:
                cl = clusters[_INIT_KEY] = _Cluster(-1, -1, -1, -1, -1)
        if ret < cl.first_ret:
            cl.first_ret, cl.first_ret_at = ret, i
        if inv > cl.last_inv:
            cl.last_inv, cl.last_inv_at = inv, i
    for v, w in writes.items():
        # An indeterminate write no read observed may never have happened: it is dropped.
        if v not in clusters and ops[w][RET] != INF:
            clusters[v] = _Cluster(ops[w][RET], w, ops[w][INV], w, w)
    return _zones_clash(clusters.values())


def _zones_clash(clusters: Iterable[_Cluster]) -> tuple[bool, list[int], str]:
    """The zone test over every cluster, as :func:`check_unique` returns it."""
    forward: list[tuple[int, int, _Cluster]] = []
    backward: list[tuple[int, int, _Cluster]] = []
    for cl in clusters:
        f, s = cl.first_ret, cl.last_inv
        if f < s:
            forward.append((f, s, cl))
        else:
            backward.append((s, f, cl))
    forward.sort(key=lambda zone: zone[0])
    for (_, a_end, a), (b_start, _, b) in itertools.pairwise(forward):
        if b_start < a_end:
            return False, a.calls() + b.calls(), "two forward zones overlap"
    starts = [start for start, _, _ in forward]
    for lo, hi, cl in backward:
        j = bisect.bisect_left(starts, lo) - 1
        if j >= 0:
            _, end, outer = forward[j]
            if hi < end:
                return (False, outer.calls() + cl.calls(),
                        "a write and its reads lie inside another value's forward zone")
    return True, [], ""
