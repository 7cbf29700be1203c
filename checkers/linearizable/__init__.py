"""Linearizability, per key, of register and compare-and-set register histories.

Theory of operation
===================

Timing rule. Each call occupies the closed interval from its invocation line to its completion
line, measured in history positions (``index``), not in nanoseconds: the history's order is the
one order every recorded event agrees on, and positions never tie. Call ``a`` precedes call
``b`` in real time iff ``a``'s completion comes before ``b``'s invocation; otherwise they are
concurrent. Worked case: ``w(1)`` at [0, 3] and ``r->1`` at [1, 2] overlap, so the read may be
linearized after the write although it completed first.

What is checked. ``fail`` calls did not happen and are removed. ``info`` calls (and calls the
history ends before completing) are *indeterminate*: they may take effect at any point after
their invocation, or never; they stay open to the end. An indeterminate read has no effect and
constrains nothing, so it is removed.

P-compositionality. Linearizability is local: a history is linearizable iff each key's
sub-history is. Keys are checked independently -- in a process pool when the history is large
enough for that to pay -- each within its own time and memory budget; a key that exceeds its
budget is ``unknown``, never guessed.

Two algorithms.

* Unique values (:func:`~.unique.check_unique`), used when every write to the key writes a
  distinct value, no write writes the initial value ``nil``, and there is no ``cas``. Every read
  then names the write it read from, and the history is linearizable iff (Gibbons & Korach 1997,
  "Testing shared memories"; the zone form is Golab, Li & Shah 2011): every read returns a value
  some write wrote (or the initial value), no read completes before its write is invoked, no two
  *forward zones* overlap, and no *backward zone* lies inside a forward zone. A cluster is a
  write and the reads of its value; with ``f`` its earliest completion and ``s`` its latest
  invocation, its zone is forward ``(f, s)`` when ``f < s``, else backward ``(s, f)``. The
  initial value is a write at position -1. An indeterminate write no read observed is dropped
  (it may never have happened); one that was observed took effect and completes "at infinity".
  O(n log n).
* Otherwise Wing & Gong's search with Lowe's memoization (:func:`~.search.search`), as in
  Porcupine: a depth-first search over linearization orders of the invocation/completion list,
  pruning every (set of linearized calls, model state) configuration already explored. Rules
  that cut the orders tried, each keeping a linearization wherever one exists:

  - an *observer* (a call that never changes a bound state: a read, a cas of ``v`` to ``v``)
    that is legal now is linearized now, and nothing else is tried at that point: any
    linearization placing it later stays one with it moved here (every call that must precede
    it is already linearized, or it would not be a candidate). An indeterminate observer is
    dropped.
  - alike calls are taken in one order, since swapping two of them in a linearization gives
    another: indeterminate calls with the same op and argument in invocation order;
    determinate calls with the same op, argument and result, the one invoked and completed
    first, first.
  - determinate candidates are tried before indeterminate ones (an eager search linearizes
    optional calls needlessly), and a configuration is also pruned when an explored one had
    the same linearized determinate calls and state and a *subset* of its linearized
    indeterminate calls (it had every option this one has).

  Each is checked against a brute-force reference in the tests. Without the first two a single
  cas key with 30 busy clients was past any budget; with them it is decided in under a second.

Witnesses. A non-linearizable key names a small set of calls that on their own have no
linearization. The unique-value algorithm names the (at most six) calls that fix the two
clashing zones. After a search, the witness is the smallest failing *window*: the shortest
failing prefix (it ends at the latest completion the search ever had to reach next: every
shorter prefix was linearized on the way), cut from the left at the latest point before which
every determinate call completed (so none of them can be linearized inside the window, which
starts from an unknown state; earlier indeterminate calls stay in it, still optional), then
stripped one by one of reads, of cas ops that change nothing and of writes nobody observes
while it stays non-linearizable. Each step only ever keeps a sub-history that is
non-linearizable on its own and whose non-linearizability implies the whole history's.

Modules, in the order a call goes through them: :mod:`~.calls` (one key's calls prepared for
the algorithms), :mod:`~.unique` (the unique-value algorithm), :mod:`~.search` (Wing & Gong /
Lowe), :mod:`~.witness` (the smallest failing window) and :mod:`~.check` (one key within its
budget, every key of a history in a process pool, the checker's result).
"""

from kvcheck.checkers.linearizable.calls import prepare
from kvcheck.checkers.linearizable.check import (
    PARALLEL_THRESHOLD,
    KeyResult,
    check_key,
    check_linearizable,
)

__all__ = ["PARALLEL_THRESHOLD", "KeyResult", "check_key", "check_linearizable", "prepare"]
