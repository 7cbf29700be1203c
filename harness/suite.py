"""``kvcheck suite FILE.toml``: named tests run one after another, like Jepsen's test-all.

A suite file::

    [defaults]            # run options every test starts from (optional)
    nodes = 3
    time-limit = 60

    [[test]]
    name = "partition"    # required, unique; the run directory's name
    nemesis = "partition,kill"

    [[test]]
    name = "lww-clock-canary"
    workload = "set"
    versioning = "lww"
    nemesis = "clock"
    known-unsafe = true        # a canary for the checkers: it must be caught,
    expect-anomaly = "lost"    # and for this reason

Keys are ``kvcheck run`` options without the dashes (``time-limit``, ``w``, ``zones``,
``expect``, ...); ``true`` and ``false`` are ``--key`` and ``--no-key`` (``sloppy-quorum =
false``); a list is one comma list (``zone-map = ["n1=a", "n2=b"]``); a table is one ``--key
name=value`` per entry (``db-opt = { reads = "serializable" }``), so a table of two entries or
more for an option given once, which would keep only the last (``zone-map``, ``weights``), is
refused. A test *passes* when its guarantee held (exit 0), or, if ``known-unsafe``, when a
checker found the anomaly it names in ``expect-anomaly`` (:mod:`kvcheck.harness.canary`: a
crash or another anomaly does not count). The suite's exit code is the worst over its tests
(:mod:`kvcheck.harness.exitcodes`): 0 all passed, 1 a guarantee broke or a canary was not
caught for its reason, 2 undecided, 255 a test could not run; an interrupt stops the suite
(130 / 143).
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvcheck.checkers import ANOMALY_KINDS
from kvcheck.harness.exitcodes import Exit, worst
from kvcheck.harness.junit import RunRecord

_OWN_KEYS = {"name", "known-unsafe", "expect-anomaly"}


class SuiteError(ValueError):
    """A suite file that cannot be read or names an unknown option."""


@dataclass(frozen=True, slots=True)
class SuiteTest:
    """One entry: its name, its ``kvcheck run`` arguments, and, for a known-unsafe test, the
    anomaly it must produce."""

    name: str
    argv: tuple[str, ...]
    expect_anomaly: str | None = None

    @property
    def known_unsafe(self) -> bool:
        return self.expect_anomaly is not None


def _argv(options: Mapping[str, Any], where: str) -> list[str]:
    argv: list[str] = []
    for key, value in options.items():
        if isinstance(value, bool):
            argv.append(f"--{key}" if value else f"--no-{key}")
        elif isinstance(value, int | float | str):
            argv += [f"--{key}", str(value)]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            argv += [f"--{key}", ",".join(value)]
        elif isinstance(value, dict) and all(isinstance(v, int | float | str | bool)
                                             for v in value.values()):
            for name, setting in value.items():  # db-opt = { reads = "serializable" }
                text = str(setting).lower() if isinstance(setting, bool) else str(setting)
                argv += [f"--{key}", f"{name}={text}"]
        else:
            raise SuiteError(f"{where}: {key} = {value!r} is not an option value")
    return argv


def load_suite(path: Path, parse_run: Callable[[Sequence[str]], argparse.Namespace]
               ) -> list[SuiteTest]:
    """Read a suite file; check each test's options with ``parse_run`` (a ``run`` parser).

    Raises SuiteError naming the file and the test when the file is unreadable, not TOML, has
    no tests, repeats a name, has options ``kvcheck run`` rejects, or a table for an option
    given once (module docstring).
    """
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SuiteError(f"{path}: {exc}") from None
    defaults = doc.get("defaults", {})
    entries = doc.get("test", [])
    if not isinstance(entries, list) or not entries or not isinstance(defaults, dict):
        raise SuiteError(f"{path}: expected [defaults] and at least one [[test]]")
    tests, seen = [], set()
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"{path}: test {i + 1} ({name})"
        if not isinstance(name, str) or not name or name in seen:
            raise SuiteError(f"{where}: every test needs a unique name")
        seen.add(name)
        options = {**defaults, **{k: v for k, v in entry.items() if k not in _OWN_KEYS}}
        argv = ["--name", name, *_argv(options, where)]
        try:
            _check_tables(options, parse_run(argv), where)
        except SystemExit:
            raise SuiteError(f"{where}: invalid options {' '.join(argv)}") from None
        tests.append(SuiteTest(name, tuple(argv), _expected_anomaly(entry, where)))
    return tests


def _check_tables(options: Mapping[str, Any], args: argparse.Namespace, where: str) -> None:
    """Raise SuiteError for a table whose option, parsed into ``args``, kept fewer entries than
    it has: an option given once, which the last ``--key name=value`` overrode."""
    for key, value in options.items():
        kept = getattr(args, key.replace("-", "_"), None)
        if isinstance(value, dict) and isinstance(kept, list | tuple) and len(kept) < len(value):
            listed = json.dumps([f"{name}={setting}" for name, setting in value.items()])
            raise SuiteError(f"{where}: --{key} is given once, so a table would keep only its "
                             f"last entry: write it as a list, {key} = {listed}")


def _expected_anomaly(entry: Mapping[str, Any], where: str) -> str | None:
    """The anomaly a known-unsafe test must produce; None for any other test."""
    unsafe, anomaly = entry.get("known-unsafe", False), entry.get("expect-anomaly")
    kinds = ", ".join(ANOMALY_KINDS)
    if not isinstance(unsafe, bool):
        raise SuiteError(f"{where}: known-unsafe must be true or false")
    if unsafe and anomaly is None:
        raise SuiteError(f"{where}: a known-unsafe test must name the anomaly it must produce: "
                         f"expect-anomaly = one of {kinds}")
    if anomaly is not None and not unsafe:
        raise SuiteError(f"{where}: expect-anomaly needs known-unsafe = true (only a canary "
                         "expects an anomaly)")
    if anomaly is not None and anomaly not in ANOMALY_KINDS:
        raise SuiteError(f"{where}: expect-anomaly = {anomaly!r} is not an anomaly kind "
                         f"(one of {kinds})")
    return anomaly


def passed(record: RunRecord) -> bool:
    """Whether the test of ``record`` passed: its guarantee held or, a canary, it was caught
    for its reason."""
    outcome = record.canary
    return record.exit_code == Exit.VALID if outcome is None else outcome.caught


def suite_exit(records: Sequence[RunRecord]) -> Exit:
    """The suite's exit code from its tests' runs (module docstring): a run that passed counts
    as valid, one that did not finish or was undecided keeps its code, any other as invalid;
    the worst code wins."""
    def code(record: RunRecord) -> int:
        if passed(record):
            return Exit.VALID
        if record.results is None or record.exit_code == Exit.UNKNOWN:
            return record.exit_code
        return Exit.INVALID
    return worst(code(r) for r in records)
