"""``kvcheck serve``: a browser for past runs and matrices, over HTTP, read-only.

``/`` lists every run directory under the histories root (one holding a ``test.json``, at any
depth: a matrix's cell runs, ``matrices/<timestamp>/runs/<cell>/<stamp>/``, too), newest first,
with its verdict as a colour, op count and nemesis, linking its report and files; then every
matrix (a directory holding a ``matrix.json`` of format ``kvcheck-matrix``), newest first, with
its cell and run counts and worst verdict, linking its ``matrix.html`` and files. The search
skips ``latest`` (the links to the newest run or matrix, which would list it twice) and never
follows a symbolic link to a directory. Every other path is a file or directory listing under
the root: a path that resolves (symbolic links followed) outside the root is answered 404, so
``..`` and links out of ``histories/`` reveal nothing.
"""

from __future__ import annotations

import html
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import quote, unquote, urlsplit

from kvcheck.checkers import Verdict, combine
from kvcheck.harness.matrix import FORMAT as MATRIX_FORMAT
from kvcheck.harness.report_assets import VERDICT_STYLE


class RunSummary(TypedDict):
    """One run as the index lists it."""

    path: str  # relative to the served root, with ``/``
    name: str
    started: datetime  # when test.json was written
    valid: bool | Literal["unknown"] | None  # None: no readable results.json
    ops: int | None
    nemesis: str
    report: bool  # whether report.html exists


class MatrixSummary(TypedDict):
    """One matrix as the index lists it."""

    path: str  # relative to the served root, with ``/``
    created: datetime  # as matrix.json says, else when it was written
    cells: int
    runs: int
    valid: bool | Literal["unknown"] | None  # the worst of its runs' (a crash: unknown); None: none
    page: bool  # whether matrix.html exists


