"""The data-center claim, measured side by side; prints JSON.

    python benchmarks/zones_bench.py [--backend sim|docker] [--seeds 3] [--time-limit 60]

Six nodes, N = 3, strict W = R = 2, the register workload. Zone c (n3, n6) is lost from 10 s
to 10 s before the clients stop — its network cut off from the other zones, or its power — with
the nodes in three zones (``--zones 3``: a key has one replica per zone), and the same two
nodes cut off or killed with the zones ignored (``--zones 1``), by hand-written schedules so
that the outage is the same. For each: the verdict; availability of the calls through the other
nodes, overall and for the keys with two replicas on the lost nodes; the latest failure of a
call through the other nodes, in seconds after the outage began; availability of the calls
through the lost nodes. The commands are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from machine import machine

from kvcheck.harness.outage import outages

LOST, OTHERS = ["n3", "n6"], ["n1", "n2", "n4", "n5"]
CASES: dict[str, tuple[int, dict[str, object]]] = {  # name: (zones, the fault that loses LOST)
    "zones-3-network": (3, {"kind": "zone", "zone": "c", "outage": "network",
                            "components": [LOST, OTHERS]}),
    "zones-3-power": (3, {"kind": "zone", "zone": "c", "outage": "power"}),
    "zones-1-partition": (1, {"kind": "partition", "components": [LOST, OTHERS]}),
    "zones-1-kill": (1, {"kind": "kill"}),
}


def share(calls: list[tuple[float, bool]]) -> dict[str, Any]:
    ok = sum(1 for _, succeeded in calls if succeeded)
    return {"calls": len(calls), "ok": ok,
            "availability": round(ok / len(calls), 4) if calls else None}


def measure(run_dir: Path) -> dict[str, Any]:
    """The figures of one run (module docstring)."""
    (outage,) = outages(run_dir)
    others = [c for (_, _, lost), calls in outage.calls.items() if not lost for c in calls]
    doubly = [c for (key, _, lost), calls in outage.calls.items()
              if not lost and outage.replicas_lost(key) >= 2 for c in calls]
    lost = [c for (_, _, through), calls in outage.calls.items() if through for c in calls]
    failures = [at for at, ok in others if not ok]
    results = json.loads((run_dir / "results.json").read_text())
    return {"valid": results["valid"], "through_others": share(others),
            "keys_with_two_replicas_lost": sorted(
                k for k in outage.keys if outage.replicas_lost(k) >= 2),
            "through_others_for_those_keys": share(doubly),
            "last_failure_through_others_s": round(max(failures), 3) if failures else None,
            "through_lost_nodes": share(lost)}


def run_args(args: argparse.Namespace, zones: int, schedule: str, seed: str) -> list[str]:
    """The arguments of ``kvcheck`` for one case and seed, but ``--histories``."""
    return ["run", "--backend", args.backend, "--nodes", "6", "--zones", str(zones),
            "--n", "3", "--w", "2", "--r", "2", "--schedule", schedule,
            "--time-limit", str(args.time_limit), "--recovery-time", "5", "--seed", seed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sim", "docker"), default="sim")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--time-limit", type=int, default=60)
    args = parser.parse_args()
    out: dict[str, Any] = {"benchmark": "zones", **machine(),
                           "backend": args.backend, "time_limit": args.time_limit, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (zones, fault) in CASES.items():
            schedule = Path(tmp) / f"{name}.json"
            duration = args.time_limit - 20
            schedule.write_text(json.dumps({"format": "kvcheck-schedule", "version": 1,
                                            "faults": [{"at": 10, "duration": duration,
                                                        "targets": LOST, **fault}]}))
            runs = []
            for seed in range(1, args.seeds + 1):
                histories = Path(tmp) / f"{name}-{seed}"
                argv = [*run_args(args, zones, str(schedule), str(seed)),
                        "--histories", str(histories)]
                done = subprocess.run([sys.executable, "-m", "kvcheck", *argv],
                                      capture_output=True, text=True)
                if done.returncode not in (0, 1):
                    raise SystemExit(f"kvcheck {' '.join(argv)} exited {done.returncode}:\n"
                                     f"{done.stderr[-2000:]}")
                runs.append({"seed": seed, **measure((histories / "latest").resolve())})
            out["cases"][name] = {"schedule": {"at": 10, "duration": duration,
                                               "targets": LOST, **fault},
                                  "command": "kvcheck " + " ".join(
                                      run_args(args, zones, "SCHEDULE", "SEED")),
                                  "runs": runs}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
