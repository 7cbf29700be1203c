"""The LSM storage engine beside SQLite on the same workload; prints JSON.

    python benchmarks/storage_bench.py [--keys 1000000] [--value-bytes 100] [--reads 200000]

For each store, in a fresh temporary directory: puts of ``--keys`` keys in key order, then in
random order (into a second, fresh store), then sequential and random gets of present keys and
gets of absent keys; the engine's absent-key gets run twice, with its Bloom filters and without.
Writes are synced every ``--batch`` puts (one SQLite transaction per batch, ``synchronous=FULL``,
WAL journal), as the server's group commit would. The engine's flushes and compactions run
inline, one slice after each put, as the server's event loop runs them; their cost is included.
An overwrite phase (``--keys`` puts over a tenth as many keys) measures space amplification:
the peak bytes in live SSTables, and in the whole data directory (with commit-log segments and
compaction outputs being written), over the SSTable bytes after a full compaction. Values are
sibling sets holding one version of ``--value-bytes`` bytes, encoded the same way for both stores.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgpack
from machine import machine

from kvcheck.store.storage import EngineOptions, LsmStorage
from kvcheck.store.versions import Dot, Version, encode_versions


def key(i: int) -> bytes:
    return b"key%010d" % i


def versions(i: int, size: int) -> list[Version]:
    return [Version(Dot("bench", i + 1), {}, (b"%d:" % i).ljust(size, b"x"), i)]


def rate(count: int, run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return round(count / (time.perf_counter() - start))


class Engine:
    def __init__(self, path: Path, use_bloom: bool = True) -> None:
        self.store = LsmStorage(path, EngineOptions(use_bloom=use_bloom))

    def put_all(self, order: Iterable[int], size: int, batch: int) -> None:
        store = self.store
        for n, i in enumerate(order, 1):
            store.put(key(i), versions(i, size))
            store.step()
            if n % batch == 0:
                store.sync()
        store.sync()
        while store.step():
            pass

    def get_all(self, order: Iterable[int], present: bool) -> None:
        for i in order:
            assert bool(self.store.get(key(i))) == present


class Sqlite:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path / "bench.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def put_all(self, order: Iterable[int], size: int, batch: int) -> None:
        self.db.execute("BEGIN")
        for n, i in enumerate(order, 1):
            value = msgpack.packb(encode_versions(versions(i, size)), use_bin_type=True)
            self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key(i), value))
            if n % batch == 0:
                self.db.execute("COMMIT")
                self.db.execute("BEGIN")
        self.db.execute("COMMIT")

    def get_all(self, order: Iterable[int], present: bool) -> None:
        query = "SELECT v FROM kv WHERE k = ?"
        for i in order:
            row = self.db.execute(query, (key(i),)).fetchone()
            assert (row is not None) == present


def measure(make: Callable[[Path], Any], args: argparse.Namespace,
            rng: random.Random) -> dict[str, float]:
    keys, reads = args.keys, min(args.reads, args.keys)
    shuffled = rng.sample(range(keys), keys)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        result = {"sequential_put": rate(keys, lambda: make(Path(b)).put_all(
            range(keys), args.value_bytes, args.batch))}
        store = make(Path(a))
        result["random_put"] = rate(keys, lambda: store.put_all(shuffled, args.value_bytes,
                                                               args.batch))
        result["sequential_get"] = rate(reads, lambda: store.get_all(range(reads), True))
        result["random_get"] = rate(reads, lambda: store.get_all(shuffled[:reads], True))
        absent = range(keys, keys + reads)
        result["absent_get"] = rate(reads, lambda: store.get_all(absent, False))
        if isinstance(store, Engine):
            stats = store.store.stats()
            store.store.close()
            unfiltered = Engine(Path(a), use_bloom=False)
            result["absent_get_without_bloom"] = rate(reads, lambda: unfiltered.get_all(absent,
                                                                                       False))
            unfiltered.store.close()
            result["sstables"] = stats["sstable_count"]
            result["sstable_bytes"] = stats["sstable_bytes"]
            result["bloom_observed_fp_rate"] = stats["bloom_observed_fp_rate"]
    return result


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def space_amplification(args: argparse.Namespace, rng: random.Random) -> dict[str, float]:
    distinct = max(args.keys // 10, 1)
    with tempfile.TemporaryDirectory() as name:
        path = Path(name)
        store = LsmStorage(path)
        peak_tables = peak_disk = 0
        for n in range(args.keys):
            store.put(key(rng.randrange(distinct)), versions(n, args.value_bytes))
            store.step()
            if n % 1000 == 0:
                peak_tables = max(peak_tables, store.stats()["sstable_bytes"])
                peak_disk = max(peak_disk, disk_bytes(path))
        store.compact()
        live = store.stats()["sstable_bytes"]
        store.close()
    return {"overwrites": args.keys, "distinct_keys": distinct, "live_sstable_bytes": live,
            "peak_sstable_bytes": peak_tables, "peak_disk_bytes": peak_disk,
            "sstable_space_amplification": round(peak_tables / live, 2),
            "disk_space_amplification": round(peak_disk / live, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    engine = measure(Engine, args, random.Random(args.seed))
    sqlite = measure(Sqlite, args, random.Random(args.seed))
    ratios = {name: round(engine[name] / sqlite[name], 2) for name in sqlite}
    engine["absent_get_bloom_speedup"] = round(engine["absent_get"]
                                               / engine["absent_get_without_bloom"], 2)
    print(json.dumps({
        "benchmark": "storage", **machine(),
        "keys": args.keys, "reads": min(args.reads, args.keys), "value_bytes": args.value_bytes,
        "batch": args.batch, "unit": "operations per second",
        "engine": engine, "sqlite": sqlite, "engine_over_sqlite": ratios,
        "overwrite": space_amplification(args, random.Random(args.seed)),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "seconds": round(time.perf_counter() - started),
    }, indent=2))


if __name__ == "__main__":
    main()
