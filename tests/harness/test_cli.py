"""The ``kvcheck`` command line: shared options, ``--concurrency 2n``, exit codes, and output
that a pipe receives unwrapped, with figures written for people."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from report_runs import make_run

from kvcheck.checkers import CheckResult, Verdict
from kvcheck.harness.cli import build_parser, main, run
from kvcheck.harness.cli.options import BY_HAND, FOR_TESTS, Concurrency
from kvcheck.harness.exitcodes import MEANING, Exit, worst
from kvcheck.harness.history import HistoryWriter
from kvcheck.harness.runner import Progress
from kvcheck.harness.spec import TestSpec
from kvcheck.harness.verdicts import notes
from kvcheck.store.config import ClusterConfig
from kvcheck.terminal import count, percent, seconds

WIDE = {**os.environ, "COLUMNS": "1000"}  # argparse's help: no wrapped sentences


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


# --- --concurrency ---------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "workers"), [
    ([], 10), (["--concurrency", "2n"], 10), (["--concurrency", "3n"], 15),
    (["--concurrency", "7"], 7), (["--concurrency", "1n", "--nodes", "3"], 3)])
def test_concurrency_is_a_number_or_so_many_per_node(argv: list[str], workers: int) -> None:
    assert run.specs_from(parse("run", "--nodes", "5", *argv))[0].workers == workers


def test_a_per_node_concurrency_is_recorded_as_the_workers_it_made() -> None:
    spec = run.specs_from(parse("run", "--nodes", "4", "--concurrency", "3n"))[0]
    assert spec.to_json()["concurrency"] == 12


@pytest.mark.parametrize("text", ["two", "2x", "-1", "n", "2 n 2"])
def test_a_malformed_concurrency_is_refused(text: str, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    assert main(["run", "--concurrency", text]) == Exit.USAGE
    assert "Nn for N per node" in capsys.readouterr().err


def test_concurrency_reads_back_as_written() -> None:
    assert [str(Concurrency.parse(t)) for t in ("2n", " 8 ", "0")] == ["2n", "8", "0"]


# --- options shared by run and cluster up ------------------------------------------------------

CLUSTER_OPTIONS = ("--nodes", "--n", "--w", "--r", "--versioning", "--sloppy-quorum",
                   "--no-sloppy-quorum", "--histories")


def _options(*command: str) -> set[str]:
    parser = build_parser()
    for name in command:
        parser = next(a for a in parser._actions
                      if isinstance(a, argparse._SubParsersAction)).choices[name]
    return {s for a in parser._actions for s in a.option_strings}


def test_run_and_cluster_up_take_the_same_cluster_options() -> None:
    assert set(CLUSTER_OPTIONS) <= _options("run") & _options("cluster", "up")


def test_sloppy_quorum_is_a_flag_with_its_no_form_and_defaults_differ_on_purpose() -> None:
    assert parse("run").sloppy_quorum is FOR_TESTS.sloppy_quorum is False
    assert TestSpec().sloppy_quorum is False
    assert parse("cluster", "up").sloppy_quorum is BY_HAND.sloppy_quorum
    assert BY_HAND.sloppy_quorum is ClusterConfig().sloppy_quorum is True
    for command in (["run"], ["cluster", "up"]):
        assert parse(*command, "--sloppy-quorum").sloppy_quorum is True
        assert parse(*command, "--no-sloppy-quorum").sloppy_quorum is False


def _help(*command: str) -> str:
    result = subprocess.run([sys.executable, "-m", "kvcheck", *command, "--help"],
                            capture_output=True, text=True, env=WIDE, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def described(help_text: str, invocation: str) -> str:
    """What ``--help`` says of the option shown as ``invocation``, on one line."""
    start = help_text.index(f"\n  {invocation}") + len(invocation) + 3
    end = help_text.find("\n  -", start)
    return " ".join(help_text[start:end if end >= 0 else None].split())


def test_each_help_says_why_its_sloppy_quorum_default_differs() -> None:
    flag = "--sloppy-quorum, --no-sloppy-quorum"
    run_help = described(_help("run"), flag)
    assert "Default: off, unlike the store" in run_help and "no stale reads" in run_help
    up_help = described(_help("cluster", "up"), flag)
    assert "Default: on, as the store runs by default" in up_help
    assert "kvcheck run defaults to off" in up_help


def test_help_lists_every_exit_code_and_concurrency_per_node() -> None:
    top = _help()
    for code, meaning in MEANING.items():
        assert f"{int(code):>3}  {meaning}" in top
    assert "Nn for N per node" in _help("run")


# --- exit codes ------------------------------------------------------------------------------

def test_exit_codes_of_verdicts_signals_and_the_worst_of_several() -> None:
    assert [Exit.of(v) for v in Verdict] == [0, 1, 2]
    assert (Exit.of_signal(signal.SIGINT), Exit.of_signal(signal.SIGTERM)) == (130, 143)
    assert worst([]) is Exit.OK
    assert worst([0, 2, 1]) is Exit.INVALID
    assert worst([1, 255, 2]) is Exit.CRASH
    assert worst([255, 130, 143]) is Exit.INTERRUPTED
    with pytest.raises(ValueError):
        worst([7])


# --- output for people -----------------------------------------------------------------------

def test_a_pipe_gets_long_lines_and_tables_unwrapped(tmp_path: Path) -> None:
    run_dir = tmp_path / ("a-run-with-a-long-name-" + "x" * 100)
    make_run(run_dir)
    result = subprocess.run([sys.executable, "-m", "kvcheck", "check", "--no-write",
                             str(run_dir)], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    assert result.returncode == Exit.INVALID, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"INVALID {run_dir} (341 ops, ")
    (stale,) = [line for line in lines if line.split()[:2] == ["stale-reads", "INVALID"]]
    assert stale.rstrip().endswith("the test declares no-stale-reads (N=3 W=2 R=2)    "
                                   "1 of 87 reads that could have been stale were, over 2 keys")
    assert any(len(line) > 150 and "ops=[" in line and line.endswith("newer version missed)")
               for line in lines)


@pytest.mark.parametrize(("value", "text"), [
    (None, "-"), (0, "0 s"), (0.00042, "0.42 ms"), (0.0042, "4.2 ms"), (0.042, "42 ms"),
    (0.4204, "420 ms"), (0.9996, "1.00 s"), (1.2345, "1.23 s"), (5, "5 s"), (12.34, "12.3 s"),
    (59.96, "1 min 00 s"), (245.2, "4 min 05 s"), (7620.4, "2 h 07 min")])
def test_durations_have_a_sensible_precision(value: float | None, text: str) -> None:
    assert seconds(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (0.757656, "75.8 %"), (1, "100.0 %"), (0, "0.0 %"), (0.99996, "> 99.9 %"),
    (0.00004, "< 0.1 %"), (None, "-")])
def test_shares_are_percentages_that_never_round_to_all_or_nothing(value: float | None,
                                                                   text: str) -> None:
    assert percent(value) == text


def test_counts_group_their_thousands() -> None:
    assert [count(n) for n in (0, 999, 1000, 1234567, None)] == \
        ["0", "999", "1,000", "1,234,567", "-"]


def _check(checker: str, **figures: object) -> CheckResult:
    return CheckResult(checker, Verdict.VALID, figures)


def test_notes_write_figures_as_people_do() -> None:
    stats = _check("stats", calls=123456,
                   availability={"overall": {"availability": 0.757656}})
    assert notes(stats) == "123,456 calls, availability 75.8 %"
    assert notes(_check("linearizable", keys=1200, calls=45678, seconds=2.3456)) == \
        "1,200 keys, 45,678 calls, 2.35 s"
    assert notes(_check("stale-reads", stale_reads=3, reads=10500, guarantee="none")) == \
        "3/10,500 stale; none"
    assert notes(_check("stale-reads", stale_reads=0, reads=10500, superseded_siblings=1200,
                        guarantee="none")) == "0/10,500 stale, 1,200 superseded siblings; none"
    assert notes(_check("lost-writes", lost=0, acknowledged=2500, stale=1)) == \
        "0 lost of 2,500 acknowledged, 1 stale"


def test_the_progress_line_counts_and_times_like_a_person(tmp_path: Path) -> None:
    history = HistoryWriter(tmp_path / "h.jsonl")
    history.counts.update(ok=12345, fail=6, info=0)
    history.close()
    progress = Progress(phase="running", started=100.0, faults=["partition n1"],
                        history=history)
    assert run.progress_line(progress, 142.7) == \
        "running · 42 s · ok 12,345 fail 6 info 0 · faults: partition n1"
    assert run.progress_line(progress, 225.0).startswith("running · 2 min 05 s · ")


def test_kvcheck_check_loads_nothing_of_the_harness_it_does_not_use() -> None:
    """Checking a history starts without the Docker SDK, trio, httpx or networkx."""
    script = ("import sys\nfrom kvcheck.harness.cli import main\n"
              "code = main(['check', '--help'])\n"
              "print(code, sorted(m for m in ('docker', 'trio', 'httpx', 'networkx') "
              "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.splitlines()[-1] == "0 []", result.stdout + result.stderr
