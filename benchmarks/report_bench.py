"""How long a big run's report takes to write and to open; prints JSON.

    python benchmarks/report_bench.py [--ops 100000] [--keys 100] [--workers 20] [--keep]

Writes a synthetic register run directory (``--ops`` history lines: unique writes and reads,
3 % indeterminate, 1 % failed, a partition window every 10 s, a few stale reads, a final state),
checks it with the real checkers, then times ``write_report`` and opening the page in headless
chromium: ``open_ms`` is the page's own measure (navigation start to the end of its drawing),
``chromium_wall_s`` the whole headless run, ``blank_wall_s`` the same for an empty page.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from machine import machine

from kvcheck.checkers import Op, check_run, write_history
from kvcheck.harness.report import write_report

MS = 1_000_000
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def synthetic_run(run_dir: Path, ops: int, keys: int, workers: int, seed: int = 1) -> None:
    """A register run of about ``ops`` history lines in ``run_dir``."""
    rng = random.Random(seed)
    out: list[Op] = []
    free_at = [0.0] * workers
    process = list(range(workers))
    last: dict[str, int] = {}
    value = 0
    t = 0.0
    next_fault, faulty = 10_000.0, False
    ret: int | None  # a read of a key not yet written returns None
    while len(out) < ops - 2 * keys:
        w = min(range(workers), key=free_at.__getitem__)
        t = max(t, free_at[w]) + rng.expovariate(1 / 2.0)
        if t >= next_fault:  # a partition for 10 s in every 20 s
            faulty = not faulty
            out.append(Op(len(out), int(t * MS), "nemesis", "info",
                          "start" if faulty else "stop", None,
                          {"fault": "partition", "targets": ["n1", "n2"]}))
            next_fault += 10_000
        key = f"k{rng.randrange(keys)}"
        latency = rng.lognormvariate(1.0, 0.6)
        kind = rng.choices(["ok", "info", "fail"], [96, 3, 1])[0]
        if rng.random() < 0.5:
            value += 1
            f, arg, ret = "write", value, value
            if kind == "ok":
                last[key] = value
        else:
            f, arg = "read", None
            ret = last.get(key) if rng.random() > 0.001 else last.get(key, 1) - 1
        out.append(Op(len(out), int(t * MS), process[w], "invoke", f, key, arg, f"n{w % 5 + 1}"))
        error = {"info": "timeout", "fail": "unavailable"}.get(kind)
        out.append(Op(len(out), int((t + latency) * MS), process[w], kind, f, key,
                      ret if kind == "ok" else arg, f"n{w % 5 + 1}", error))
        if kind == "info":
            process[w] += workers
        free_at[w] = t + latency
    end = max(op.time for op in out) + 1000 * MS
    out.append(Op(len(out), end, "nemesis", "info", "heal", None, {"fault": "all"}))
    for k in range(keys):
        key = f"k{k}"
        out.append(Op(len(out), end + k * MS, 10_000 + k, "invoke", "read", key, None, "n1",
                      extra={"final": True}))
        out.append(Op(len(out), end + k * MS + 500_000, 10_000 + k, "ok", "read", key,
                      last.get(key), "n1", extra={"final": True}))
    write_history(run_dir / "history.jsonl", out)
    nodes = [f"n{i}" for i in range(1, 6)]
    (run_dir / "test.json").write_text(json.dumps({
        "name": "report-bench", "workload": "register", "nodes": nodes, "n": 3, "w": 2, "r": 2,
        "nemesis": ["partition"], "concurrency": workers, "guarantee": "no-stale-reads"}))
    replica = {key: {"versions": [{"value": v}]} for key, v in last.items()}
    (run_dir / "final-state.json").write_text(json.dumps({
        "format": "kvcheck-final-state", "version": 1, "heal_time": end,
        "samples": [{"time": end + 500 * MS, "nodes": dict.fromkeys(nodes, replica)}]}))


def open_page(report: Path, chromium: str) -> dict[str, float | None]:
    """Open ``report`` (and a blank page) headless; the page's own timing and the wall times."""
    with tempfile.TemporaryDirectory() as profile:
        args = [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom"]
        t0 = time.monotonic()
        subprocess.run([*args, "about:blank"], capture_output=True, check=True, timeout=120)
        blank = time.monotonic() - t0
        t0 = time.monotonic()
        dom = subprocess.run([*args, report.as_uri()], capture_output=True, text=True,
                             check=True, timeout=120).stdout
        wall = time.monotonic() - t0
    match = re.search(r'data-render-ms="(\d+)"', dom)
    return {"open_ms": int(match.group(1)) if match else None,
            "chromium_wall_s": round(wall, 2), "blank_wall_s": round(blank, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        synthetic_run(run_dir, args.ops, args.keys, args.workers)
        t0 = time.monotonic()
        results = check_run(run_dir)
        check_s = time.monotonic() - t0
        t0 = time.monotonic()
        report = write_report(run_dir)
        write_s = time.monotonic() - t0
        out: dict[str, object] = {
            "benchmark": "report", **machine(),
            "ops": results.meta.get("ops"), "verdict": results.valid.to_json(),
            "check_s": round(check_s, 2), "write_report_s": round(write_s, 2),
            "report_bytes": report.stat().st_size}
        chromium = shutil.which("chromium")
        out.update(open_page(report, chromium) if chromium else {"open_ms": None})
        if args.keep:
            out["run_dir"] = str(run_dir)
        print(json.dumps(out))
    finally:
        if not args.keep:
            shutil.rmtree(run_dir)


if __name__ == "__main__":
    main()
