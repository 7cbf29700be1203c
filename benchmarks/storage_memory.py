"""Memory of a node that holds more data than fits in memory; prints JSON.

    python benchmarks/storage_memory.py [--gigabytes 5] [--value-bytes 4000]

Writes ``--gigabytes`` of data into the LSM engine in a fresh directory (keys in order, values
of ``--value-bytes``, synced every 100 puts, background work run a slice per put as the server
runs it), then reopens it in a fresh process and makes random reads and a full streaming scan.
Reports the peak resident size of each phase: it should be dominated by the memtables, indexes
and Bloom filters, not by the data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine

from kvcheck.store.storage import EngineOptions, LsmStorage
from kvcheck.store.versions import stamp

MEMTABLE = 32 << 20  # the server's default


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write(path: Path, keys: int, value_bytes: int) -> dict[str, float]:
    storage = LsmStorage(path, EngineOptions(memtable_bytes=MEMTABLE))
    value = os.urandom(value_bytes // 2 + 1).hex().encode()[:value_bytes]
    started = time.monotonic()
    for i in range(keys):
        distinct = value[:-16] + b"%016d" % i  # every value its own object, as in a server
        _, versions = stamp("n1.bench", [], {}, distinct, 1, 10)
        storage.put(b"key-%010d" % i, versions)
        if i % 100 == 0:
            storage.sync()
        storage.step()
    while storage.work_pending:
        storage.step()
    storage.close()
    disk = sum(f.stat().st_size for f in path.iterdir())
    return {"seconds": round(time.monotonic() - started, 1), "disk_gb": round(disk / 1e9, 2),
            "peak_rss_mb": peak_rss_mb()}


def read(path: Path, keys: int) -> dict[str, float]:
    started = time.monotonic()
    storage = LsmStorage(path, EngineOptions(memtable_bytes=MEMTABLE))
    opened = time.monotonic() - started
    rng = random.Random(1)
    for _ in range(2000):
        if not storage.get(b"key-%010d" % rng.randrange(keys)):
            raise AssertionError("a written key is missing")
    scanned = sum(1 for _ in storage.scan())
    if scanned != keys:
        raise AssertionError(f"scan found {scanned} keys, not {keys}")
    storage.close()
    return {"open_seconds": round(opened, 2), "random_gets": 2000, "scanned_keys": scanned,
            "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=5.0)
    parser.add_argument("--value-bytes", type=int, default=4000)
    parser.add_argument("--phase", choices=["write", "read"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    keys = int(args.gigabytes * 1e9 / args.value_bytes)
    if args.phase == "write":
        print(json.dumps(write(args.dir, keys, args.value_bytes)))
        return
    if args.phase == "read":
        print(json.dumps(read(args.dir, keys)))
        return
    root = Path(tempfile.mkdtemp(prefix="kvcheck-memory-"))
    try:
        phases = {}
        for phase in ("write", "read"):  # each in a process of its own: its own peak RSS
            out = subprocess.run(
                [sys.executable, __file__, "--phase", phase, "--dir", str(root),
                 "--gigabytes", str(args.gigabytes), "--value-bytes", str(args.value_bytes)],
                check=True, capture_output=True, text=True).stdout
            phases[phase] = json.loads(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"benchmark": "storage-memory", **machine(), "keys": keys,
                      "value_bytes": args.value_bytes, "memtable_bytes": MEMTABLE, **phases},
                     indent=2))


if __name__ == "__main__":
    main()
