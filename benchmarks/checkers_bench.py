"""Checker benchmark: time and peak memory to check generated histories. Prints JSON.

Cases: unique-value register histories of 10k, 100k and 1M ops (10 to 1,000 keys, 5 to 50
clients, a few percent ``info``), and compare-and-set histories (few values, so the search
runs) with crashed ops. Each history is generated here, written to a temporary JSONL file, then
read and checked in a fresh subprocess -- as ``kvcheck check`` would; the peak RSS reported
is that subprocess's and its pool workers' together, sampled every 50 ms from /proc.

    .venv/bin/python benchmarks/checkers_bench.py                 # all cases
    .venv/bin/python benchmarks/checkers_bench.py --sizes 10000   # just some register sizes
    .venv/bin/python benchmarks/checkers_bench.py --no-cas

Targets: a 1M-op register history in under 60 s and 2 GB on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvcheck.checkers.history import Op, write_history

REGISTER_CASES = {
    10_000: {"keys": 10, "clients": 5},
    100_000: {"keys": 100, "clients": 20},
    1_000_000: {"keys": 1_000, "clients": 50},
}
CAS_CASES = [
    {"ops": 10_000, "keys": 10, "clients": 5, "info_rate": 0.05},
    {"ops": 100_000, "keys": 10, "clients": 10, "info_rate": 0.05},
    {"ops": 100_000, "keys": 10, "clients": 20, "info_rate": 0.05},
    # One key, high concurrency: the search's worst case; past its budget it says unknown.
    {"ops": 20_000, "keys": 1, "clients": 20, "info_rate": 0.05},
    {"ops": 20_000, "keys": 1, "clients": 30, "info_rate": 0.03},
]


def generate(n_ops: int, n_keys: int, n_clients: int, *, cas: bool = False,
             info_rate: float = 0.03, seed: int = 1) -> list[Op]:
    """A linearizable history: each call takes effect at a random moment while in flight.

    Register histories write unique values; cas histories draw values from 0..4 (so many
    writes share values and the unique-value algorithm does not apply). A crashed (``info``)
    call takes effect or not, at random, and its client carries on as a new process.
    """
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(n_keys)]
    state: dict[str, Any] = dict.fromkeys(keys)
    process = list(range(n_clients))
    next_process = n_clients
    inflight: list[dict[str, Any] | None] = [None] * n_clients
    ops: list[Op] = []
    counter = 0
    t = 0
    fs = ("read", "write", "cas") if cas else ("read", "write")
    weights = (2, 1, 1) if cas else (1, 1)
    while len(ops) < n_ops:
        c = rng.randrange(n_clients)
        t += rng.randrange(1, 200_000)
        call = inflight[c]
        p = process[c]
        if call is None:
            k = rng.choice(keys)
            f = rng.choices(fs, weights)[0]
            if f == "write":
                counter += 1
                v: Any = rng.randrange(5) if cas else counter
            elif f == "cas":
                v = (rng.randrange(5), rng.randrange(5))
            else:
                v = None
            inflight[c] = {"f": f, "key": k, "value": v, "applied": False, "out": None}
            ops.append(Op(len(ops), t, p, "invoke", f, k, v, f"n{p % 5 + 1}"))
            continue
        if not call["applied"] and rng.random() < 0.5:
            call["applied"] = True
            k = call["key"]
            if call["f"] == "read":
                call["out"] = state[k]
            elif call["f"] == "write":
                state[k] = call["value"]
            else:
                old, new = call["value"]
                call["out"] = state[k] == old
                if call["out"]:
                    state[k] = new
            continue
        f, k = call["f"], call["key"]
        inflight[c] = None
        if rng.random() < info_rate:
            if not call["applied"] and f != "read" and rng.random() < 0.5:
                # takes effect now, unseen by its client
                if f == "write":
                    state[k] = call["value"]
                elif state[k] == call["value"][0]:
                    state[k] = call["value"][1]
            ops.append(Op(len(ops), t, p, "info", f, k, call["value"] if f != "read" else None,
                          f"n{p % 5 + 1}", "timeout"))
            process[c] = next_process
            next_process += 1
            continue
        if not call["applied"]:
            # apply at completion
            if f == "read":
                call["out"] = state[k]
            elif f == "write":
                state[k] = call["value"]
            else:
                call["out"] = state[k] == call["value"][0]
                if call["out"]:
                    state[k] = call["value"][1]
        if f == "cas" and not call["out"]:
            ops.append(Op(len(ops), t, p, "fail", f, k, call["value"], f"n{p % 5 + 1}"))
        else:
            out = call["out"] if f == "read" else call["value"]
            ops.append(Op(len(ops), t, p, "ok", f, k, out, f"n{p % 5 + 1}"))
    return ops


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d.name))
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss[int(d.name)] = int(line.split()[1])
        except (OSError, ValueError):
            continue
    total_kb = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        total_kb += rss.get(p, 0)
        todo.extend(children.get(p, ()))
    return total_kb / 1024


def _run_measured(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``cmd``, sampling its process tree's RSS every 50 ms; returns the peak in MB."""
    peak = 0.0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        while proc.poll() is None:
            peak = max(peak, _tree_rss_mb(proc.pid))
            time.sleep(0.05)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), round(peak, 1)


