"""Kill -9 a process writing through the engine at random points; no acknowledged write is lost.

The child puts, syncs, then prints the key it wrote (its acknowledgement), and steps background
work between puts, with a tiny memtable so that flushes and compactions are nearly always under
way. The parent kills it after a random number of acknowledgements, reopens the directory (which
must always succeed) and checks that every key holds its last acknowledged value — or the one
write in flight at the kill, which may or may not have landed.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

from kvcheck.store.storage import EngineOptions, LsmStorage

OPTIONS = dict(memtable_bytes=10_000, step_bytes=700, block_bytes=256, fanout=2)
HOT_KEYS = 150

CHILD = """
import json, sys
from pathlib import Path
from kvcheck.store.storage import EngineOptions, LsmStorage
from kvcheck.store.versions import Dot, Version

path, options, i, hot = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
engine = LsmStorage(Path(path), EngineOptions(**options))
while True:
    engine.put(b"k%d" % (i % hot), [Version(Dot("w", i + 1), {}, b"value-%d" % i, i)])
    engine.sync()
    print(i, flush=True)
    engine.step()
    i += 1
"""


def run_until_killed(data_dir: Path, start: int, acks: int) -> list[int]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir), json.dumps(OPTIONS), str(start),
         str(HOT_KEYS)],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acknowledged = []
    for line in child.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) == acks:
            break
    child.send_signal(signal.SIGKILL)
    acknowledged.extend(int(line) for line in child.stdout)  # what it printed before dying
    child.wait()
    assert child.returncode == -signal.SIGKILL
    return acknowledged


def test_no_acknowledged_write_is_lost_across_random_kills(tmp_path: Path) -> None:
    rng = random.Random(6)
    last: dict[bytes, int] = {}
    for round_ in range(30):
        start = round_ * 1_000_000
        acknowledged = run_until_killed(tmp_path, start, rng.randrange(20, 600))
        for i in acknowledged:
            last[b"k%d" % (i % HOT_KEYS)] = i
        in_flight = acknowledged[-1] + 1
        engine = LsmStorage(tmp_path, EngineOptions(**OPTIONS))  # must always start
        for key, i in last.items():
            [version] = engine.get(key)
            assert version.value in (b"value-%d" % i, b"value-%d" % in_flight), key
            if version.value != b"value-%d" % i:
                assert key == b"k%d" % (in_flight % HOT_KEYS)
                last[key] = in_flight  # it landed: later rounds must keep it
        engine.close()
    assert any(tmp_path.glob("sst-*.sst"))