def _directories(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """Each directory below ``root`` with the names of its files, never through ``latest`` or
    a symbolic link to a directory, nor below a run directory (one holding ``test.json``)."""
    for where, dirs, files in os.walk(root):
        dirs[:] = [] if "test.json" in files else [
            d for d in sorted(dirs) if d != "latest" and not os.path.islink(os.path.join(where, d))]
        if Path(where) != root:
            yield Path(where), files


def _holding(root: Path, name: str) -> Iterator[Path]:
    """Each directory below ``root`` (as :func:`_directories` finds them) holding a file
    ``name`` that is not a symbolic link."""
    for where, files in _directories(root):
        if name in files and not (where / name).is_symlink():
            yield where


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def find_runs(root: Path) -> list[RunSummary]:
    """Every run under ``root`` (a directory holding ``test.json``, at any depth: a matrix's
    cell runs too), newest first; nothing through ``latest`` or a symbolic link."""
    runs: list[RunSummary] = []
    for run in _holding(root, "test.json"):
        test = run / "test.json"
        config = _read_json(test)
        config = config if isinstance(config, dict) else {}
        results = _read_json(run / "results.json")
        results = results if isinstance(results, dict) else {}
        try:
            valid: bool | Literal["unknown"] | None = Verdict.from_json(
                results.get("valid")).to_json()
        except ValueError:
            valid = None
        nemesis = config.get("nemesis")
        runs.append({
            "path": run.relative_to(root).as_posix(),
            "name": str(config.get("name", run.parent.name)),
            "started": datetime.fromtimestamp(test.stat().st_mtime, UTC),
            "valid": valid,
            "ops": (results.get("meta") or {}).get("ops"),
            "nemesis": ",".join(map(str, nemesis)) if isinstance(nemesis, list)
            else str(nemesis or "none"),
            "report": (run / "report.html").exists()})
    runs.sort(key=lambda r: (r["started"], r["path"]), reverse=True)
    return runs


def find_matrices(root: Path) -> list[MatrixSummary]:
    """Every matrix under ``root`` (a directory holding a ``matrix.json`` of format
    ``kvcheck-matrix``), newest first; nothing through ``latest`` or a symbolic link."""
    matrices: list[MatrixSummary] = []
    for where in _holding(root, "matrix.json"):
        matrix = _read_json(where / "matrix.json")
        if not isinstance(matrix, dict) or matrix.get("format") != MATRIX_FORMAT:
            continue
        cells = [c for c in _list(matrix.get("cells")) if isinstance(c, dict)]
        runs = [r for c in cells for r in _list(c.get("runs")) if isinstance(r, dict)]
        verdicts = [Verdict.UNKNOWN if r.get("valid") is None else Verdict.read(r.get("valid"))
                    for r in runs]
        matrices.append({
            "path": where.relative_to(root).as_posix(),
            "created": _created(matrix.get("created"), where / "matrix.json"),
            "cells": len(cells), "runs": len(runs),
            "valid": combine(verdicts).to_json() if verdicts else None,
            "page": (where / "matrix.html").exists()})
    matrices.sort(key=lambda m: (m["created"], m["path"]), reverse=True)
    return matrices


def _created(created: Any, path: Path) -> datetime:
    """``created`` of a matrix.json (``2026-12-02T17:30:00Z``), else when ``path`` was written."""
    try:
        when = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _verdict(valid: bool | Literal["unknown"] | None, none: str) -> str:
    verdict = Verdict.read(valid)
    return (f'<span class="verdict {verdict.value}">'
            f"{verdict.value if valid is not None else none}</span>")


def index_page(root: Path) -> str:
    """The HTML lists of runs and of matrices under ``root``; every value escaped."""
    runs, matrices = find_runs(root), find_matrices(root)
    rows = []
    for r in runs:
        href = quote(r["path"]) + "/"
        report = (f'<a href="{href}report.html">report</a>' if r["report"] else "no report")
        rows.append(
            f"<tr><td>{_verdict(r['valid'], 'no results')}</td>"
            f"<td>{html.escape(r['name'])}</td>"
            f"<td>{r['started']:%Y-%m-%d %H:%M:%S} UTC</td>"
            f"<td>{html.escape(str(r['ops'] if r['ops'] is not None else '-'))}</td>"
            f"<td>{html.escape(r['nemesis'])}</td>"
            f'<td>{report} · <a href="{href}">files</a></td></tr>')
    body = "".join(rows) or '<tr><td colspan=6>No runs yet.</td></tr>'
    rows = []
    for m in matrices:
        href = quote(m["path"]) + "/"
        page = (f'<a href="{href}matrix.html">matrix</a>' if m["page"] else "no page")
        rows.append(
            f"<tr><td>{_verdict(m['valid'], 'no runs')}</td>"
            f"<td>{html.escape(m['path'])}</td>"
            f"<td>{m['created']:%Y-%m-%d %H:%M:%S} UTC</td>"
            f"<td>{m['cells']}</td><td>{m['runs']}</td>"
            f'<td>{page} · <a href="{href}">files</a></td></tr>')
    matrix_body = "".join(rows) or '<tr><td colspan=6>No matrices yet.</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kvcheck runs</title>
<style>body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; }}
td, th {{ text-align: left; padding: .2em 1em .2em 0; }}{VERDICT_STYLE}</style>
</head><body><h1>kvcheck runs</h1>
<p>{len(runs)} runs · <a href="#matrices">{len(matrices)} matrices</a></p>
<table id=runs><tr><th>verdict</th><th>name</th><th>started</th><th>ops</th><th>nemesis</th>
<th></th></tr>{body}</table>
<h2 id=matrices>Matrices</h2>
<table><tr><th>worst verdict</th><th>matrix</th><th>created</th><th>cells</th><th>runs</th>
<th></th></tr>{matrix_body}</table></body></html>
"""


_CONTENT_TYPES = {**SimpleHTTPRequestHandler.extensions_map,
                  ".jsonl": "text/plain; charset=utf-8", ".log": "text/plain; charset=utf-8",
                  ".json": "application/json", ".html": "text/html; charset=utf-8"}


class _Handler(SimpleHTTPRequestHandler):
    """Files under ``directory``, and the index of runs and matrices at ``/``."""

    extensions_map = _CONTENT_TYPES

    def send_head(self) -> Any:
        root = Path(self.directory).resolve()
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            page = index_page(root).encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            return io.BytesIO(page)
        target = Path(os.path.realpath(self.translate_path(self.path)))
        if ".." in path.split("/") or not target.is_relative_to(root):
            self.send_error(HTTPStatus.NOT_FOUND, "not under the histories directory")
            return None
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        pass


def make_server(root: Path, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """A server for ``root`` bound to ``host:port`` (port 0 picks a free one); not yet serving.

    Raises OSError when the address cannot be bound.
    """
    handler = partial(_Handler, directory=str(Path(root).resolve()))
    return ThreadingHTTPServer((host, port), handler)
