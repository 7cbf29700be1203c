"""A real short ``kvcheck run --junit``: its report draws in chromium, its JUnit names checkers."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from headless import load, require_chromium

pytestmark = pytest.mark.integration


def test_a_real_run_has_a_working_report_and_junit(tmp_path: Path) -> None:
    require_chromium()
    junit = tmp_path / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "kvcheck", "run", "--nodes", "3", "--rate", "40", "--time-limit",
         "10", "--nemesis", "partition,kill", "--nemesis-interval", "3", "--recovery-time", "3",
         "--histories", str(tmp_path / "histories"), "--junit", str(junit)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1, 2), done.stderr
    report = next((tmp_path / "histories").glob("kvcheck/*/report.html"))
    page = load(report.as_uri(), tmp_path / "profile", screenshot=tmp_path / "real.png")
    print(f"screenshot: {tmp_path / 'real.png'}")
    assert page.console == []
    drawn = re.search(r'data-rendered="([^"]*)"', page.dom)
    assert drawn and {"timeline", "latency", "throughput"} <= set(drawn.group(1).split())
    names = {c.get("name") for c in ET.parse(junit).getroot().iter("testcase")}
    assert {"stats", "stale-reads", "convergence"} <= names
