"""``kvcheck serve``: a browser for past runs, over HTTP, read-only.

``/`` lists every run directory under the histories root (one holding a ``test.json``), newest
first, with its verdict as a colour, op count and nemesis, linking its report and files. Every
other path is a file or directory listing under the root: a path that resolves (symbolic links
followed) outside the root is answered 404, so ``..`` and links out of ``histories/`` reveal
nothing.
"""

from __future__ import annotations

import html
import io
import json
import os
from datetime import UTC, datetime
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import quote, unquote, urlsplit

from kvcheck.checkers import Verdict
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


def find_runs(root: Path) -> list[RunSummary]:
    """Every run under ``root`` (``<name>/<timestamp>/`` or ``<name>/``), newest first.

    ``histories/latest`` is skipped.
    """
    runs: list[RunSummary] = []
    for test in [*root.glob("*/test.json"), *root.glob("*/*/test.json")]:
        run = test.parent
        if "latest" in run.relative_to(root).parts:
            continue
        try:
            config = json.loads(test.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        try:
            results = json.loads((run / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            results = {}
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


def index_page(root: Path) -> str:
    """The HTML list of runs under ``root``; every value escaped."""
    rows = []
    for r in find_runs(root):
        href = quote(r["path"]) + "/"
        verdict = Verdict.read(r["valid"])
        word = verdict.value if r["valid"] is not None else "no results"
        report = (f'<a href="{href}report.html">report</a>' if r["report"] else "no report")
        rows.append(
            f'<tr><td><span class="verdict {verdict.value}">{word}</span></td>'
            f"<td>{html.escape(r['name'])}</td>"
            f"<td>{r['started']:%Y-%m-%d %H:%M:%S} UTC</td>"
            f"<td>{html.escape(str(r['ops'] if r['ops'] is not None else '-'))}</td>"
            f"<td>{html.escape(r['nemesis'])}</td>"
            f'<td>{report} · <a href="{href}">files</a></td></tr>')
    body = "".join(rows) or '<tr><td colspan=6>No runs yet.</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kvcheck runs</title>
<style>body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; }}
td, th {{ text-align: left; padding: .2em 1em .2em 0; }}{VERDICT_STYLE}</style>
</head><body><h1>kvcheck runs</h1>
<table><tr><th>verdict</th><th>name</th><th>started</th><th>ops</th><th>nemesis</th>
<th></th></tr>{body}</table></body></html>
"""


_CONTENT_TYPES = {**SimpleHTTPRequestHandler.extensions_map,
                  ".jsonl": "text/plain; charset=utf-8", ".log": "text/plain; charset=utf-8",
                  ".json": "application/json", ".html": "text/html; charset=utf-8"}


class _Handler(SimpleHTTPRequestHandler):
    """Files under ``directory``, and the run index at ``/``."""

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
