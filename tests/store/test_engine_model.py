"""The LSM engine against a dict, through puts, deletes, flushes, compactions, purges and restarts.

"Restart" closes the engine first; "crash" abandons it mid-work. A key whose siblings are all
tombstones older than the last purge cutoff may be gone from the engine (compaction drops it
lazily); every other key must read exactly as in the model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kvcheck.store.storage import EngineOptions, LsmStorage
from kvcheck.store.versions import Dot, Version

OPTIONS = EngineOptions(memtable_bytes=1_500, step_bytes=200, block_bytes=128, fanout=2,
                        max_tables=4)

keys = st.sampled_from([b"k%02d" % i for i in range(12)])
versions = st.lists(
    st.builds(Version, st.builds(Dot, st.sampled_from("abc"), st.integers(1, 5)),
              st.just({}), st.one_of(st.none(), st.binary(max_size=40)), st.integers(0, 100)),
    max_size=3, unique_by=lambda v: v.dot)


class EngineMatchesADict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="engine-model-"))
        self.engine = LsmStorage(self.dir, OPTIONS)
        self.model: dict[bytes, list[Version]] = {}
        self.cutoff = -1
        self.abandoned: list[LsmStorage] = []  # kept alive: a killed process writes no more

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.dir)

    def purgeable(self, versions: list[Version]) -> bool:
        return all(v.value is None and v.timestamp < self.cutoff for v in versions)

    @rule(key=keys, versions=versions)
    def put(self, key: bytes, versions: list[Version]) -> None:
        self.engine.put(key, versions)
        if versions:
            self.model[key] = versions
        else:
            self.model.pop(key, None)

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        self.put(key, [])

    @rule()
    def step(self) -> None:
        self.engine.step()

    @rule()
    def flush(self) -> None:
        self.engine.flush()

    @rule()
    def compact(self) -> None:
        self.engine.compact()

    @rule(cutoff=st.integers(0, 100))
    def purge(self, cutoff: int) -> None:
        self.cutoff = max(self.cutoff, cutoff)
        self.engine.purge_tombstones(self.cutoff)

    @rule()
    def restart(self) -> None:
        self.engine.close()
        self.engine = LsmStorage(self.dir, OPTIONS)

    @rule()
    def crash(self) -> None:
        """Reopen without closing, as after kill -9: every put reached the kernel, but a flush
        or compaction may be half written."""
        self.abandoned.append(self.engine)
        self.engine = LsmStorage(self.dir, OPTIONS)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model)))
        self.check(key, self.engine.get(key))

    def check(self, key: bytes, found: list[Version]) -> None:
        if found == [] and self.purgeable(self.model[key]):
            del self.model[key]  # purged; it must stay gone
        else:
            assert found == self.model[key]

    @invariant()
    def scan_matches(self) -> None:
        scanned = dict(self.engine.scan())
        assert scanned.keys() <= self.model.keys()
        for key in list(self.model):
            self.check(key, scanned.get(key, []))


EngineMatchesADict.TestCase.settings = settings(max_examples=150, stateful_step_count=50,
                                                deadline=None)
test_engine_matches_a_dict = EngineMatchesADict.TestCase
