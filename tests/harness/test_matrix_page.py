"""The matrix page: a table per figure over the grid, verdicts, PBS beside measurement; every
value from ``matrix.json`` inert, and only safe relative paths linked."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from kvcheck.harness.matrix_figures import FIGURES
from kvcheck.harness.matrix_page import render_page, write_page

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
DASH = "\N{EN DASH}"  # what a null shows as, and between min and max
PARTIAL = "N=3 W=1 R=1 strict vclock · register"
STRICT = f"N=3 W=2 R=2 sloppy {SCRIPT} · register"
#: The links the grid's runs may have: every other path is unsafe.
SAFE = {"runs/a/20261202T173000/report.html", "runs/a-p/x%20y%23%3F/report.html",
        "runs/b-p/1/report.html"}


def run(seed: int, path: str | None, valid: Any = True) -> dict[str, Any]:
    return {"seed": seed, "path": path, "valid": valid, "exit_code": 0, "figures": {}}


def cell(w: int, r: int, nemesis: str, runs: list[dict[str, Any]],
         figures: dict[str, tuple[float, float, float]], verdicts: tuple[int, int, int],
         *, sloppy: bool = False, versioning: str = "vclock",
         pbs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cell of matrix.json; a figure not in ``figures`` is null."""
    return {"id": f"n3-w{w}-r{r}-{nemesis}", "n": 3, "w": w, "r": r, "sloppy_quorum": sloppy,
            "versioning": versioning, "nemesis": nemesis, "workload": "register",
            "guarantee": IMG, "runs": runs,
            "verdicts": dict(zip(("valid", "invalid", "unknown"), verdicts, strict=True)),
            "figures": {name: dict(zip(("mean", "min", "max"), figures[name], strict=True))
                        if name in figures else None for name in FIGURES},
            "pbs": pbs}


def pbs(assumption: str) -> dict[str, Any]:
    return {"model": "WARS (Bailis et al., VLDB 2012)",
            "samples": {"write": 1234, "ack": 1234, "read": 2000, "reply": 2000},
            "t_visibility": [
                {"le_ms": 1, "predicted_stale": 0.12, "measured_stale": 0.10, "reads": 1234},
                {"le_ms": None, "predicted_stale": 0.001, "measured_stale": None, "reads": 0}],
            "k_staleness": [{"k": 1, "predicted": 0.33, "measured": 0.05}],
            "assumptions": [assumption, SCRIPT]}


def matrix(**overrides: Any) -> dict[str, Any]:
    """Two configurations (one partial quorum, one strict) by two nemeses, with hostile text,
    unsafe paths, a run without a directory, null figures and PBS blocks."""
    cells = [
        cell(1, 1, "none", [run(1, "runs/a/20261202T173000"), run(2, None, None),
                            run(3, "javascript:alert(1)", "unknown")],
             {"availability": (1.0, 1.0, 1.0), "stale_ms_p99": (3.4, 1.0, 6.0),
              "convergence_seconds": (1.25, 1.25, 1.25), "siblings_max": (2, 1, 3)},
             (1, 0, 1), pbs=pbs("no failures")),
        cell(1, 1, "partition", [run(1, "../../etc/passwd", False),
                                 run(2, "runs/a-p/x y#?", True)],
             {"availability": (0.5, 0.4, 0.6), "stale_ms_p99": (12.0, 12.0, 12.0),
              "siblings_max": (0.5, 0, 1)},
             (1, 1, 0), pbs=pbs("no failures")),
        cell(2, 2, "none", [run(1, "/etc/passwd")], {"availability": (0.973, 0.973, 0.973)},
             (1, 0, 0), sloppy=True, versioning=SCRIPT, pbs=pbs("strict: never shown")),
        cell(2, 2, "partition", [run(1, "runs/b-p/1/")], {"availability": (0.9, 0.9, 0.9)},
             (1, 0, 0), sloppy=True, versioning=SCRIPT),
    ]
    return {"format": "kvcheck-matrix", "version": 1, "created": "2026-12-02T17:30:00Z",
            "command": f"kvcheck matrix --seeds 3 {SCRIPT}", "backend": "sim", "seeds": 3,
            "time_limit": 30.0, "shard": [0, 1],
            "axes": {"n": [3], "quorums": ["1/1", "2/2"], "sloppy": ["off", "on"],
                     "versioning": ["vclock", SCRIPT], "nemesis": ["none", "partition"],
                     "workload": ["register"]},
            "cells": cells, **overrides}


