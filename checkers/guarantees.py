"""The guarantees a test may expect, what each promises, and the checkers each one needs.

The one home of these rules: ``test.json``'s ``guarantee`` (:class:`~.history.TestConfig`),
``kvcheck run --expect`` and the checkers a run gets (the harness's test specification), and
whether a stale read is invalid (the stale-read and set checkers) all read them here.
``docs/checkers.md`` ("Guarantees") says the same in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Guarantee:
    """A promise a test can hold a store to.

    ``latest_reads``: it promises read-your-latest-write (a read sees every write that completed
    before it began), so stale reads are invalid rather than measured. ``checkers``: for each
    workload that can show whether the promise held, the checkers it adds to the workload's
    defaults (:data:`DEFAULT_CHECKERS`); a workload not listed cannot show it.
    """

    name: str
    latest_reads: bool
    checkers: Mapping[str, tuple[str, ...]]


GUARANTEES: dict[str, Guarantee] = {g.name: g for g in (
    # The linearizability checker knows registers.
    Guarantee("linearizable", latest_reads=True, checkers={"register": ("linearizable",)}),
    # A stale set read misses an element an earlier read returned: lost-writes judges it.
    Guarantee("no-stale-reads", latest_reads=True,
              checkers={"register": ("stale-reads",), "set": ("lost-writes",)}),
    # Registers overwrite: a write the next one replaced is not lost, and nothing tells.
    Guarantee("no-lost-writes", latest_reads=False, checkers={"set": ("lost-writes",)}),
    Guarantee("eventual-convergence", latest_reads=False, checkers={"register": (), "set": ()}),
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


def shown_by(guarantee: str) -> tuple[str, ...]:
    """The workloads whose histories can show whether ``guarantee`` held. Raises ``KeyError``
    for a guarantee not in :data:`GUARANTEES`."""
    return tuple(GUARANTEES[guarantee].checkers)


def default_checkers(workload: str, guarantee: str | None = None) -> tuple[str, ...]:
    """The checkers a test runs: its workload's defaults, then those its ``guarantee`` adds.

    Raises ``KeyError`` for a guarantee not in :data:`GUARANTEES`, ``ValueError`` for one the
    workload cannot show (:func:`shown_by`).
    """
    names = DEFAULT_CHECKERS.get(workload, ("stats",))
    if guarantee is not None:
        added = GUARANTEES[guarantee].checkers.get(workload)
        if added is None:
            raise ValueError(f"the {workload} workload cannot show whether {guarantee} held "
                             f"(the {' or '.join(shown_by(guarantee))} workload can)")
        names += added
    return tuple(dict.fromkeys(names))
