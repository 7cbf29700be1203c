"""Waiting on a command the tests run: poll a condition under a deadline, such as the faults
on in a history being written."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(condition: Callable[[], object], process: subprocess.Popen[str],
               limit: float = 240, what: str = "condition not reached") -> None:
    """Poll ``condition`` until it holds, failing with ``what`` after ``limit`` seconds, and
    at once (with the command's output) if ``process`` exits first."""
    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.2)  # polling a condition under a deadline, not synchronising


def faults_on(history: Path) -> set[str]:
    """The faults started and not yet stopped in ``history``, a file a run is writing (none
    before it exists)."""
    on: set[str] = set()
    if not history.exists():
        return on
    for line in history.read_text().splitlines()[1:]:
        try:
            op = json.loads(line)
        except ValueError:  # the line being written
            continue
        if op["process"] == "nemesis" and op["type"] == "info":
            event, _, kind = op["f"].partition("-")
            if event == "start":
                on.add(kind)
            elif event == "stop":
                on.discard(kind)
    return on
