"""A matrix's ``matrix.html``: one self-contained page of tables made from ``matrix.json`` alone.

One table per figure of :data:`~kvcheck.harness.matrix_figures.FIGURES` (a row per
configuration — its zone count too where the matrix varies it (:func:`zoned`) —, a column per
nemesis, each cell coloured within its table by which end is better), one of the verdicts, and
the PBS model beside the staleness measured. The page has no script at all, and a
Content-Security-Policy forbids every fetch and every script; every value of ``matrix.json`` is
escaped (in attributes too), and a run's ``path`` becomes a link only when it is a plain
relative path inside the matrix directory (no scheme, no ``..``, not absolute), percent-quoted.
So ``<script>`` anywhere in ``matrix.json`` renders literally.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kvcheck.checkers import Verdict
from kvcheck.harness.matrix_figures import FIGURES, Figure
from kvcheck.harness.report_assets import VERDICT_STYLE
from kvcheck.harness.report_data import text
from kvcheck.terminal import count, percent, seconds

_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
        "form-action 'none'")
#: The axes that make a row: every one but the nemesis, which makes the columns.
_ROW = ("n", "zones", "w", "r", "sloppy_quorum", "versioning", "workload")
#: An axis a cell may lack, and its value then: a matrix made before the axis had one zone.
_ROW_DEFAULTS = {"zones": 1}
_NULL = "&ndash;"  # what a null shows as
_WORDS = ("valid", "invalid", "unknown")
_Row = tuple[str, ...]
_Rows = Mapping[_Row, str]  # each row's label, in the rows' order
_Grid = Mapping[tuple[_Row, str], Mapping[str, Any]]
_STYLE = VERDICT_STYLE + r"""
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em 2em; color: #1f2328; }
h1 { margin: 0 0 .3em; } h2 { margin: 1.4em 0 .3em; font-size: 1.15em; }
h3 { margin: 1em 0 .2em; font-size: 1em; }
section { border-top: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { text-align: left; padding: .25em .7em; vertical-align: top; }
th { font-weight: 600; color: #444; }
table.grid td, table.grid th { border: 1px solid #d0d7de; }
table.grid td, table.pbs td { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
table.grid a { color: inherit; } table.grid .value { font-weight: 600; }
small, .runs { display: block; color: #57606a; font-size: 80%; }
.runs a { margin-left: .3em; } .runs .invalid { color: #cf222e; font-weight: 600; }
td.w-valid { background: #dafbe1; } td.w-invalid { background: #ffebe9; }
td.w-unknown { background: #fff8c5; }
.hint { color: #57606a; font-size: 90%; max-width: 60em; } .warn { color: #9a6700; }
.pbs-cell { display: inline-block; vertical-align: top; margin: 0 2em 1em 0; }
"""


def write_page(matrix_dir: Path, matrix: Mapping[str, Any]) -> Path:
    """Write ``matrix_dir/matrix.html`` for ``matrix`` (a ``matrix.json``); return its path.
    Raises OSError when it cannot be written."""
    path = Path(matrix_dir) / "matrix.html"
    path.write_text(render_page(matrix), encoding="utf-8")
    return path


def render_page(matrix: Mapping[str, Any]) -> str:
    """The page for ``matrix``. Never raises for malformed or hostile values: a part that is
    missing or of the wrong type shows as empty or a dash."""
    cells = [c for c in _list(matrix.get("cells")) if isinstance(c, Mapping)]
    shows_zones = zoned(cells)
    rows, grid = _grid(cells, shows_zones)
    columns = _columns(_mapping(matrix.get("axes")), cells)
    figures = [f for f in FIGURES.values() if any(_spread(c, f.name) for c in grid.values())]
    nav = " · ".join([*(f'<a href="#f-{f.name}">{html.escape(f.title)}</a>' for f in figures),
                      '<a href="#verdicts">verdicts</a>', '<a href="#pbs">PBS</a>'])
    tables = "".join(_figure_section(f, rows, columns, grid) for f in figures)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kvcheck matrix {_e(matrix.get("created", ""))}</title>
<style>{_STYLE}</style></head><body>
<header>{_header(matrix, cells, shows_zones)}<p>{nav}</p></header>
{tables}{_verdict_section(rows, columns, grid)}{_pbs_section(matrix, cells, shows_zones)}
</body></html>
"""


def _e(value: Any) -> str:
    return html.escape(text(value))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    """A finite number of ``matrix.json``, or None for anything else (null, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _header(matrix: Mapping[str, Any], cells: Sequence[Mapping[str, Any]],
            shows_zones: bool) -> str:
    """What was run, and how to read the tables."""
    limit = _number(matrix.get("time_limit"))
    shard = _list(matrix.get("shard"))
    facts = [("backend", _e(matrix.get("backend", "?"))),
             ("seeds per cell", _e(matrix.get("seeds", "?"))),
             ("time limit per run", _e(seconds(limit) if limit is not None else "?")),
             ("cells", count(len(cells))),
             ("runs", count(sum(len(_list(c.get("runs"))) for c in cells))),
             ("created", _e(matrix.get("created", "?")))]
    if len(shard) == 2 and all(type(s) is int for s in shard) and shard[1] > 1:
        facts.append(("shard", f"{shard[0] + 1} of {shard[1]}"))
    if matrix.get("complete") is False:
        facts.append(("complete", "<b class=warn>no: interrupted; some cells lack runs</b>"))
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    return (f"<h1>kvcheck matrix</h1><p><code>{_e(matrix.get('command', ''))}</code></p>"
            f"<table>{rows}</table>"
            "<p class=hint>Each table below is one figure over the grid: a row per configuration "
            "(N replicas, W and R the write and read quorums, "
            f"{'Z the zones the nodes are spread over, ' if shows_zones else ''}"
            "strict or sloppy quorum, "
            "versioning, workload), a column per nemesis. A cell shows the figure's mean over "
            "the cell's runs (one per seed) and, beneath, its min &ndash; max when they differ; "
            f"{_NULL} means no run gives the figure. Colours are scaled within each table, from "
            "red at its worse end to green at its better; blue shows size alone where neither "
            "end is better. A value links to the cell's first run's report; the seeds beneath "
            "link each run's report (hover for its verdict).</p>")


def zoned(cells: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the zone count tells configurations apart, and so is in their labels: some cell
    (of ``matrix.json``'s ``cells``) has a zone count other than 1."""
    return any(text(_axis(c, "zones")) != "1" for c in cells)


def _axis(cell: Mapping[str, Any], name: str) -> Any:
    """An axis of ``cell``; :data:`_ROW_DEFAULTS`' value where it lacks one."""
    return cell.get(name, _ROW_DEFAULTS.get(name))


def _grid(cells: Sequence[Mapping[str, Any]], shows_zones: bool) -> tuple[_Rows, _Grid]:
    """The rows (configurations, in the cells' order, each with its label: :func:`_label`) and
    each (row, nemesis)'s cell (the first, should two claim the same place)."""
    rows: dict[_Row, str] = {}
    grid: dict[tuple[_Row, str], Mapping[str, Any]] = {}
    for cell in cells:
        row = tuple(text(_axis(cell, k)) for k in _ROW)
        rows.setdefault(row, _label(cell, shows_zones))
        grid.setdefault((row, text(cell.get("nemesis"))), cell)
    return rows, grid


def _columns(axes: Mapping[str, Any], cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """The nemeses in the axes' order, then any a cell has that the axes lack."""
    columns = dict.fromkeys(text(n) for n in _list(axes.get("nemesis")))
    columns.update(dict.fromkeys(text(c.get("nemesis")) for c in cells))
    return list(columns)


def _label(cell: Mapping[str, Any], shows_zones: bool) -> str:
    """``N=3 W=2 R=2 strict vclock · register``, with ``Z=3`` after R if ``shows_zones``,
    escaped."""
    sloppy = "sloppy" if cell.get("sloppy_quorum") is True else "strict"
    zones = f" Z={_e(_axis(cell, 'zones'))}" if shows_zones else ""
    return (f"N={_e(cell.get('n'))} W={_e(cell.get('w'))} R={_e(cell.get('r'))}{zones} "
            f"{sloppy} {_e(cell.get('versioning'))} · {_e(cell.get('workload'))}")


def _table(rows: _Rows, columns: list[str], grid: _Grid,
           td: Callable[[Mapping[str, Any]], str]) -> str:
    """A grid table: a row per configuration, ``td(cell)`` for each nemesis that has a cell."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row, label in rows.items():
        tds = "".join(td(grid[row, c]) if (row, c) in grid else "<td></td>" for c in columns)
        body.append(f"<tr><th>{label}</th>{tds}</tr>")
    return (f"<table class=grid><tr><th>configuration \\ nemesis</th>{head}</tr>"
            f"{''.join(body)}</table>")


def _report_href(path: Any) -> str | None:
    """``<path>/report.html``, quoted and escaped, for a plain relative path inside the matrix
    directory; None for anything else (absent, absolute, ``..``, a scheme, a backslash)."""
    if not isinstance(path, str) or not path.isprintable() or ":" in path or "\\" in path:
        return None
    parts = path.rstrip("/").split("/")
    if any(p in ("", "..") for p in parts):
        return None
    return html.escape(quote("/".join(parts)) + "/report.html")


def _runs(cell: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in _list(cell.get("runs")) if isinstance(r, Mapping)]


def _verdict_word(valid: Any) -> str:
    """A run's verdict in a word; ``no results`` for a run that crashed."""
    return "no results" if valid is None else Verdict.read(valid).value


def _linked(cell: Mapping[str, Any], inner: str) -> str:
    """``inner`` linking the report of the cell's first run that has one."""
    for run in _runs(cell):
        href = _report_href(run.get("path"))
        if href is not None:
            return f'<a href="{href}">{inner}</a>'
    return inner


def _seeds(cell: Mapping[str, Any]) -> str:
    """Each run's seed, linking its report, its verdict in the title (and as a colour)."""
    links = []
    for run in _runs(cell):
        word = _verdict_word(run.get("valid"))
        title = html.escape(f"seed {text(run.get('seed'))}: {word}")
        href = _report_href(run.get("path"))
        seed = _e(run.get("seed"))
        why = "no run directory" if run.get("path") is None else "not a path in the matrix"
        links.append(f'<a class="{word.replace(" ", "-")}" href="{href}" title="{title}">'
                     f"{seed}</a>" if href is not None else
                     f'<span title="{title}; {why}">{seed}</span>')
    return f"<span class=runs>runs{''.join(links)}</span>" if links else ""


def _spread(cell: Mapping[str, Any], name: str) -> tuple[float, float, float] | None:
    """A figure's mean, min and max in ``cell``, or None if null or malformed."""
    spread = _mapping(_mapping(cell.get("figures")).get(name))
    mean = _number(spread.get("mean"))
    if mean is None:
        return None
    low, high = _number(spread.get("min")), _number(spread.get("max"))
    return mean, mean if low is None else low, mean if high is None else high


def _colour(value: float, low: float, high: float, better: str | None) -> str:
    """The background of ``value`` in a table whose means span ``low`` to ``high``: red to
    green by ``better``, or pale to deep blue when neither end is better."""
    t = 0.5 if high <= low else (value - low) / (high - low)
    if better is None:
        return f"hsl(210, 70%, {94 - 26 * t:.0f}%)"
    good = t if better == "higher" else 1 - t
    return f"hsl({120 * good:.0f}, 65%, 84%)"


def _figure_section(figure: Figure, rows: _Rows, columns: list[str], grid: _Grid) -> str:
    """The figure's table; called only for a figure some cell of ``grid`` has."""
    means = [s[0] for c in grid.values() if (s := _spread(c, figure.name))]
    low, high = min(means), max(means)

    def td(cell: Mapping[str, Any]) -> str:
        spread = _spread(cell, figure.name)
        if spread is None:
            return f"<td class=none>{_NULL}{_seeds(cell)}</td>"
        mean, lo, hi = (figure.show(v) for v in spread)
        between = f"<small>{lo} &ndash; {hi}</small>" if lo != hi else ""
        return (f'<td style="background: {_colour(spread[0], low, high, figure.better)}">'
                f"{_linked(cell, f'<span class=value>{mean}</span>')}{between}"
                f"{_seeds(cell)}</td>")

    better = (f"{figure.better} is better" if figure.better
              else "neither end is better (blue: size only)")
    return (f"<section id=f-{figure.name}><h2>{html.escape(figure.title)}</h2>"
            f"<p class=hint>{html.escape(figure.description)}; {better}.</p>"
            f"{_table(rows, columns, grid, td)}</section>")


def _verdict_cell(cell: Mapping[str, Any]) -> str:
    """The cell's verdict counts against its guarantee, coloured by the worst."""
    verdicts = _mapping(cell.get("verdicts"))
    counts = {w: n if isinstance(n := verdicts.get(w), int) and not isinstance(n, bool)
              and n > 0 else 0 for w in _WORDS}
    crashed = sum(1 for r in _runs(cell) if r.get("valid") is None)
    worst = next((w for w in ("invalid", "unknown") if counts[w]), None)
    worst = worst or ("unknown" if crashed else "valid" if counts["valid"] else None)
    parts = [f"{n} {w}" for w, n in counts.items() if n]
    parts += [f"{crashed} without results"] if crashed else []
    words = " · ".join(parts) or "no runs"
    return (f"<td{f' class=w-{worst}' if worst else ''}>{_linked(cell, words)}"
            f"<small>{_e(cell.get('guarantee', '?'))}</small>{_seeds(cell)}</td>")


def _verdict_section(rows: _Rows, columns: list[str], grid: _Grid) -> str:
    return ("<section id=verdicts><h2>Verdicts</h2><p class=hint>How many of each cell's runs "
            "kept the guarantee beneath the counts (the one its configuration promises), broke "
            "it, or could not be judged; a run without results crashed. Coloured by the "
            f"worst.</p>{_table(rows, columns, grid, _verdict_cell)}</section>")


def _partial(cell: Mapping[str, Any]) -> bool:
    """Whether the cell's quorums may miss each other (W + R <= N)."""
    n, w, r = cell.get("n"), cell.get("w"), cell.get("r")
    return type(n) is int and type(w) is int and type(r) is int and w + r <= n


def _count(value: Any) -> str:
    return count(value) if type(value) is int else _NULL


def _share(value: Any) -> str:
    share = _number(value)
    return _NULL if share is None else percent(share)


def _pbs_cell(cell: Mapping[str, Any], pbs: Mapping[str, Any], shows_zones: bool) -> str:
    """One partial-quorum cell's predictions beside its measurements."""
    times = "".join(
        f"<tr><td>{'later' if b.get('le_ms') is None else '≤ ' + _e(b.get('le_ms'))}</td>"
        f"<td>{_share(b.get('predicted_stale'))}</td><td>{_share(b.get('measured_stale'))}</td>"
        f"<td>{_count(b.get('reads'))}</td></tr>"
        for b in _list(pbs.get("t_visibility")) if isinstance(b, Mapping))
    versions = "".join(
        f"<tr><td>{_e(k.get('k'))}</td><td>{_share(k.get('predicted'))}</td>"
        f"<td>{_share(k.get('measured'))}</td></tr>"
        for k in _list(pbs.get("k_staleness")) if isinstance(k, Mapping))
    samples = ", ".join(f"{_count(v)} {_e(k)}" for k, v in _mapping(pbs.get("samples")).items())
    nemesis = text(cell.get("nemesis"))
    mark = ("" if nemesis == "none" else
            f" <span class=warn>⚠ nemesis {html.escape(nemesis)}: outside the model</span>")
    return (f"<div class=pbs-cell><h3>{_label(cell, shows_zones)}, nemesis "
            f"{html.escape(nemesis)}{mark}</h3>"
            f"<small>latency samples: {samples or _NULL}</small>"
            "<table class=pbs><tr><th>t (ms)</th><th>predicted stale</th>"
            f"<th>measured stale</th><th>reads</th></tr>{times}</table>"
            "<table class=pbs><tr><th>k</th><th>predicted</th><th>measured</th></tr>"
            f"{versions}</table></div>")


def _pbs_section(matrix: Mapping[str, Any], cells: Sequence[Mapping[str, Any]],
                 shows_zones: bool) -> str:
    """The PBS model beside the staleness measured, for the partial-quorum cells that have it;
    or why no cell has it."""
    partial = [c for c in cells if _partial(c)]
    shown = [(c, pbs) for c in partial if isinstance(pbs := c.get("pbs"), Mapping)]
    head = "<section id=pbs><h2>Theory beside measurement</h2>"
    if not partial:
        return (f"{head}<p>Every cell has strict quorums (W + R &gt; N): a read's quorum always "
                "overlaps the last write's, so the PBS model has nothing to predict.</p></section>")
    if not shown:
        return (f"{head}<p>No partial-quorum cell has a PBS prediction: the model needs the "
                "replica latencies the simulator measures, and Docker runs (this matrix's "
                f"backend: {_e(matrix.get('backend', '?'))}) do not measure them; strict quorums "
                "have nothing to predict.</p></section>")
    models = dict.fromkeys(text(p.get("model")) for _, p in shown if p.get("model") is not None)
    assumptions = dict.fromkeys(str(a)[:_MAX_ASSUMPTION] for _, p in shown
                                for a in _list(p.get("assumptions")))
    return (f"{head}<p class=hint>For each cell whose quorums may miss each other (W + R ≤ N), "
            f"the model ({', '.join(map(html.escape, models)) or 'PBS'}) predicts from the "
            "replica latencies measured in its runs how likely a read is to be stale, beside "
            "how many were. First table: reads that began up to t ms after a write was "
            "acknowledged, and the share that missed it; second: the share of reads that "
            "returned none of the last k versions. Cells marked ⚠ ran with a nemesis, which "
            "breaks the model's assumption that nothing fails: there its prediction is a "
            "baseline, not a forecast.</p>"
            f"<p>The model assumes:</p><ul>{''.join(map(_li, assumptions))}</ul>"
            f"<p>{_DISAGREEMENT}</p>"
            f"{''.join(_pbs_cell(c, p, shows_zones) for c, p in shown)}</section>")


#: The longest assumption shown (they are the model's own sentences; a cap keeps a hostile
#: matrix.json from making the page huge).
_MAX_ASSUMPTION = 2000
#: Why the reference store's staleness departs from the model's, in the way it does.
_DISAGREEMENT = (
    "<b>Reading them together.</b> In the reference store one replica stamps a write first "
    "&mdash; the coordinator itself when it is one of the key's replicas &mdash; and sends it to "
    "the others only after its own group commit; with W = 1 the client's acknowledgement "
    "leaves at that same moment. For one link delay the other replicas lack it, so a read "
    "through one of them may be stale at small t where WARS, which sends every replica the "
    "write at once, predicts none. The closed-form k-staleness assumes a write reaches only W "
    "replicas; where writes reach all N within milliseconds, the measured share falls below "
    "it. Under a nemesis, writes that miss replicas make staleness no latency model predicts. "
    "docs/consistency.md works through the default matrix's numbers.")


def _li(item: str) -> str:
    return f"<li>{html.escape(item)}</li>"
