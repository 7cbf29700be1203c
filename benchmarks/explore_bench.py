"""How fast ``kvcheck explore`` finds each deliberate bug of the reference store; prints JSON.

    python benchmarks/explore_bench.py [--budget 300] [--seed 0] [--bugs a,b]

For each bug (``kvcheck run --bug help``), one search with every other axis open — as
``kvcheck explore --bug NAME --budget SECONDS`` runs it — and, per bug: whether it was found,
after how many runs and seconds, the whole search's runs and seconds (shrinking included), the
shrunk failure's size (faults, clients, seconds) and the checkers that caught it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from kvcheck.harness.explore import Axes, Search
from kvcheck.store.bugs import BUGS


def search(bug: str, budget: float, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        done = Search(Axes(bugs=(bug,)), Path(scratch), seed=seed, budget=budget)
        found = done.run()
    result: dict[str, Any] = {"bug": bug, "found": found is not None, "runs": done.runs}
    if found is not None and done.first is not None:
        case, outcome = found
        result.update(found_after_runs=done.first[0], found_after_seconds=done.first[1],
                      shrunk={"faults": len(case.faults), "concurrency": case.concurrency,
                              "time_limit": case.time_limit, "operation_limit": case.operations,
                              "workload": case.workload,
                              "versioning": case.versioning, "w": case.w, "r": case.r,
                              "sloppy_quorum": case.sloppy},
                      caught_by=list(outcome.invalid) or outcome.reason)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per bug")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bugs", default=",".join(BUGS))
    args = parser.parse_args()
    results = [search(bug, args.budget, args.seed) for bug in args.bugs.split(",")]
    print(json.dumps({"budget_s": args.budget, "seed": args.seed, "bugs": results}, indent=2))


if __name__ == "__main__":
    main()
