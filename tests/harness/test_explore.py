"""``kvcheck explore``: a seeded search of simulated runs that finds a store's mistake, shrinks
it, and leaves a command that replays the failure exactly; a correct store gives it nothing to
find; shards merge. Bounded by run counts, never by the clock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from kvcheck.harness import explore
from kvcheck.harness.cli import explore as explore_cli
from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit

#: A narrow search: a bug that concurrent adds through one replica show.
NARROW = ["--workload", "set", "--versioning", "vclock", "--no-sloppy-quorum", "--w", "2",
          "--r", "2", "--nemesis", "partition,kill"]


def summary(histories: Path) -> dict[str, object]:
    (found,) = (histories / "explore").glob("*/summary.json")
    document: dict[str, object] = json.loads(found.read_text())
    return document


def test_a_search_finds_a_bug_shrinks_it_and_prints_a_command_that_replays_it_exactly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explore", *NARROW, "--bug", "merge-keeps-newest", "--max-runs", "25",
                 "--histories", str(tmp_path)])
    assert code == Exit.INVALID
    failure = summary(tmp_path)["failure"]
    assert isinstance(failure, dict)
    assert failure["invalid"] == ["lost-writes"] and failure["replayed_exit_code"] == Exit.INVALID
    assert failure["faults"] == 0  # the mistake needs no fault: concurrent adds
    before = failure["before_shrinking"]
    sizes = ("faults", "concurrency", "time_limit", "operation_limit")
    assert all(failure[k] <= before[k] for k in sizes)
    assert any(failure[k] < before[k] for k in sizes)
    printed = capsys.readouterr().out
    replay = next(line for line in printed.splitlines() if line.startswith("replay: "))
    command = shlex.split(replay.removeprefix("replay: "))
    assert command[:2] == ["kvcheck", "run"]
    assert all(Path(a).is_absolute() for a in command if "/" in a)
    again = tmp_path / "again"
    argv = [*command[2:command.index("--histories")], "--histories", str(again)]
    done = subprocess.run([sys.executable, "-m", "kvcheck", "run", *argv],
                          capture_output=True, timeout=300)
    assert done.returncode == Exit.INVALID

    def digest(run: Path) -> str:
        return hashlib.sha256((run / "history.jsonl").read_bytes()).hexdigest()

    assert digest(again / "latest") == digest(Path(str(failure["run"])))


STRICT = ["--workload", "register", "--no-sloppy-quorum", "--w", "2", "--r", "2"]
#: The bugs a short search finds within six runs (docs/sim.md): the options that narrow the
#: search, and the checker that must catch the failure. The others take longer searches, so
#: seeded runs in test_bugs.py catch them instead.
FOUND_BY_A_SHORT_SEARCH = {
    "count-own-read-twice": (STRICT, "stale-reads"),
    "ack-when-sent": (STRICT, "stale-reads"),
    "merge-keeps-newest": ([], "lost-writes"),
    "repair-replaces": ([], "lost-writes"),
    "dot-from-context": ([], "lost-writes"),
    "context-not-kept": (["--workload", "register", "--versioning", "vclock"], "stale-reads"),
}


@pytest.mark.parametrize("bug", sorted(FOUND_BY_A_SHORT_SEARCH))
def test_a_search_bounded_by_runs_finds_each_bug_for_its_reason(tmp_path: Path, bug: str
                                                                ) -> None:
    options, checker = FOUND_BY_A_SHORT_SEARCH[bug]
    code = main(["explore", "--bug", bug, *options, "--max-runs", "6", "--seed", "0",
                 "--histories", str(tmp_path)])
    assert code == Exit.INVALID
    failure = summary(tmp_path)["failure"]
    assert isinstance(failure, dict) and failure["invalid"] == [checker]


def test_a_search_at_a_rate_runs_and_replays_its_cases_at_that_rate(tmp_path: Path) -> None:
    code = main(["explore", "--bug", "merge-keeps-newest", "--rate", "300", "--max-runs", "6",
                 "--seed", "0", "--histories", str(tmp_path)])
    assert code == Exit.INVALID
    document = summary(tmp_path)
    assert isinstance(document["axes"], dict) and document["axes"]["rate"] == 300
    failure = document["failure"]
    assert isinstance(failure, dict) and "--rate 300 " in failure["replay"]
    assert json.loads((Path(failure["run"]) / "test.json").read_text())["rate"] == 300


def test_a_search_of_the_correct_store_finds_nothing_and_says_how_much_it_tried(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explore", "--no-sloppy-quorum", "--w", "2", "--r", "2", "--max-runs", "6",
                 "--seed", "3", "--histories", str(tmp_path)])
    assert code == Exit.OK
    document = summary(tmp_path)
    assert document["failure"] is None and document["runs"] == 6
    assert "no failure in 6 runs" in capsys.readouterr().out


def test_shards_search_apart_and_merge_into_one_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for shard in ("0/2", "1/2"):
        main(["explore", *NARROW, "--max-runs", "2", "--shard", shard,
              "--histories", str(tmp_path / shard.replace("/", "-"))])
    names = sorted(p.parent.name for p in tmp_path.rglob("summary.json"))
    assert [n.rsplit("-shard-", 1)[1] for n in names] == ["0-of-2", "1-of-2"]
    capsys.readouterr()
    assert main(["explore", "--merge", str(tmp_path)]) == Exit.OK
    assert "2 search(es), 4 runs, 0 failure(s)" in capsys.readouterr().out
    assert main(["explore", "--merge", str(tmp_path / "nothing-here")]) == Exit.USAGE


@pytest.mark.parametrize(("broken", "why"), [
    ('{"format": "kvcheck-explore", "runs": "many", "shard": [0, 1]}', "runs is 'many'"),
    ('{"format": "kvcheck-explore", "runs": 3, "shard": "0/1"}', "shard is '0/1'"),
    ('{"format": "kvcheck-explore", "runs": 3, "shard": [0, 1], "failure": {"why": 1}}',
     "no reason or replay"),
    ('{"format": "kvcheck-explore", "runs": 3', "Expecting"),
])
def test_a_merge_names_a_summary_it_cannot_read_and_does_not_call_the_search_clean(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: str, why: str) -> None:
    main(["explore", *NARROW, "--max-runs", "1", "--histories", str(tmp_path / "good")])
    (tmp_path / "cut-short").mkdir()
    (tmp_path / "cut-short" / "summary.json").write_text(broken)
    (tmp_path / "other-tool").mkdir()
    (tmp_path / "other-tool" / "summary.json").write_text('["not", "a", "search"]')
    capsys.readouterr()
    assert main(["explore", "--merge", str(tmp_path)]) == Exit.UNKNOWN
    printed = capsys.readouterr()
    assert f"skipping {tmp_path / 'cut-short' / 'summary.json'}: " in printed.err
    assert why in printed.err
    assert "1 search(es), 1 runs, 0 failure(s), 1 summary(ies) unreadable" in printed.out


def test_searches_begun_in_the_same_second_write_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(explore_cli, "new_run_id", lambda: ("20261204T000000", "x"))
    for _ in range(2):
        assert main(["explore", *NARROW, "--max-runs", "1",
                     "--histories", str(tmp_path)]) == Exit.OK
    names = sorted(p.parent.name for p in tmp_path.rglob("summary.json"))
    assert names == ["20261204T000000", "20261204T000000-2"]


def test_jobs_search_their_shards_at_once_and_report_them_merged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explore", *NARROW, "--max-runs", "2", "--shard", "1/2", "--jobs", "2",
                 "--histories", str(tmp_path)])
    assert code == Exit.OK
    summaries = {p.parent.name.rsplit("-shard-", 1)[1]: json.loads(p.read_text())
                 for p in tmp_path.rglob("summary.json")}
    assert sorted(summaries) == ["2-of-4", "3-of-4"]  # shard 1/2 as two of four
    assert all(s["runs"] == 2 and s["failure"] is None and not s["halted"]
               for s in summaries.values())
    assert "2 search(es), 4 runs, 0 failure(s)" in capsys.readouterr().out


def test_jobs_report_the_failure_one_of_them_found(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Shard 0 of 2 at seed 0 is the search at seed 0 that finds this bug within six runs.
    code = main(["explore", "--bug", "merge-keeps-newest", "--max-runs", "6", "--seed", "0",
                 "--jobs", "2", "--histories", str(tmp_path)])
    assert code == Exit.INVALID
    summaries = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    failures = [s["failure"] for s in summaries if s["failure"]]
    assert failures and all(f["invalid"] == ["lost-writes"] for f in failures)
    # One that found nothing stopped once the other had found its failure, or ran out.
    assert all(s["halted"] or s["runs"] == 6 for s in summaries if not s["failure"])
    printed = capsys.readouterr().out
    assert "2 search(es)" in printed and "replay: kvcheck run" in printed


@pytest.mark.parametrize(("jobs", "signum"), [(1, signal.SIGINT), (1, signal.SIGTERM),
                                               (2, signal.SIGTERM)])
def test_a_signal_stops_the_search_and_every_job_and_leaves_nothing_behind(
        tmp_path: Path, jobs: int, signum: signal.Signals) -> None:
    scratch = Path(tempfile.gettempdir())
    before = set(scratch.glob("kvcheck-explore-*"))
    explore_ = subprocess.Popen(
        [sys.executable, "-m", "kvcheck", "explore", *NARROW, "--jobs", str(jobs),
         "--histories", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert explore_.stdout is not None
    shards: list[int] = []
    try:
        started = 0
        for line in explore_.stdout:  # each search says so once a signal would stop it
            started += line.startswith("exploring")
            if started == jobs:
                break
        shards = [pid for pid in children_of(explore_.pid)
                  if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(shards) == (jobs if jobs > 1 else 0)
        explore_.send_signal(signum)
        out, err = explore_.communicate(timeout=120)
    finally:  # a failure here must not leave searches running
        if explore_.poll() is None:  # its shards are still its own, not reaped
            for pid in [explore_.pid, *shards]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            explore_.wait()
    assert explore_.returncode == Exit.of_signal(signum), err
    assert not [pid for pid in shards if Path(f"/proc/{pid}").exists()]
    summaries = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    assert [s["stopped_by"] for s in summaries] == [signum.name] * jobs, (summaries, out, err)
    assert f"stopped by {signum.name}" in out
    assert set(scratch.glob("kvcheck-explore-*")) <= before  # each search's scratch is gone


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def test_a_search_halts_once_another_has_found_a_failure_and_tells_the_others(
        tmp_path: Path) -> None:
    others_found = threading.Event()
    others_found.set()
    halted = explore.Search(explore.Axes(workloads=("set",), versionings=("vclock",)),
                            tmp_path, halt=others_found)
    assert halted.run() is None and halted.halted and halted.runs == 0
    mine = threading.Event()
    search = explore.Search(explore.Axes(workloads=("set",), versionings=("vclock",),
                                         sloppy=(False,), w=(2,), r=(2,), kinds=(),
                                         bugs=("merge-keeps-newest",)),
                            tmp_path, max_runs=3, halt=mine)
    assert search.run() is not None and mine.is_set() and not search.halted


@pytest.mark.parametrize(("argv", "words"), [
    (["--w", "4"], "--w must be from 1 to --n (3)"),
    (["--nemesis", "partition,meteor"], "unknown nemesis kind(s) meteor"),
    (["--bug", "nope"], "no such bug: nope"),
    (["--workload", "set", "--versioning", "lww"], "loses concurrent adds by design"),
])
def test_a_search_that_cannot_run_is_refused_with_the_option_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    assert main(["explore", *argv, "--histories", str(tmp_path)]) == Exit.USAGE
    assert words in capsys.readouterr().err
    assert not (tmp_path / "explore").exists()


@pytest.mark.parametrize("argv", [["--shard", "2/2"], ["--jobs", "0"], ["--jobs", "two"],
                                  ["--rate", "0"]])
def test_a_malformed_shard_job_count_or_rate_is_refused(argv: list[str]) -> None:
    assert main(["explore", *argv]) == Exit.USAGE


#: Runs a search whose runs are stood in for (the choices alone are under test: each case
#: "fails" when it has three faults and more than four clients), after importing the modules
#: named in argv; prints a digest of every case tried, in order.
SEARCH_ONLY = """
import hashlib, importlib, sys, tempfile
from pathlib import Path
from kvcheck.harness import explore
for name in sys.argv[1:]:
    importlib.import_module(name)
tried = []
def stand_in(case, scratch):
    tried.append(case)
    run_dir = scratch / str(len(tried))
    run_dir.mkdir()
    failed = len(case.faults) >= 3 and case.concurrency > 4
    return explore.Outcome(("linearizable",) if failed else (), (), run_dir)
explore.run_case = stand_in
with tempfile.TemporaryDirectory() as scratch:
    explore.Search(explore.Axes(), Path(scratch), seed=7, max_runs=300).run()
print(len(tried), hashlib.sha256(repr(tried).encode()).hexdigest())
"""


def test_a_search_tries_the_same_cases_whatever_else_the_process_has_loaded(
        tmp_path: Path) -> None:
    # Hypothesis draws now and then from constants in loaded local modules: this one offers
    # many in the ranges a case draws from.
    (tmp_path / "constants_here.py").write_text(
        f"CONSTANTS = {[101 * i for i in range(1, 200)] + [2**15 + 5, 99_999, 123_456_789]}\n")

    def search(hash_seed: str, *imports: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", SEARCH_ONLY, *imports], capture_output=True, text=True,
            env={"PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(tmp_path)}, check=True)
        return done.stdout

    assert search("1") == search("2", "constants_here")
