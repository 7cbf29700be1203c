"""A run's ``report.html``: one self-contained page made from the run directory's files alone.

The text parts (configuration, verdicts, figures, anomalies in words, convergence, links) are
rendered here, escaped; the charts (fault lanes, timeline, latency, throughput, each anomaly's
key timeline) are drawn in the browser by the inline script of
:mod:`kvcheck.harness.report_assets` from the data of
:func:`kvcheck.harness.report_data.load_run`, embedded as JSON in a
``<script type="application/json">`` block with ``<``, ``>`` and ``&`` written as ``\\u``
escapes. The script only ever puts history text into the page with ``textContent``; a
Content-Security-Policy forbids every fetch. So a key or value such as
``<script>alert(1)</script>`` renders literally and runs nothing.

A test with zones (two or more in ``test.json``'s ``zones``) has its nodes listed by zone, in
the configuration and the convergence table, and the stats checker's availability by zone over
the test and in each fault window; a test without them shows none of this.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvcheck.checkers import CheckResult, Verdict
from kvcheck.harness.report_assets import SCRIPT, STYLE
from kvcheck.harness.report_data import load_run, share_text, text
from kvcheck.harness.verdicts import notes

_CONFIG = ("db", "db_options", "nodes", "n", "w", "r", "sloppy_quorum", "versioning",
           "workload", "nemesis", "nemesis_mode", "nemesis_interval", "seed", "time_limit",
           "rate", "concurrency", "recovery_time", "backend", "hosts")
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'")


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` from the run's files; return its path.

    A pure function of ``test.json``, ``results.json``, ``history.jsonl``,
    ``final-state.json`` and the names of the node logs. Raises OSError or ValueError when
    ``test.json`` or ``results.json`` is missing or malformed (nothing is written then).
    """
    page = render(load_run(Path(run_dir)))
    path = Path(run_dir) / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def embed_json(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script>`` element (no ``<``, ``>`` or ``&``)."""
    return (json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
            .replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _e(value: Any) -> str:
    return html.escape(text(value))


def _verdict(valid: Any) -> str:
    word = Verdict.read(valid).value
    return f'<span class="verdict {word}">{word}</span>'


def _config(test: Mapping[str, Any], zones: Mapping[str, list[str]],
            weights: Mapping[str, int]) -> str:
    shown = {"nodes": lambda: _nodes(test, zones, weights), "hosts": lambda: _hosts(test)}
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{shown[k]() if k in shown else _e(test[k])}"
                   "</td></tr>" for k in _CONFIG if test.get(k) not in (None, {}))
    return f"<table class=config>{rows}</table>"


def _nodes(test: Mapping[str, Any], zones: Mapping[str, list[str]],
           weights: Mapping[str, int]) -> str:
    """The test's nodes: one line per zone when it has zones (a node only ``zones`` names is
    the spare), each node with its weight when not all weigh 1; else as ``test.json`` has them."""
    nodes = test["nodes"]
    names = nodes if isinstance(nodes, list) and all(isinstance(n, str) for n in nodes) else None
    if not zones and not (weights and names):
        return _e(nodes)

    def node(n: str) -> str:
        weight = f" (weight {weights.get(n, 1)})" if weights else ""
        return f"{_e(n)}{weight}{'' if names is None or n in names else ' (spare)'}"

    if not zones:
        return ", ".join(node(n) for n in names or ())
    groups = [(f"zone {z}", ns) for z, ns in zones.items()]
    zoned = {n for ns in zones.values() for n in ns}
    if rest := [n for n in names or () if n not in zoned]:
        groups.append(("no zone", rest))
    return "<br>".join(f"{_e(label)}: {', '.join(node(n) for n in ns)}" for label, ns in groups)


def _hosts(test: Mapping[str, Any]) -> str:
    """Each node's host (``--backend ssh``), ``n1: host`` a line."""
    hosts = test["hosts"]
    if not isinstance(hosts, Mapping):
        return _e(hosts)
    return "<br>".join(f"{_e(node)}: {_e(host)}" for node, host in hosts.items())


def _headline(name: str, check: Mapping[str, Any]) -> str:
    figures = check.get("figures")
    try:
        result = CheckResult(str(check.get("checker", name)), Verdict.read(check.get("valid")),
                             figures if isinstance(figures, dict) else {},
                             error=check.get("error"))
        return notes(result)
    except (AttributeError, TypeError, ValueError):
        return ""


