"""Small synthetic run directories for the report, serve and JUnit tests (no Docker).

:func:`make_run` writes ``test.json``, ``history.jsonl`` (with
:func:`kvcheck.checkers.write_history`), ``final-state.json`` and a node log, checks it with the
real checkers (``check_run``) and writes the report. The history has a partition window, a failed
and an indeterminate call, a stale read (so the run is invalid under its no-stale-reads guarantee),
a key that diverged, and hostile text in keys, values, errors and node names. With ``overlaps``
faults of other kinds overlap it and each other (:data:`OVERLAPS`). :func:`make_zone_run` writes
a run over three zones, one of which is lost for a while.
"""

from __future__ import annotations

import json
from pathlib import Path

from kvcheck.checkers import Op, check_run, write_history
from kvcheck.harness.report import write_report

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
MS = 1_000_000
#: With ``make_run(overlaps=True)``: in which rounds a fault starts and stops (``None``: the
#: heal stops it). Kill overlaps the partition (rounds 10 to 20), a clock strobe lies inside a
#: pause, and kill strikes twice.
OVERLAPS = (("kill", ["n2"], 15, 25), ("pause", ["n1"], 28, None),
            ("clock", ["n2", IMG], 30, 33), ("kill", ["n1"], 35, 38))


class _History:
    def __init__(self) -> None:
        self.ops: list[Op] = []

    def add(self, ms: float, process: int | str, type_: str, f: str, key: object = None,
            value: object = None, node: str | None = None, error: str | None = None,
            **extra: object) -> None:
        self.ops.append(Op(len(self.ops), int(ms * MS), process, type_, f, key, value, node,
                           error, extra))

    def call(self, t0: float, t1: float, process: int, f: str, key: object, arg: object,
             ret: object, node: str, type_: str = "ok", error: str | None = None,
             **extra: object) -> None:
        self.add(t0, process, "invoke", f, key, arg, node, **extra)
        self.add(t1, process, type_, f, key, ret, node, error, **extra)


def make_run(run_dir: Path, *, stale: bool = True, rounds: int = 40,
             overlaps: bool = False) -> Path:
    """Write a register run into ``run_dir`` (created), check it, write its report.

    With ``stale`` one read returns an overwritten value: the run is invalid. With ``overlaps``
    the faults of :data:`OVERLAPS` join the partition.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    nodes = ["n1", "n2", IMG]
    keys = ["k1", SCRIPT]
    h = _History()
    t = 1.0
    for i in range(rounds):
        for p, key in enumerate(keys):
            value = i * 10 + p
            h.call(t, t + 3, p, "write", key, value, value, nodes[p])
            h.call(t + 5, t + 7, p + 2, "read", key, None, value, nodes[(p + 1) % 3])
        t += 10
        if i == 10:
            h.add(t, "nemesis", "info", "start",
                  value={"fault": "partition", "targets": ["n1", IMG],
                         "components": [["n1"], ["n2", IMG]]})
        if i == 20:
            h.add(t, "nemesis", "info", "stop", value={"fault": "partition"})
        for fault, targets, start, stop in OVERLAPS if overlaps else ():
            if i == start:
                h.add(t, "nemesis", "invoke", f"start-{fault}",
                      value={"fault": fault, "targets": targets})
                h.add(t, "nemesis", "info", f"start-{fault}",
                      value={"fault": fault, "targets": targets})
            if i == stop:
                h.add(t, "nemesis", "info", f"stop-{fault}",
                      value={"fault": fault, "targets": targets})
    h.call(t, t + 2, 0, "write", "k1", 9001, None, "n1", type_="fail", error=IMG)
    h.call(t + 1, t + 1000, 1, "write", SCRIPT, 9002, None, "n2", type_="info",
           error=SCRIPT)
    if stale:
        h.call(t + 1500, t + 1502, 2, "read", "k1", None, (rounds - 2) * 10, "n2")
    h.add(t + 2000, "nemesis", "info", "heal", value={"fault": "all"})
    final = t + 2500
    for key, value in (("k1", (rounds - 1) * 10), (SCRIPT, 9002)):
        for n, node in enumerate(nodes):
            h.call(final, final + 1, 1000 + n, "read", key, None, value, node, final=True)
            final += 2
    write_history(run_dir / "history.jsonl", h.ops)
    nemesis = ["partition", *dict.fromkeys(f for f, *_ in OVERLAPS)] if overlaps else ["partition"]
    test = {"name": "synthetic", "workload": "register", "nodes": nodes, "n": 3, "w": 2,
            "r": 2, "versioning": "vector-clock", "nemesis": nemesis, "seed": 7,
            "concurrency": 4, "guarantee": "no-stale-reads"}
    (run_dir / "test.json").write_text(json.dumps(test))
    versions = {"k1": {"versions": [{"value": (rounds - 1) * 10}]},
                SCRIPT: {"versions": [{"value": 9002}]}}
    diverged = {**versions, SCRIPT: {"versions": [{"value": SCRIPT}]}}
    state = {"format": "kvcheck-final-state", "version": 1, "heal_time": int((t + 2000) * MS),
             "samples": [{"time": int((t + 2100) * MS),
                          "nodes": {"n1": versions, "n2": versions, IMG: diverged}}]}
    (run_dir / "final-state.json").write_text(json.dumps(state))
    log = run_dir / "nodes" / "n1" / "kvstore.log"
    log.parent.mkdir(parents=True)
    log.write_text("started\n")
    check_run(run_dir)
    return write_report(run_dir)


#: :func:`make_zone_run`'s zones: two nodes in each, the spare ``n7`` in zone a; the third zone
#: has a hostile name.
ZONES = {"n1": "a", "n2": "b", "n3": IMG, "n4": "a", "n5": "b", "n6": IMG, "n7": "a"}


def make_zone_run(run_dir: Path) -> Path:
    """Write a register run over :data:`ZONES` into ``run_dir`` (created), check it, write its
    report. Each of 30 rounds writes through n1 to n6 in turn; in rounds 10 to 19 zone a loses
    its network: the writes through n1 and n4 fail, the others succeed, and one more write goes
    through ``n9``, a node no zone names. n2 weighs 2, every other node 1.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    nodes = [n for n in ZONES if n != "n7"]
    h = _History()
    t = 1.0
    for i in range(30):
        if i in (10, 20):
            h.add(t, "nemesis", "info", "start-zone" if i == 10 else "stop-zone",
                  value={"fault": "zone", "targets": ["n1", "n4"], "zone": "a",
                         "outage": "network"})
        for p, node in enumerate(nodes):
            lost = 10 <= i < 20 and ZONES[node] == "a"
            h.call(t, t + 2, p, "write", f"k{p}", i, None if lost else i, node,
                   type_="fail" if lost else "ok", error="connection refused" if lost else None)
        if i == 15:
            h.call(t, t + 2, 9, "write", "k9", i, i, "n9")
        t += 10
    write_history(run_dir / "history.jsonl", h.ops)
    test = {"name": "zones", "workload": "register", "nodes": nodes, "zones": ZONES,
            "weights": {n: 2 if n == "n2" else 1 for n in ZONES}, "nemesis": ["zone"],
            "concurrency": 6, "checkers": ["stats"]}
    (run_dir / "test.json").write_text(json.dumps(test))
    check_run(run_dir)
    return write_report(run_dir)
