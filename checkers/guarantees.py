"""The guarantees a test may expect, what each promises, and the checkers each one needs.

The one home of these rules: ``test.json``'s ``guarantee`` (:class:`~.history.TestConfig`),
``kvcheck run --expect`` and the checkers a run gets (the harness's test specification), and
whether a stale read is invalid (the stale-read and set checkers) all read them here.
``docs/checkers.md`` ("Guarantees") says the same in words.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Guarantee:
    """A promise a test can hold a store to.

    ``latest_reads``: it promises read-your-latest-write (a read sees every write that completed
    before it began), so stale reads are invalid rather than measured. ``checkers``: the
    checkers it adds to the workload's defaults (:data:`DEFAULT_CHECKERS`).
    """

    name: str
    latest_reads: bool
    checkers: tuple[str, ...]


GUARANTEES: dict[str, Guarantee] = {g.name: g for g in (
    Guarantee("linearizable", latest_reads=True, checkers=("linearizable",)),
    Guarantee("no-stale-reads", latest_reads=True, checkers=("stale-reads",)),
    Guarantee("no-lost-writes", latest_reads=False, checkers=("lost-writes",)),
    Guarantee("eventual-convergence", latest_reads=False, checkers=()),
)}

#: The checkers every run of a workload gets; a workload not listed gets ``stats`` only.
DEFAULT_CHECKERS: dict[str, tuple[str, ...]] = {
    "register": ("stats", "stale-reads", "convergence"),
    "set": ("stats", "lost-writes", "convergence"),
}


def quorums_intersect(n: int, w: int, r: int, sloppy_quorum: bool) -> bool:
    """W + R > N with strict quorums: every read quorum meets every write quorum."""
    return w + r > n and not sloppy_quorum


def derived_guarantee(n: int, w: int, r: int, sloppy_quorum: bool) -> str:
    """The guarantee of a configuration whose test declares none: ``no-stale-reads`` where
    quorums intersect (:func:`quorums_intersect`), else only ``eventual-convergence`` (with
    W + R <= N, or sloppy quorums, a read set need not meet the last write set)."""
    if quorums_intersect(n, w, r, sloppy_quorum):
        return "no-stale-reads"
    return "eventual-convergence"


def default_checkers(workload: str, guarantee: str | None = None) -> tuple[str, ...]:
    """The checkers a test runs: its workload's defaults, then those its ``guarantee`` adds.

    Raises ``KeyError`` for a guarantee not in :data:`GUARANTEES`.
    """
    names = DEFAULT_CHECKERS.get(workload, ("stats",))
    if guarantee is not None:
        names += GUARANTEES[guarantee].checkers
    return tuple(dict.fromkeys(names))
