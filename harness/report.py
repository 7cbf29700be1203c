"""A run's ``report.html``: a self-contained summary page made from the run's files alone.

It reads ``test.json`` and ``results.json`` (never the checkers' code) and shows the
configuration, the expected guarantee, the verdict, each checker's verdict, headline figures and
first anomalies, and links to the files. Every value from a history is escaped: a key or value
such as ``<script>`` renders as text.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_COLOURS = {True: "#1a7f37", False: "#cf222e", "unknown": "#9a6700"}
_WORDS = {True: "valid", False: "invalid", "unknown": "unknown"}
_SHOWN_ANOMALIES = 20
_FILES = ("test.json", "history.jsonl", "results.json", "final-state.json")


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` from ``test.json`` and ``results.json``; return its path.

    Raises OSError or ValueError when those files are missing or malformed.
    """
    test = json.loads((run_dir / "test.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    path = run_dir / "report.html"
    path.write_text(render(test, results, _links(run_dir)), encoding="utf-8")
    return path


def _links(run_dir: Path) -> list[str]:
    files = [name for name in _FILES if (run_dir / name).exists()]
    logs = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob("nodes/*/kvstore.log"))
    return files + logs


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value, default=str))


def _verdict(valid: Any) -> str:
    key = valid if valid in (True, False) else "unknown"
    return (f'<span class="verdict" style="background:{_COLOURS[key]}">'
            f"{_WORDS[key]}</span>")


def _table(rows: Iterable[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def render(test: dict[str, Any], results: dict[str, Any], links: list[str]) -> str:
    """The page for one run, as a string."""
    config = ["name", "nodes", "n", "w", "r", "versioning", "workload", "nemesis",
              "nemesis_interval", "time_limit", "rate", "concurrency", "seed"]
    rows = _table((k, test.get(k)) for k in config)
    checkers = []
    for name, check in results.get("checkers", {}).items():
        figures = {k: v for k, v in check.get("figures", {}).items()
                   if not isinstance(v, dict | list)}
        anomalies = check.get("anomalies", [])
        items = "".join(
            f"<li><b>{_e(a.get('kind'))}</b> {_e(a.get('message', ''))} "
            f"<small>ops {_e(a.get('ops'))}</small></li>" for a in anomalies[:_SHOWN_ANOMALIES])
        more = (f"<p>… and {len(anomalies) - _SHOWN_ANOMALIES} more in results.json</p>"
                if len(anomalies) > _SHOWN_ANOMALIES else "")
        error = (f"<p class=error>checker error: {_e(check['error'])}</p>"
                 if "error" in check else "")
        table = _table(figures.items())
        checkers.append(
            f"<section><h3>{_e(name)} {_verdict(check.get('valid'))}</h3>{error}{table}"
            f"{'<ul>' + items + '</ul>' if items else ''}{more}</section>")
    files = "".join(f'<li><a href="{html.escape(link)}">{html.escape(link)}</a></li>'
                    for link in links)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>kvcheck: {_e(test.get('name', 'run'))}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
th, td {{ text-align: left; padding: .15em .8em .15em 0; vertical-align: top; }}
th {{ font-weight: 600; color: #444; }}
.verdict {{ color: white; padding: .1em .5em; border-radius: .3em; font-size: 90%; }}
.error {{ color: #cf222e; }}
section {{ border-top: 1px solid #ddd; margin-top: 1em; }}
</style></head><body>
<h1>{_e(test.get('name', 'run'))} {_verdict(results.get('valid'))}</h1>
<p>Expected guarantee: <b>{_e(test.get('guarantee', '?'))}</b>.
The verdict is about that guarantee; every checker's figures are shown either way.</p>
<h2>Configuration</h2>{rows}
<h2>Checkers</h2>{''.join(checkers)}
<h2>Files</h2><ul>{files}</ul>
</body></html>
"""
