"""``kvcheck serve``: the run index, newest first, and nothing served from outside histories/."""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from report_runs import SCRIPT, make_run

from kvcheck.harness.serve import find_runs, make_server


@pytest.fixture
def histories(tmp_path: Path) -> Path:
    root = tmp_path / "histories"
    old = root / "synthetic" / "20260101T000000"
    new = root / "synthetic" / "20260102T000000"
    make_run(old)
    make_run(new, stale=False)
    os.utime(old / "test.json", (1_700_000_000, 1_700_000_000))
    os.utime(new / "test.json", (1_800_000_000, 1_800_000_000))
    (root / "latest").symlink_to(new.relative_to(root), target_is_directory=True)
    (tmp_path / "secret.txt").write_text("outside")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    return root


@pytest.fixture
def get(histories: Path) -> Iterator[object]:
    server = make_server(histories, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def request(path: str) -> tuple[int, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("GET", path)  # sent as is: no client-side normalisation
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        conn.close()
        return response.status, response.getheader("Content-Type") or "", body

    yield request
    server.shutdown()
    server.server_close()


def test_runs_are_listed_newest_first_without_latest(histories: Path) -> None:
    runs = find_runs(histories)
    assert [r["path"] for r in runs] == ["synthetic/20260102T000000",
                                         "synthetic/20260101T000000"]
    assert [r["valid"] for r in runs] == [False, False]
    assert runs[0]["ops"] == 339 and runs[1]["ops"] == 341
    assert runs[0]["nemesis"] == "partition" and runs[0]["report"]


def test_index_links_each_report_and_its_files(get: object) -> None:
    status, kind, body = get("/")
    assert status == 200 and kind.startswith("text/html")
    assert body.index("20260102T000000/report.html") < body.index("20260101T000000/report.html")
    assert 'href="synthetic/20260101T000000/"' in body and "invalid" in body


def test_reports_and_files_are_served(get: object) -> None:
    status, kind, body = get("/synthetic/20260101T000000/report.html")
    assert status == 200 and kind.startswith("text/html") and "kv-data" in body
    status, kind, body = get("/synthetic/20260101T000000/history.jsonl")
    assert status == 200 and kind.startswith("text/plain") and SCRIPT in body
    status, _, _ = get("/latest/test.json")
    assert status == 200


@pytest.mark.parametrize("path", ["/../secret.txt", "/%2e%2e/secret.txt", "/escape",
                                  "/synthetic/../../secret.txt", "/..%2fsecret.txt"])
def test_nothing_outside_histories_is_served(get: object, path: str) -> None:
    status, _, body = get(path)
    assert status == 404 and "outside" not in body