class Page(HTMLParser):
    """Every tag with its attributes, and each table's cells (text pieces and attributes)
    under the id of its section."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[list[dict[str, Any]]]]] = {}
        self.section = ""
        self.td: dict[str, Any] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "section":
            self.section = dict(attrs).get("id") or ""
        elif tag == "table":
            self.tables.setdefault(self.section, []).append([])
        elif tag == "tr":
            self.tables[self.section][-1].append([])
        elif tag in ("td", "th"):
            self.td = {"text": [], "links": [], **dict(attrs)}
            self.tables[self.section][-1][-1].append(self.td)
        elif tag == "a" and self.td is not None:
            self.td["links"].append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.td = None

    def handle_data(self, data: str) -> None:
        if self.td is not None and data.strip():
            self.td["text"].append(data)

    def grid(self, section: str) -> list[list[dict[str, Any]]]:
        [table] = self.tables[section]
        return table


def test_hostile_text_renders_literally_and_the_page_has_no_script() -> None:
    page = render_page(matrix())
    parsed = Page(page)
    assert {tag for tag, _ in parsed.tags} <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p",
        "code", "table", "tr", "th", "td", "a", "span", "small", "section", "ul", "li", "b",
        "div"}
    assert not [(t, k) for t, attrs in parsed.tags for k in attrs if k.startswith("on")]
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    csp = next(a["content"] for t, a in parsed.tags if a.get("http-equiv"))
    assert csp is not None and "default-src 'none'" in csp and "script-src" not in csp


def test_only_relative_paths_inside_the_matrix_become_links() -> None:
    parsed = Page(render_page(matrix()))
    hrefs = {a["href"] for t, a in parsed.tags if t == "a"}
    assert {h for h in hrefs if h is not None and not h.startswith("#")} == SAFE
    titles = {a.get("title") for t, a in parsed.tags if t == "a" and a.get("title")}
    assert "seed 2: valid" in titles
    spans = {a.get("title") for t, a in parsed.tags if t == "span" and a.get("title")}
    assert {"seed 2: no results; no run directory", "seed 3: unknown; not a path in the matrix",
            "seed 1: invalid; not a path in the matrix",
            "seed 1: valid; not a path in the matrix"} <= spans


def test_each_figure_is_a_grid_of_configurations_by_nemesis_formatted_by_unit() -> None:
    parsed = Page(render_page(matrix()))
    table = parsed.grid("f-availability")
    assert [c["text"] for c in table[0]] == [["configuration \\ nemesis"], ["none"],
                                            ["partition"]]
    assert [row[0]["text"] for row in table[1:]] == [[PARTIAL], [STRICT]]
    values = [[c["text"][0] for c in row[1:]] for row in table[1:]]
    assert values == [["100.0 %", "50.0 %"], ["97.3 %", "90.0 %"]]
    assert table[1][2]["text"][:2] == ["50.0 %", f"40.0 % {DASH} 60.0 %"]
    assert table[1][1]["text"][1] == "runs"  # equal min and max: no range
    assert table[1][1]["links"] == ["runs/a/20261202T173000/report.html"] * 2
    assert table[2][1]["links"] == []  # an absolute path is no link
    assert table[1][2]["links"] == ["runs/a-p/x%20y%23%3F/report.html"] * 2
    ms = parsed.grid("f-stale_ms_p99")
    assert [[c["text"][0] for c in row[1:]] for row in ms[1:]] == [["3.4 ms", "12 ms"],
                                                                  [DASH, DASH]]
    assert "style" not in ms[2][1]
    assert parsed.grid("f-convergence_seconds")[1][1]["text"][0] == "1.25 s"
    counts = parsed.grid("f-siblings_max")
    assert [c["text"][0] for c in counts[1][1:]] == ["2", "0.5"]


def test_figures_no_cell_has_are_left_out() -> None:
    parsed = Page(render_page(matrix()))
    assert "f-lost_writes" not in parsed.tables and "f-availability_in_faults" not in parsed.tables
    assert {s for s in parsed.tables if s.startswith("f-")} == {
        "f-availability", "f-stale_ms_p99", "f-convergence_seconds", "f-siblings_max"}


def test_colours_run_from_the_worse_end_to_the_better() -> None:
    parsed = Page(render_page(matrix()))
    availability = parsed.grid("f-availability")
    assert "hsl(120," in availability[1][1]["style"]  # 100 %, the best
    assert "hsl(0," in availability[1][2]["style"]  # 50 %, the worst
    latency = parsed.grid("f-stale_ms_p99")  # lower is better
    assert "hsl(120," in latency[1][1]["style"] and "hsl(0," in latency[1][2]["style"]
    siblings = parsed.grid("f-siblings_max")  # neither end better: blue by size
    assert all("hsl(210," in c["style"] for c in siblings[1][1:])
    assert siblings[1][1]["style"] != siblings[1][2]["style"]


def test_verdicts_are_counted_against_the_guarantee_and_coloured_by_the_worst() -> None:
    table = Page(render_page(matrix())).grid("verdicts")
    assert table[1][1]["text"][:2] == ["1 valid · 1 unknown · 1 without results", IMG]
    assert table[1][2]["text"][0] == "1 valid · 1 invalid"
    assert [c["class"] for c in (*table[1][1:], *table[2][1:])] == [
        "w-unknown", "w-invalid", "w-valid", "w-valid"]


def test_pbs_is_shown_for_partial_quorums_only_with_nemesis_cells_marked() -> None:
    page = render_page(matrix())
    parsed = Page(page)
    divs = [a.get("class") for t, a in parsed.tags if t == "div"]
    assert divs == ["pbs-cell", "pbs-cell"]  # both W=1 R=1 cells; not the strict ones
    assert "strict: never shown" not in page
    assert page.count("no failures") == 1  # the assumptions, once
    assert page.count("outside the model") == 1  # the partition cell
    tables = parsed.tables["pbs"]
    assert [[c["text"] for c in row] for row in tables[0][1:]] == [
        [["≤ 1"], ["12.0 %"], ["10.0 %"], ["1,234"]], [["later"], ["0.1 %"], [DASH], ["0"]]]
    assert [[c["text"] for c in row] for row in tables[1][1:]] == [
        [["1"], ["33.0 %"], ["5.0 %"]]]


@pytest.mark.parametrize(("w", "backend", "why"), [
    (2, "sim", "nothing to predict"), (1, "docker", "Docker runs")])
def test_without_pbs_the_page_says_why(w: int, backend: str, why: str) -> None:
    cells = [cell(w, 2, "none", [run(1, "runs/x/1")], {"availability": (1, 1, 1)}, (1, 0, 0))]
    page = render_page(matrix(cells=cells, backend=backend))
    assert why in page and "class=pbs-cell" not in page


@pytest.mark.parametrize("broken", [
    {}, {"cells": "x", "axes": 3}, {"cells": [{"figures": {"availability": {"mean": "x"}},
                                              "runs": [7, {"path": 3}], "verdicts": []}]},
    {"cells": [{"figures": {"availability": {"mean": float("nan")}}, "pbs": {"t_visibility": 1}}],
     "shard": [None, "x"], "time_limit": "y"}])
def test_malformed_matrices_render_without_raising(broken: dict[str, Any]) -> None:
    Page(render_page(broken))


def test_write_page_writes_matrix_html(tmp_path: Path) -> None:
    path = write_page(tmp_path, matrix())
    assert path == tmp_path / "matrix.html"
    assert path.read_text(encoding="utf-8") == render_page(matrix())
