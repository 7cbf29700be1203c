"""Headless Debian chromium for the browser tests: load a page, return its DOM and console.

``--dump-dom`` prints the DOM once the page has loaded (the report draws synchronously, before
the load event); ``--enable-logging=stderr`` prints every console message and uncaught error
as an ``INFO:CONSOLE`` line, which :func:`load` returns for the test to assert on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--window-size=1300,2000"]
_CONSOLE = re.compile(r":CONSOLE[^\]]*\] (.*)")


@dataclass(frozen=True)
class Page:
    dom: str
    console: list[str]


def require_chromium() -> None:
    """Skip the calling test when chromium is not installed (scripts/test installs it)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/test installs Debian's package)")


def load(url: str, profile: Path, screenshot: Path | None = None) -> Page:
    """Load ``url`` in a fresh profile; the DOM after load and the console messages.

    With ``screenshot``, a second load writes a PNG of the page there.
    """
    args = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    done = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True,
                          timeout=120, check=True)
    if screenshot is not None:
        subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True,
                       timeout=120, check=True)
    return Page(done.stdout, _CONSOLE.findall(done.stderr))