def _checkers(results: Mapping[str, Any], test: Mapping[str, Any]) -> str:
    """One row per checker that ran, then one per checker the database could not serve."""
    rows = []
    for name, check in results.get("checkers", {}).items():
        counts = check.get("anomaly_counts") or {}
        summary = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "-"
        error = check.get("error")
        rows.append(f"<tr><th>{_e(name)}</th><td>{_verdict(check.get('valid'))}</td>"
                    f"<td>{_e(check.get('basis') or '-')}</td>"
                    f"<td>{_e(summary)}</td><td>{_e(_headline(name, check))}"
                    f"{f' <span class=error>{_e(error)}</span>' if error else ''}</td></tr>")
    skipped = test.get("skipped_checkers")
    for name, why in (skipped.items() if isinstance(skipped, dict) else ()):
        rows.append(f"<tr><th>{_e(name)}</th><td>not run</td><td>-</td><td>-</td>"
                    f"<td>{_e(why)}</td></tr>")
    head = ("<tr><th>checker</th><th>verdict</th><th>rests on</th><th>anomalies</th>"
            "<th>figures</th></tr>")
    return f"<table class=checkers>{head}{''.join(rows)}</table>"


def _anomalies(data: Mapping[str, Any]) -> str:
    items = data["anomalies"]
    if not items:
        return "<p>No anomalies.</p>"
    parts = []
    for i, a in enumerate(items):
        key = "" if a["key"] is None else f" on key <code>{html.escape(a['key'])}</code>"
        parts.append(
            f'<div class=anomaly><p><b>{html.escape(a["kind"])}</b> '
            f'<small>({html.escape(a["checker"])}){key}, ops {_e(a["ops"][:20])}</small><br>'
            f'{html.escape(a["message"])}</p><div class=keyline data-anomaly="{i}"></div></div>')
    more = data["anomalies_total"] - len(items)
    if more > 0:
        parts.append(f"<p>… and {more} more in <a href=results.json>results.json</a>.</p>")
    return "".join(parts)


def _convergence(conv: Mapping[str, Any], zones: Mapping[str, list[str]]) -> str:
    if not conv["keys"]:
        return "<p>No final state was recorded.</p>"
    nodes, zone_head = _by_zone(conv["nodes"], zones)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in nodes)
    rows = []
    for row in conv["keys"]:
        cells = "".join(f'<td class="cell c{html.escape(row["cells"][n] or "x")}">'
                        f'{html.escape(row["cells"][n])}</td>' for n in nodes)
        reads = (" · <b class=error>final reads disagree</b>"
                 if row["final_reads"] == "disagree" else "")
        rows.append(f"<tr><th>{html.escape(row['key'])}</th>{cells}"
                    f"<td>{_key_convergence(row)}{reads}</td></tr>")
    shown = (f" Showing {len(conv['keys'])} of {conv['total']} keys, diverged first."
             if conv["total"] > len(conv["keys"]) else "")
    return (f"<p>Last of {conv['samples']} samples: each replica's versions as a letter (same "
            "letter, same versions); <code>-</code> lacks the key, <code>?</code> could not be "
            f"asked, blank is not a replica.{shown}</p>"
            f"<table class=convergence>{zone_head}<tr><th>key</th>{head}<th></th></tr>"
            f"{''.join(rows)}</table>")


def _by_zone(nodes: list[str], zones: Mapping[str, list[str]]) -> tuple[list[str], str]:
    """``nodes`` in zone order and a header row naming each zone over its columns (nodes in no
    zone last); ``nodes`` as they are and no row when the test has no zones."""
    if not zones:
        return nodes, ""
    groups = [(f"zone {z}", [n for n in ns if n in nodes]) for z, ns in zones.items()]
    zoned = {n for _, ns in groups for n in ns}
    groups.append(("no zone", [n for n in nodes if n not in zoned]))
    cells = "".join(f"<th colspan={len(ns)}>{_e(label)}</th>" for label, ns in groups if ns)
    return [n for _, ns in groups for n in ns], f"<tr><th></th>{cells}<th></th></tr>"


def _key_convergence(row: Mapping[str, Any]) -> str:
    """The convergence checker's judgement of one key's replicas, in words."""
    state, after = row["replicas"], row["after_ms"]
    if state == "converged":
        return f"agreed {after / 1000:.2f} s after the heal" if after is not None else "agreed"
    if state == "diverged":
        return "<b class=error>diverged</b>"
    if state == "undecided":
        return "undecided: a replica could not be asked"
    return "not judged: no convergence result in results.json"


def _links(links: list[str]) -> str:
    return "".join(f'<li><a href="{html.escape(link)}">{html.escape(link)}</a></li>'
                   for link in links)