def check_file(path: str, model: str, time_limit: float) -> dict[str, Any]:
    """Read and check one history file in this process (a fresh one: its peak RSS is the
    check's own, pool workers included)."""
    from kvcheck.checkers import check_linearizable, pair_calls, read_history

    t1 = time.monotonic()
    ops = read_history(path)
    t2 = time.monotonic()
    calls = pair_calls(ops)
    res = check_linearizable(calls=calls, model=model, time_limit=time_limit)
    t3 = time.monotonic()
    return {
        "valid": res.valid.to_json(),
        "calls": res.figures["calls"],
        "algorithms": res.figures["algorithms"],
        "workers": res.figures["workers"],
        "unknown_keys": len(res.figures["unknown_keys"]),
        "read_seconds": round(t2 - t1, 2),
        "check_seconds": round(t3 - t2, 2),
        "total_seconds": round(t3 - t1, 2),
    }


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Generate and write one history, then read and check it in a fresh subprocess."""
    t0 = time.monotonic()
    ops = generate(spec["ops"], spec["keys"], spec["clients"], cas=spec["model"] != "register",
                   info_rate=spec.get("info_rate", 0.03), seed=spec.get("seed", 1))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "history.jsonl"
        write_history(path, ops)
        del ops
        gen_s = time.monotonic() - t0
        proc, peak = _run_measured(
            [sys.executable, __file__, "--check", str(path), spec["model"],
             str(spec.get("time_limit", 60.0))])
    if proc.returncode != 0:
        return {**spec, "error": proc.stderr.strip().splitlines()[-1:]}
    return {**spec, "generate_seconds": round(gen_s, 2), **json.loads(proc.stdout),
            "peak_rss_mb": peak}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=sorted(REGISTER_CASES))
    ap.add_argument("--no-cas", action="store_true")
    ap.add_argument("--check", nargs=3, help=argparse.SUPPRESS)  # internal: FILE MODEL LIMIT
    args = ap.parse_args()
    if args.check:
        path, model, limit = args.check
        print(json.dumps(check_file(path, model, float(limit))))
        return 0
    specs: list[dict[str, Any]] = []
    for n in args.sizes:
        shape = REGISTER_CASES.get(n, {"keys": max(10, n // 1000), "clients": 20})
        specs.append({"ops": n, "model": "register", **shape})
    if not args.no_cas:
        specs.extend({**c, "model": "cas-register", "time_limit": 20.0} for c in CAS_CASES)
    results = []
    for spec in specs:
        results.append(run_case(spec))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "checkers", **machine(), "cases": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
