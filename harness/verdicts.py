"""Printing verdicts for people: one table of checkers, then the first anomalies of each."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kvcheck.checkers import CheckResult, Results, Verdict
from kvcheck.terminal import count, percent, seconds

STYLE = {Verdict.VALID: "bold green", Verdict.INVALID: "bold red",
         Verdict.UNKNOWN: "bold yellow"}
# The verdict's own word; INVALID in capitals, for emphasis.
WORD = {v: v.value.upper() if v is Verdict.INVALID else v.value for v in Verdict}


def print_results(out: Console, results: Results) -> None:
    """Each checker's verdict, anomaly counts, headline figures and what its verdict rests on
    (:attr:`~kvcheck.checkers.CheckResult.basis`); then up to five anomalies each."""
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    table.add_column("checker")
    table.add_column("verdict")
    table.add_column("anomalies")
    table.add_column("notes")
    table.add_column("rests on")
    for c in results.checks:
        table.add_row(c.checker, f"[{STYLE[c.valid]}]{WORD[c.valid]}[/]",
                      escape(anomaly_summary(c)), escape(notes(c)), escape(c.basis or "-"))
    out.print(table)
    for c in results.checks:
        for a in c.anomalies[:5]:
            key = f" key={a.key!r}" if a.key is not None else ""
            ops = list(a.ops[:20]) + (["..."] if len(a.ops) > 20 else [])
            out.print(f"  [red]{c.checker}: {a.kind}[/]{escape(key)} ops={escape(str(ops))} "
                      f"{escape(a.message)}", highlight=False, soft_wrap=True)
        if len(c.anomalies) > 5:
            out.print(f"  [dim]... {count(len(c.anomalies) - 5)} more {c.checker} anomalies "
                      "in results.json[/]")


def anomaly_summary(c: CheckResult) -> str:
    """``kind: count`` for each kind of anomaly, or ``-``."""
    return ", ".join(f"{k}: {n}" for k, n in c.anomaly_counts.items()) or "-"


def notes(c: CheckResult) -> str:
    """A checker's headline figures in a few words, written for people (``75.8 %``, ``1.2 s``,
    ``12,345``); ``results.json`` keeps the raw numbers."""
    if c.error:
        return f"crashed: {c.error}"
    f = c.figures
    if c.checker == "linearizable":
        keys = f.get("keys")
        return (f"{count(keys)} key{'' if keys == 1 else 's'}, {count(f.get('calls'))} calls, "
                f"{seconds(f.get('seconds'))}")
    if c.checker == "stale-reads":
        superseded = f.get("superseded_siblings")
        return (f"{count(f.get('stale_reads'))}/{count(f.get('reads'))} stale"
                + (f", {count(superseded)} superseded siblings" if superseded else "")
                + f"; {f.get('guarantee')}")
    if c.checker == "lost-writes":
        return (f"{count(f.get('lost'))} lost of {count(f.get('acknowledged'))} acknowledged, "
                f"{count(f.get('stale'))} stale")
    if c.checker == "convergence":
        return f.get("note") or (f"{count(f.get('diverged_keys', 0))} diverged, "
                                 f"{count(f.get('final_read_keys_disagreeing'))} final-read "
                                 "keys disagree")
    if c.checker == "stats":
        avail = f.get("availability", {}).get("overall", {}).get("availability")
        return f"{count(f.get('calls'))} calls, availability {percent(avail)}"
    return ""
