"""The run report renders every value from a history as text."""

from __future__ import annotations

import json
from pathlib import Path

from harness.report import write_report

HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>']


def test_hostile_keys_values_and_errors_render_literally(tmp_path: Path) -> None:
    (tmp_path / "test.json").write_text(json.dumps({"name": HOSTILE[0], "guarantee": HOSTILE[1]}))
    (tmp_path / "results.json").write_text(json.dumps({"valid": False, "checkers": {
        HOSTILE[0]: {"valid": False, "figures": {HOSTILE[1]: HOSTILE[0]},
                     "error": HOSTILE[1],
                     "anomalies": [{"kind": HOSTILE[0], "message": HOSTILE[1], "ops": [1]}]}}}))
    page = write_report(tmp_path).read_text()
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'href="test.json"' in page and "invalid" in page
