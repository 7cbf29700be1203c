"""Deliberate mistakes, for testing the tester: ``kvstore serve --bug NAME``, never on by default.

Each is a realistic mistake in one part of the design, switched on in every node of a cluster
(``kvcheck run --bug NAME`` passes it to each, in either backend). A test of a store with a bug
switched on must come out invalid, for the bug's reason; ``docs/sim.md`` says which checker
catches each.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Every bug: name → the part it is in, and the mistake.
BUGS: dict[str, str] = {
    "count-own-read-twice": "coordinator: a get counts the coordinator's own reply twice "
                            "toward R, so one other replica's reply (or none, with R=2) "
                            "completes the read",
    "ack-when-sent": "coordinator: a put counts each replica as having stored the write as "
                     "soon as the write is sent to it, so it is acknowledged before W "
                     "replicas hold it",
    "ack-before-fsync": "server: with fsync always, a write is acknowledged once it reaches "
                        "the operating system, and the commit log is synced every "
                        "fsync_interval_ms instead of before the acknowledgement",
    "merge-keeps-newest": "replica: merging a replicated write keeps only the newest of "
                          "concurrent versions (by timestamp) instead of both as siblings",
    "repair-replaces": "replica: a read repair replaces the replica's versions with those "
                       "sent, instead of merging them in",
    "hints-in-memory": "hinted handoff: a stand-in keeps its hints in memory only, so a "
                       "restart forgets which writes it holds for another node, and never "
                       "hands them off",
    "dot-from-context": "versions: a new version's counter follows the client's context alone, "
                        "not what the replica stores, so two blind writes through one replica "
                        "get the same dot",
    "context-not-kept": "versions: a new version is stored without the causal context its "
                        "client sent, so only the replica that stamps it drops the versions "
                        "the client read; on the others they stay, as its siblings",
    "lww-last-arrival": "replica: with last-write-wins, a replicated version replaces the "
                        "stored one whatever their timestamps",
}


def check_bugs(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` sorted, once each. Raises ValueError for a name that is not a bug."""
    chosen = tuple(sorted(set(names)))
    unknown = [name for name in chosen if name not in BUGS]
    if unknown:
        raise ValueError(f"no such bug: {', '.join(unknown)} (the bugs: {', '.join(BUGS)})")
    return chosen


def describe_bugs() -> str:
    """One bug per line, its name first (``--bug help``)."""
    width = max(map(len, BUGS))
    return "\n".join(f"{name:<{width}}  {what}" for name, what in BUGS.items())
