"""How fast ``kvcheck explore`` finds each deliberate bug of the reference store; prints JSON.

    python benchmarks/explore_bench.py [--budget 240] [--seed 0] [--bugs a,b] [--jobs 1]
        [--docker]

For each bug (``kvcheck run --bug help``), one search as a user runs it — ``kvcheck explore --bug
NAME OPTIONS --budget SECONDS``, with the options of :data:`NARROWED` (the table in docs/sim.md)
— and, per bug: whether it was found, after how many runs and seconds, the whole search's runs
and seconds (shrinking included), the shrunk failure's size and the checkers that caught it.
With ``--jobs J``, each search runs as J shards at once (``kvcheck explore --jobs J``): the
runs are those of every shard, the first failure that of the shard that found one (its own runs,
and seconds since the search began).
With ``--docker``, the shrunk failure's replay command is run again with ``--backend docker``
(where its faults exist there), and its verdict reported beside.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from machine import machine

from kvcheck.nemesis import SIMULATED_ONLY
from kvcheck.store.bugs import BUGS

STRICT = ["--workload", "register", "--no-sloppy-quorum", "--w", "2", "--r", "2"]
#: The options each search is narrowed with (none: every axis open).
NARROWED: dict[str, list[str]] = {
    "count-own-read-twice": STRICT,
    "ack-when-sent": STRICT,
    "lww-last-arrival": [*STRICT, "--versioning", "lww"],
    "context-not-kept": ["--workload", "register", "--versioning", "vclock"],
    "ack-before-fsync": ["--workload", "set", "--nemesis", "power,partition,kill"],
    "hints-in-memory": ["--workload", "set", "--sloppy-quorum", "--nemesis", "partition,kill"],
}


def kvcheck(*argv: str) -> int:
    return subprocess.run([sys.executable, "-m", "kvcheck", *argv], check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


def search(bug: str, budget: float, seed: int, jobs: int, docker: bool) -> dict[str, Any]:
    options = NARROWED.get(bug, [])
    result: dict[str, Any] = {"bug": bug, "options": " ".join(options)}
    with tempfile.TemporaryDirectory() as scratch:
        kvcheck("explore", "--bug", bug, *options, "--budget", str(budget), "--seed", str(seed),
                "--jobs", str(jobs), "--histories", scratch)
        paths = sorted(Path(scratch).glob("explore/*/summary.json"))
        summaries = [json.loads(path.read_text()) for path in paths]
        result.update(found=any(s["failure"] for s in summaries),
                      runs=sum(s["runs"] for s in summaries),
                      seconds=max(s["seconds"] for s in summaries))
        found = [(path, s["failure"]) for path, s in zip(paths, summaries, strict=True)
                 if s["failure"]]
        if found:
            path, failure = min(found, key=lambda f: f[1]["found_after"]["seconds"])
            result.update(found_after=failure["found_after"], caught_by=failure["invalid"],
                          shrunk={k: failure[k] for k in ("faults", "concurrency",
                                                          "time_limit", "operation_limit")},
                          replay=failure["replay"])
            if docker:
                result["docker"] = in_docker(failure["replay"], path.parent / "schedule.json",
                                             Path(scratch) / "docker")
    return result


def in_docker(replay: str, schedule: Path, histories: Path) -> dict[str, Any]:
    """The shrunk failure run with ``--backend docker``: its exit code and invalid checkers."""
    kinds = {fault["kind"] for fault in json.loads(schedule.read_text())["faults"]}
    if unavailable := sorted(kinds & set(SIMULATED_ONLY)):
        return {"skipped": f"needs the simulator's {', '.join(unavailable)} faults"}
    argv = shlex.split(replay)[2:]  # past "kvcheck run"
    argv[argv.index("--backend") + 1] = "docker"
    argv[argv.index("--histories") + 1] = str(histories)
    code = kvcheck("run", *argv)
    results = json.loads(next(histories.glob("*/*/results.json")).read_text())["checkers"]
    return {"exit_code": code,
            "invalid": sorted(name for name, r in results.items() if r["valid"] is False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=240.0, help="seconds per bug")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bugs", default=",".join(BUGS))
    parser.add_argument("--jobs", type=int, default=1, help="shards searched at once")
    parser.add_argument("--docker", action="store_true",
                        help="also run each shrunk failure in Docker")
    args = parser.parse_args()
    results = [search(bug, args.budget, args.seed, args.jobs, args.docker)
               for bug in args.bugs.split(",")]
    print(json.dumps({"benchmark": "explore", **machine(), "budget_s": args.budget,
                      "seed": args.seed, "jobs": args.jobs, "bugs": results}, indent=2))


if __name__ == "__main__":
    main()
