"""Waiting on a command the tests run: poll a condition under a deadline."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], process: subprocess.Popen[str],
               limit: float = 240, what: str = "condition not reached") -> None:
    """Poll ``condition`` until it holds, failing with ``what`` after ``limit`` seconds, and
    at once (with the command's output) if ``process`` exits first."""
    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.2)  # polling a condition under a deadline, not synchronising
