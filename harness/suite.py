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
    known-unsafe = true   # must be found invalid: a canary for the checkers

Keys are ``kvcheck run`` options without the dashes (``time-limit``, ``w``, ``expect``, ...);
``true`` and ``false`` are ``--key`` and ``--no-key`` (``sloppy-quorum = false``); a table is
one ``--key name=value`` per entry (``db-opt = { reads = "serializable" }``). A test
*passes* when its guarantee held (exit 0), or, if ``known-unsafe``, when it was found invalid
(exit 1). The suite's exit code is the worst over its tests (:mod:`kvcheck.harness.exitcodes`):
0 all passed, 1 a guarantee broke or a canary went quiet, 2 undecided, 255 a test could not
run; an interrupt stops the suite (130 / 143).
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvcheck.harness.exitcodes import Exit, worst

_OWN_KEYS = {"name", "known-unsafe"}


class SuiteError(ValueError):
    """A suite file that cannot be read or names an unknown option."""


@dataclass(frozen=True, slots=True)
class SuiteTest:
    """One entry: its name, its ``kvcheck run`` arguments, and whether it must fail."""

    name: str
    argv: tuple[str, ...]
    known_unsafe: bool = False


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
    no tests, repeats a name, or has options ``kvcheck run`` rejects.
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
            parse_run(argv)
        except SystemExit:
            raise SuiteError(f"{where}: invalid options {' '.join(argv)}") from None
        tests.append(SuiteTest(name, tuple(argv), bool(entry.get("known-unsafe", False))))
    return tests


def passed(test: SuiteTest, code: int) -> bool:
    """Whether ``test`` passed, given its ``kvcheck run`` exit code."""
    return code == (Exit.INVALID if test.known_unsafe else Exit.VALID)


def suite_exit(tests: Sequence[SuiteTest], codes: Sequence[int]) -> Exit:
    """The suite's exit code from its tests' run exit codes (module docstring): a test that
    passed counts as valid, one that decided otherwise as invalid, and the worst code wins."""
    return worst(Exit.VALID if passed(t, c) else Exit.INVALID if c in (Exit.VALID, Exit.INVALID)
                 else c for t, c in zip(tests, codes, strict=True))
