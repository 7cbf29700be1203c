"""``kvcheck suite``: suite files, canaries, the suite's exit code and its JUnit file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from kvcheck.harness.cli import main, run
from kvcheck.harness.junit import RunRecord
from kvcheck.harness.suite import SuiteError, SuiteTest, load_suite, suite_exit

ROOT = Path(__file__).resolve().parents[2]

SUITE = """
[defaults]
nodes = 3
time-limit = 20

[[test]]
name = "safe"
nemesis = ["partition", "kill"]

[[test]]
name = "canary"
known-unsafe = true
expect-anomaly = "lost"
versioning = "lww"
time-limit = 5
leave-running = false
"""


def parse_run(argv: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    return parser.parse_args(argv)


def test_tests_start_from_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SUITE)
    safe, canary = load_suite(tmp_path / "s.toml", parse_run)
    assert safe == SuiteTest("safe", ("--name", "safe", "--nodes", "3", "--time-limit", "20",
                                      "--nemesis", "partition,kill"))
    assert canary.expect_anomaly == "lost" and canary.argv[-3:] == ("--versioning", "lww",
                                                        "--no-leave-running")
    args = parse_run(canary.argv)
    assert (args.time_limit, args.leave_running, args.sloppy_quorum) == (5, False, False)


def test_a_table_gives_one_option_per_entry(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text('[[test]]\nname = "etcd-stale"\ndb = "etcd"\n'
                                     'db-opt = { reads = "serializable", retries = 3 }\n')
    (test,) = load_suite(tmp_path / "s.toml", parse_run)
    assert test.argv == ("--name", "etcd-stale", "--db", "etcd", "--db-opt",
                         "reads=serializable", "--db-opt", "retries=3")
    assert parse_run(test.argv).db_opt == [("reads", "serializable"), ("retries", "3")]


def test_zone_options_are_suite_keys(tmp_path: Path) -> None:
    """A list gives a comma list; a table for an option given once would keep only its last
    entry, so it is refused, naming the list to write instead."""
    (tmp_path / "s.toml").write_text(
        '[[test]]\nname = "zoned"\nnodes = 4\nzone-map = ["n1=a", "n2=a", "n3=b", "n4=b"]\n'
        'weights = ["n1=2"]\nzone-latency-ms = 5\nnemesis = "zone"\nzone-outage = "power"\n')
    (test,) = load_suite(tmp_path / "s.toml", parse_run)
    args = parse_run(test.argv)
    assert args.zone_map == (("n1", "a"), ("n2", "a"), ("n3", "b"), ("n4", "b"))
    assert (args.weights, args.zone_latency_ms, args.zone_outage) == (
        (("n1", 2),), 5.0, "power")
    (tmp_path / "s.toml").write_text(
        '[[test]]\nname = "zoned"\nzone-map = { n1 = "a", n2 = "b" }\n')
    with pytest.raises(SuiteError, match=re.escape(
            'test 1 (zoned): --zone-map is given once, so a table would keep only its last '
            'entry: write it as a list, zone-map = ["n1=a", "n2=b"]')):
        load_suite(tmp_path / "s.toml", parse_run)


def test_a_suite_test_runs_the_zone_nemesis_over_its_zones(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        '[[test]]\nname = "zone-outage"\nbackend = "sim"\nzones = 3\nnemesis = "zone"\n'
        'time-limit = 5\nnemesis-interval = 2\nrecovery-time = 3\nseed = 1\n')
    histories = tmp_path / "h"
    assert main(["suite", str(tmp_path / "s.toml"), "--histories", str(histories)]) == 0
    (run_dir,) = (histories / "zone-outage").glob("2*")
    assert sorted(set(json.loads((run_dir / "test.json").read_text())["zones"].values())) == [
        "a", "b", "c"]
    assert '"start-zone"' in (run_dir / "history.jsonl").read_text()


@pytest.mark.parametrize("text", ["[[test]]\nname = 'a'\nbogus = 1\n",
                                  "[[test]]\nname = 'a'\n[[test]]\nname = 'a'\n",
                                  "[defaults]\nnodes = 3\n", "[[test]]\nnodes = 3\n",
                                  "[[test]]\nname = 'a'\nnodes = 'many'\n", "not toml ["])
def test_bad_suites_are_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(SuiteError, match=r"s\.toml"):
        load_suite(tmp_path / "s.toml", parse_run)


@pytest.mark.parametrize(("entry", "message"), [
    ("known-unsafe = true", "a known-unsafe test must name the anomaly it must produce: "
                            "expect-anomaly = one of never-succeeded, nonlinearizable, "),
    ('expect-anomaly = "lost"', "expect-anomaly needs known-unsafe = true"),
    ('known-unsafe = true\nexpect-anomaly = "slow"',
     "expect-anomaly = 'slow' is not an anomaly kind (one of never-succeeded, "),
    ('known-unsafe = "yes"\nexpect-anomaly = "lost"', "known-unsafe must be true or false"),
])
def test_a_canary_must_name_a_known_anomaly(tmp_path: Path, entry: str, message: str) -> None:
    (tmp_path / "s.toml").write_text(f"[[test]]\nname = 'c'\n{entry}\n")
    with pytest.raises(SuiteError, match="test 1 \\(c\\): " + re.escape(message)):
        load_suite(tmp_path / "s.toml", parse_run)


def test_the_shipped_nightly_suite_is_valid() -> None:
    tests = load_suite(ROOT / "suites" / "nightly.toml", parse_run)
    assert len(tests) >= 4
    assert {t.expect_anomaly for t in tests if t.known_unsafe} == {
        "lost", "stale-read", "superseded-sibling"}


def record(name: str, code: int, expect: str | None = None,
           found: str | None = None) -> RunRecord:
    """A run of test ``name`` that exited ``code`` (no results when it did not finish), in
    which the lost-writes checker found ``found`` anomalies."""
    counts = {found: 3} if found else {}
    verdict = {0: True, 1: False, 2: "unknown"}.get(code)
    results = None if verdict is None else {"valid": verdict, "checkers": {"lost-writes": {
        "valid": False if found else verdict, "anomaly_counts": counts}}}
    return RunRecord(name, Path(name), results, expect, code)


@pytest.mark.parametrize(("safe", "canary", "expected"), [
    ((0, None), (1, "lost"), 0),        # guarantee held, canary caught
    ((1, "lost"), (1, "lost"), 1),      # a guarantee broke
    ((0, None), (0, None), 1),          # the canary went quiet
    ((0, None), (1, "unexpected"), 1),  # the canary was caught for another reason
    ((2, None), (1, "lost"), 2),        # undecided
    ((255, None), (0, None), 255),      # could not run (worse than anything checkers said)
    ((0, None), (130, None), 130),
])
def test_suite_exit_code(safe: tuple[int, str | None], canary: tuple[int, str | None],
                         expected: int) -> None:
    assert suite_exit([record("safe", safe[0], None, safe[1]),
                       record("canary", canary[0], "lost", canary[1])]) == expected


def test_a_canary_whose_store_crashed_fails_the_suite() -> None:
    crashed = dataclasses.replace(record("canary", 1, "lost", "lost"), crashed=("n2",))
    assert suite_exit([crashed]) == 1


def test_suite_runs_each_test_and_writes_junit(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s.toml").write_text(SUITE)
    seen = []

    def fake_run(args: argparse.Namespace, out: Any, err: Any,
                 expect_anomaly: str | None = None) -> tuple[int, list[RunRecord]]:
        seen.append((args.name, args.versioning, args.histories, expect_anomaly))
        results = {"valid": True, "checkers": {"stats": {"valid": True}}}
        return 0, [RunRecord(args.name, tmp_path, results, expect_anomaly)]

    monkeypatch.setattr(run, "run_tests", fake_run)
    junit = tmp_path / "junit.xml"
    code = main(["suite", str(tmp_path / "s.toml"), "--junit", str(junit),
                 "--histories", str(tmp_path / "h")])
    assert code == 1  # the canary was judged valid
    assert seen == [("safe", "vclock", tmp_path / "h", None),
                    ("canary", "lww", tmp_path / "h", "lost")]
    names = [c.get("name") for c in ET.parse(junit).getroot().iter("testcase")]
    assert names == ["stats", "canary: lost"]
    seen.clear()
    assert main(["suite", str(tmp_path / "s.toml"), "--only", "safe"]) == 0
    assert [s[0] for s in seen] == ["safe"]
    assert main(["suite", str(tmp_path / "s.toml"), "--only", "nope"]) == 254
