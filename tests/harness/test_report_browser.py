"""The report and the run browser in a real headless chromium: drawn, safe, no console errors."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from headless import load, require_chromium
from report_runs import make_run, make_zone_run

from kvcheck.harness.serve import make_server


def rendered(dom: str) -> set[str]:
    match = re.search(r'data-rendered="([^"]*)"', dom)
    assert match, "the report's script did not finish"
    return set(match.group(1).split())


def faults_chart(dom: str) -> str:
    """The fault lanes' chart in the DOM."""
    return dom.partition('id="faults"')[2].partition("</div>")[0]


def fault_lanes(dom: str) -> list[tuple[str, int]]:
    """The fault lanes drawn, top to bottom: each kind with its number of bars, checking that a
    kind's bars share its lane's row and no other kind's."""
    lanes = faults_chart(dom)
    kinds = re.findall(r'class="lane">([^<]*)<', lanes)
    bars = re.findall(r'<rect [^>]*y="([0-9.]+)"[^>]*class="window" data-fault="([^"]*)"', lanes)
    rows = {kind: {y for y, k in bars if k == kind} for kind in kinds}
    assert all(len(ys) == 1 for ys in rows.values())
    assert sorted(rows, key=lambda k: float(next(iter(rows[k])))) == kinds
    return [(kind, sum(k == kind for _, k in bars)) for kind in kinds]


def test_report_draws_timeline_plots_and_anomalies(tmp_path: Path) -> None:
    require_chromium()
    report = make_run(tmp_path / "run")
    shot = tmp_path / "report.png"
    page = load(report.as_uri(), tmp_path / "profile", screenshot=shot)
    print(f"screenshot: {shot}")
    assert page.console == []
    assert "data-errors" not in page.dom
    assert rendered(page.dom) == {"faults", "timeline", "latency", "throughput", "anomalies"}
    assert fault_lanes(page.dom) == [("partition", 1)]
    timeline = page.dom.split('id="timeline"')[1].split("</section>")[0]
    assert timeline.count("data-c=") > 100 and 'class="band"' in timeline
    assert 'data-series="p99"' in page.dom and 'data-series="ok"' in page.dom
    assert page.dom.count('class="marked"') == 3  # the read, the write it read, the one it missed
    # Hostile keys, values, errors and node names are text: no element was made of them.
    assert "<img" not in page.dom and "alert(1)</script>" not in page.dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.dom
    assert shot.stat().st_size > 10_000


def test_overlapping_faults_are_drawn_one_lane_per_kind(tmp_path: Path) -> None:
    require_chromium()
    report = make_run(tmp_path / "run", overlaps=True)
    shot = tmp_path / "report.png"
    page = load(report.as_uri(), tmp_path / "profile", screenshot=shot)
    print(f"screenshot: {shot}")
    assert page.console == [] and "data-errors" not in page.dom
    assert fault_lanes(page.dom) == [("partition", 1), ("kill", 2), ("pause", 1), ("clock", 1)]
    timeline = page.dom.split('id="timeline"')[1].split("</section>")[0]
    assert timeline.count('class="band"') == 5
    assert "<img" not in page.dom  # the clock's hostile target is text


def test_a_zone_outage_is_drawn_in_its_lane(tmp_path: Path) -> None:
    require_chromium()
    report = make_zone_run(tmp_path / "run")
    shot = tmp_path / "report.png"
    page = load(report.as_uri(), tmp_path / "profile", screenshot=shot)
    print(f"screenshot: {shot}")
    assert page.console == [] and "data-errors" not in page.dom
    assert fault_lanes(page.dom) == [("zone", 1)]
    assert '<table class="zones">' in page.dom and "<img" not in page.dom


def test_a_linked_time_window_is_drawn(tmp_path: Path) -> None:
    require_chromium()
    report = make_run(tmp_path / "run")
    whole = load(report.as_uri(), tmp_path / "profile")
    window = load(report.as_uri() + "#t=0.1-0.2", tmp_path / "profile")
    assert window.console == []
    timeline = window.dom.split('id="timeline"')[1].split("</section>")[0]
    assert ">0.10 s<" in timeline and ">0.20 s<" in timeline and ">1.00 s<" not in timeline
    assert timeline.count("data-c=") < whole.dom.count("data-c=") / 4
    lanes = faults_chart(window.dom)  # the lanes follow the window too
    assert ">0.10 s<" in lanes and ">0.20 s<" in lanes and ">1.00 s<" not in lanes


def test_serve_index_links_to_a_report_that_renders(tmp_path: Path) -> None:
    require_chromium()
    make_run(tmp_path / "histories" / "synthetic" / "20260101T000000")
    server = make_server(tmp_path / "histories", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        index = load(base, tmp_path / "profile")
        assert index.console == []
        link = re.search(r'href="([^"]*report\.html)"', index.dom)
        assert link and "synthetic" in index.dom and "invalid" in index.dom
        report = load(base + link.group(1), tmp_path / "profile")
        assert report.console == []
        assert "timeline" in rendered(report.dom)
    finally:
        server.shutdown()
        server.server_close()
