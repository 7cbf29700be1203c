"""``kvcheck suite``: suite files, canaries, the suite's exit code and its JUnit file."""

from __future__ import annotations

import argparse
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
    assert canary.known_unsafe and canary.argv[-3:] == ("--versioning", "lww",
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


@pytest.mark.parametrize("text", ["[[test]]\nname = 'a'\nbogus = 1\n",
                                  "[[test]]\nname = 'a'\n[[test]]\nname = 'a'\n",
                                  "[defaults]\nnodes = 3\n", "[[test]]\nnodes = 3\n",
                                  "[[test]]\nname = 'a'\nnodes = 'many'\n", "not toml ["])
def test_bad_suites_are_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(SuiteError, match=r"s\.toml"):
        load_suite(tmp_path / "s.toml", parse_run)


def test_the_shipped_nightly_suite_is_valid() -> None:
    tests = load_suite(ROOT / "suites" / "nightly.toml", parse_run)
    assert len(tests) >= 4 and any(t.known_unsafe for t in tests)


@pytest.mark.parametrize(("codes", "expected"), [
    ([0, 1], 0),     # guarantee held, canary caught
    ([1, 1], 1),     # a guarantee broke
    ([0, 0], 1),     # the canary went quiet
    ([2, 1], 2),     # undecided
    ([255, 0], 255),  # could not run (worse than anything the checkers said)
    ([0, 130], 130),
])
def test_suite_exit_code(codes: list[int], expected: int) -> None:
    tests = [SuiteTest("safe", ()), SuiteTest("canary", (), known_unsafe=True)]
    assert suite_exit(tests, codes) == expected


def test_suite_runs_each_test_and_writes_junit(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s.toml").write_text(SUITE)
    seen = []

    def fake_run(args: argparse.Namespace, out: Any, err: Any, known_unsafe: bool = False
                 ) -> tuple[int, list[RunRecord]]:
        seen.append((args.name, args.versioning, args.histories, known_unsafe))
        results = {"valid": True, "checkers": {"stats": {"valid": True}}}
        return 0, [RunRecord(args.name, tmp_path, results, known_unsafe)]

    monkeypatch.setattr(run, "run_tests", fake_run)
    junit = tmp_path / "junit.xml"
    code = main(["suite", str(tmp_path / "s.toml"), "--junit", str(junit),
                 "--histories", str(tmp_path / "h")])
    assert code == 1  # the canary was judged valid
    assert seen == [("safe", "vclock", tmp_path / "h", False),
                    ("canary", "lww", tmp_path / "h", True)]
    names = [c.get("name") for c in ET.parse(junit).getroot().iter("testcase")]
    assert names == ["stats", "known-unsafe canary"]
    seen.clear()
    assert main(["suite", str(tmp_path / "s.toml"), "--only", "safe"]) == 0
    assert [s[0] for s in seen] == ["safe"]
    assert main(["suite", str(tmp_path / "s.toml"), "--only", "nope"]) == 254