def _faults(data: Mapping[str, Any]) -> str:
    """What the fault lanes show, and the stats checker's availability inside and outside them."""
    if not data["windows"]:
        return ""
    figures = data["availability"]
    shares = (" Availability (the share of the test's calls that succeeded, placed by when "
              f"they were invoked): {_e(share_text(figures.get('overall')))} overall, "
              f"{_e(share_text(figures.get('outside_faults')))} outside every fault window; "
              "hover a window for its own (a call invoked while windows overlap counts in each)."
              if figures else "")
    return ("<p class=hint>Faults: one lane per kind, each window a bar from its start to its "
            "stop or the heal, labelled with its targets; the charts shade the same windows in "
            f"their lane's colour.{shares}</p>"
            "<div id=faults class=chart></div>")


def _zone_availability(data: Mapping[str, Any]) -> str:
    """The stats checker's availability by zone over the whole test and in each fault window,
    a zone holding one of the window's targets in bold; nothing for a test without zones."""
    whole = data["zone_availability"]
    if not whole:
        return ""
    rows = [("whole test", "", "", _e(share_text(data["availability"].get("overall"))), whole)]
    rows += [(w["fault"], f"{w['start'] / 1000:.2f} to {w['end'] / 1000:.2f} s",
              w["targets"] + (f" {w['detail']}" if w["detail"] else ""),
              _e(w["availability"] or "-"), w["zones"]) for w in data["windows"]]
    columns: list[str | None] = list(data["zones"])
    if any(z["zone"] is None for *_, zs in rows for z in zs):
        columns.append(None)
    head = "".join(f"<th>{'no zone' if z is None else f'zone {_e(z)}'}</th>" for z in columns)
    body = []
    for label, when, targets, overall, zs in rows:
        by = {z["zone"]: z for z in zs}
        cells = "".join(f"<td{' class=hit' if by[z]['hit'] else ''}>{_e(by[z]['share'])}</td>"
                        if z in by else "<td>-</td>" for z in columns)
        body.append(f"<tr><th>{_e(label)}</th><td>{_e(when)}</td><td>{_e(targets)}</td>"
                    f"<td>{overall}</td>{cells}</tr>")
    return ("<p class=hint>Availability by zone: the calls sent through each zone's nodes "
            "(in bold, a zone holding a target of the window); <i>no zone</i> counts calls "
            "through a node no zone names.</p><table class=zones><tr><th>window</th><th>when"
            f"</th><th>targets</th><th>all calls</th>{head}</tr>{''.join(body)}</table>")


def render(data: Mapping[str, Any]) -> str:
    """The page for one run's data (as :func:`kvcheck.harness.report_data.load_run` returns it)."""
    test, results = data["test"], data["results"]
    name = test.get("name", "run")
    sampled = data["sampled"]
    note = (f"The timeline and the scatter show {sampled['drawn']:,} of {sampled['total']:,} "
            "calls: every failed, indeterminate and anomalous call, and an even sample of the "
            "ok ones. Quantiles and throughput use every call."
            if sampled["drawn"] < sampled["total"] else f"{sampled['total']:,} calls.")
    problems = "".join(f"<p class=error>{_e(p)}</p>" for p in data["problems"])
    script_data = {k: data[k] for k in (
        "duration", "windows", "faults", "calls", "buckets", "anomalies", "sampled")}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kvcheck: {_e(name)}</title>
<style>{STYLE}</style></head><body>
<header><h1>{_e(name)} {_verdict(results.get('valid'))}</h1>
<p>Expected guarantee: <b>{_e(test.get('guarantee') or test.get('expect') or '?')}</b>.
The verdict is about that guarantee; every checker's figures are shown either way.
{_e(results.get('meta', {}).get('ops', 0))} history lines, {data['duration'] / 1000:.1f} s.</p>
{problems}{_config(test, data["zones"], data["weights"])}{_checkers(results, test)}</header>
<section id=timeline-section><h2>Timeline</h2>
<p class=hint>{note} Wheel to zoom, drag to pan, double-click to reset (all charts
follow; the address names the window, e.g. <code>report.html#t=5-10</code>).
Hover an operation or a fault for its details.</p>
{_faults(data)}{_zone_availability(data)}
<div class=legend><span class=ok>ok</span><span class=fail>fail</span>
<span class=info>info (indeterminate)</span></div>
<div id=timeline class=chart></div></section>
<section><h2>Latency</h2><div id=latency class=chart></div></section>
<section><h2>Throughput</h2><div id=throughput class=chart></div></section>
<section id=anomalies><h2>Anomalies</h2>{_anomalies(data)}</section>
<section><h2>Convergence</h2>{_convergence(data["convergence"], data["zones"])}</section>
<section><h2>Files</h2><ul>{_links(data["links"])}</ul></section>
<div id=tip hidden></div>
<script type="application/json" id=kv-data>{embed_json(script_data)}</script>
<script>{SCRIPT}</script>
</body></html>
"""
