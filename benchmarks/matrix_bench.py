"""How many consistency-matrix cells a minute, simulated and in Docker; prints JSON.

    python benchmarks/matrix_bench.py [--seeds 3] [--jobs J] [--default] [--docker]

Times ``kvcheck matrix`` (a subprocess, as a user runs it) on a sample of the default grid —
every nemesis of one configuration for each workload and versioning — or with ``--default``
the whole default matrix (what docs/consistency.md shows; it must finish in under 10 minutes on
2 cores). With ``--docker`` it also times two cells of one seed in Docker (the node image built
beforehand, so the figure is the runs' own cost).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import machine

SAMPLE = ["--quorums", "2/2", "--sloppy", "off"]
DOCKER = ["--backend", "docker", "--quorums", "2/2", "--sloppy", "off", "--versioning",
          "vclock", "--workload", "register", "--nemesis", "none,partition", "--seeds", "1",
          "--time-limit", "15", "--recovery-time", "5", "--jobs", "1"]


def timed(argv: list[str], histories: Path) -> dict[str, Any]:
    """Run ``kvcheck matrix argv``; its cells, runs, wall seconds and cells per minute."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kvcheck", "matrix", *argv,
                           "--histories", str(histories)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"kvcheck matrix {' '.join(argv)} exited {done.returncode}:\n"
                         f"{done.stderr[-2000:]}")
    matrix = json.loads((histories / "matrices" / "latest" / "matrix.json").read_text())
    cells = len(matrix["cells"])
    runs = sum(len(c["runs"]) for c in matrix["cells"])
    return {"argv": argv, "cells": cells, "runs": runs, "wall_s": round(wall, 1),
            "cells_per_minute": round(cells / wall * 60, 1),
            "runs_per_minute": round(runs / wall * 60, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--default", action="store_true",
                        help="time the whole default matrix instead of a sample of it")
    parser.add_argument("--docker", action="store_true", help="also time cells in Docker")
    args = parser.parse_args()
    common = ["--seeds", str(args.seeds), "--jobs", str(args.jobs)]
    out: dict[str, Any] = {"benchmark": "matrix", **machine()}
    with tempfile.TemporaryDirectory(prefix="kvcheck-matrix-bench-") as scratch:
        out["sim"] = timed([*([] if args.default else SAMPLE), *common], Path(scratch) / "sim")
        if args.docker:
            out["docker"] = timed(DOCKER, Path(scratch) / "docker")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
