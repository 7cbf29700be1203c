"""``kvcheck serve``: the run and matrix indexes, newest first, and nothing served from outside
histories/."""

from __future__ import annotations

import http.client
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from report_runs import SCRIPT, make_run

from kvcheck.harness.matrix_page import write_page
from kvcheck.harness.serve import find_matrices, find_runs, make_server

CELL = "n3-w1-r1-strict-vclock-partition-register"


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
def matrix(histories: Path) -> Path:
    """A matrix with one cell run (and ``latest`` links to both), and a run reachable only
    through a symbolic link out of the root."""
    where = histories / "matrices" / "20261202T173000"
    run = where / "runs" / CELL / "20261202T173001"
    make_run(run)
    test = json.loads((run / "test.json").read_text())
    (run / "test.json").write_text(json.dumps({**test, "name": CELL}))
    os.utime(run / "test.json", (1_750_000_000, 1_750_000_000))
    (where / "runs" / "latest").symlink_to(run.relative_to(where / "runs"))
    (histories / "matrices" / "latest").symlink_to(where.name)
    cell = {"id": CELL, "n": 3, "w": 1, "r": 1, "nemesis": "partition", "pbs": None,
            "runs": [{"seed": 1, "path": f"runs/{CELL}/20261202T173001", "valid": False},
                     {"seed": 2, "path": None, "valid": None}],
            "verdicts": {"valid": 0, "invalid": 1, "unknown": 0}, "figures": {}}
    matrix = {"format": "kvcheck-matrix", "version": 1, "created": "2026-12-02T17:30:00Z",
              "cells": [cell], "axes": {"nemesis": ["partition"]}}
    (where / "matrix.json").write_text(json.dumps(matrix))
    write_page(where, matrix)
    (histories / "not-a-matrix").mkdir()
    (histories / "not-a-matrix" / "matrix.json").write_text('{"format": "other"}')
    elsewhere = histories.parent / "elsewhere"
    make_run(elsewhere / "hidden" / "20260103T000000")
    (histories / "linked").symlink_to(elsewhere, target_is_directory=True)
    return where


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


def test_cell_runs_of_matrices_are_listed_once_and_links_out_of_root_not_followed(
        histories: Path, matrix: Path) -> None:
    runs = find_runs(histories)
    assert [(r["path"], r["name"]) for r in runs] == [
        ("synthetic/20260102T000000", "synthetic"),
        (f"matrices/20261202T173000/runs/{CELL}/20261202T173001", CELL),
        ("synthetic/20260101T000000", "synthetic")]


def test_matrices_are_listed_once_with_their_counts_and_worst_verdict(
        histories: Path, matrix: Path) -> None:
    assert find_matrices(histories) == [{
        "path": "matrices/20261202T173000",
        "created": datetime(2026, 12, 2, 17, 30, tzinfo=UTC),
        "cells": 1, "runs": 2, "valid": False, "page": True}]


def test_index_lists_runs_and_matrices_and_serves_the_matrix_page(
        get: object, matrix: Path) -> None:
    status, _, body = get("/")
    assert status == 200
    assert body.count(f"{CELL}/20261202T173001/report.html") == 1
    assert body.count('href="matrices/20261202T173000/matrix.html"') == 1
    assert "hidden" not in body and "not-a-matrix" not in body and "latest" not in body
    assert "2026-12-02 17:30:00 UTC" in body
    status, kind, page = get("/matrices/20261202T173000/matrix.html")
    assert status == 200 and kind.startswith("text/html") and CELL in page
    status, _, report = get(f"/matrices/20261202T173000/runs/{CELL}/20261202T173001/report.html")
    assert status == 200 and "kv-data" in report
    status, _, _ = get("/linked/hidden/20260103T000000/test.json")
    assert status == 404
