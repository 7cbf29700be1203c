"""kvcheck against Porcupine on the same Jepsen histories, in one run: wall time and verdicts.

    .venv/bin/python benchmarks/porcupine_bench.py --histories DIR [--porcupine CMD]
        [--expect FILE] [--rounds 5]

Times ``kvcheck check --json`` over every history file in DIR (``*.log``, ``*.edn``,
``*.txt``; one process, as a user runs it) and, if given, CMD: the user's own build of
Porcupine checking the same files, run through the shell (for Porcupine's etcd set, its test
binary in its source directory: ``cd porcupine && ./porcupine.test -test.run TestEtcdJepsen``).
The two alternate, A B A B, ``--rounds`` times each. Prints JSON: the best and median wall time
of each, the ratio kvcheck / Porcupine, kvcheck's verdicts, and with ``--expect FILE`` (lines
``NAME true|false``, e.g. the table of Porcupine's tests) the files whose verdict differs.
Without ``--porcupine`` the comparison is skipped, and the output says so; this repository
carries none of Porcupine's code, data or build steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from machine import machine

SUFFIXES = (".log", ".edn", ".txt")


def timed(command: list[str] | str, *, shell: bool = False) -> tuple[float, str]:
    """Run ``command``; return its wall time (s) and standard output. Exits the benchmark
    with the command's output if it fails to run (a non-zero verdict code is fine)."""
    started = time.perf_counter()
    done = subprocess.run(command, shell=shell, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1, 2):
        sys.exit(f"porcupine_bench: {command!r} exited {done.returncode}:\n"
                 f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed, done.stdout


def summary(times: list[float]) -> dict[str, float]:
    return {"best_s": round(min(times), 3), "median_s": round(statistics.median(times), 3)}


def expected_verdicts(path: Path) -> dict[str, bool]:
    """``NAME true|false`` lines: a file's name (or its stem) and its expected verdict."""
    verdicts = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, verdict = line.split()
            verdicts[name] = verdict == "true"
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=Path, required=True, metavar="DIR")
    parser.add_argument("--porcupine", metavar="CMD",
                        help="a shell command that checks the same histories with Porcupine")
    parser.add_argument("--expect", type=Path, metavar="FILE",
                        help="expected verdicts, lines NAME true|false")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    files = sorted(str(p) for p in args.histories.iterdir() if p.suffix in SUFFIXES)
    if not files or args.rounds < 1:
        parser.error("--histories needs history files (*.log, *.edn, *.txt), --rounds >= 1")
    kvcheck = [sys.executable, "-m", "kvcheck", "check", "--json", *files]
    ours: list[float] = []
    theirs: list[float] = []
    output = ""
    for _ in range(args.rounds):
        elapsed, output = timed(kvcheck)
        ours.append(elapsed)
        if args.porcupine:
            theirs.append(timed(args.porcupine, shell=True)[0])
    lines = [json.loads(line) for line in output.splitlines()]
    verdicts = {Path(line["file"]).name: line["valid"] for line in lines if "file" in line}
    report: dict[str, Any] = {
        "benchmark": "porcupine", **machine(),
        "histories": len(files), "rounds": args.rounds,
        "kvcheck": {**summary(ours), "command": "kvcheck check --json FILE...",
                    "verdicts": dict(Counter(str(v) for v in verdicts.values()))},
    }
    if theirs:
        report["porcupine"] = {**summary(theirs), "command": args.porcupine}
        report["ratio_kvcheck_to_porcupine"] = {
            "best": round(min(ours) / min(theirs), 3),
            "median": round(statistics.median(ours) / statistics.median(theirs), 3)}
    else:
        report["porcupine"] = {"skipped": "no --porcupine command given"}
    if args.expect:
        expected = expected_verdicts(args.expect)
        compared = {name: v for name, v in verdicts.items()
                    if name in expected or Path(name).stem in expected}
        report["agreement"] = {
            "compared": len(compared),
            "differ": sorted(name for name, v in compared.items()
                             if v != expected.get(name, expected.get(Path(name).stem)))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
