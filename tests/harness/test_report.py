"""The run report: every value from a history as text; what each part shows."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from report_runs import IMG, MS, SCRIPT, make_run, make_zone_run

from kvcheck.checkers import Op, check_stats, pair_calls, read_history
from kvcheck.harness import report_assets, report_data
from kvcheck.harness.cli import main
from kvcheck.harness.report import render, write_report

HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>']


def test_hostile_keys_values_and_errors_render_literally(tmp_path: Path) -> None:
    (tmp_path / "test.json").write_text(json.dumps({"name": HOSTILE[0], "guarantee": HOSTILE[1]}))
    (tmp_path / "results.json").write_text(json.dumps({"valid": False, "checkers": {
        HOSTILE[0]: {"valid": False, "figures": {HOSTILE[1]: HOSTILE[0]},
                     "error": HOSTILE[1],
                     "anomalies": [{"kind": HOSTILE[0], "message": HOSTILE[1], "ops": [1]}]}}}))
    page = write_report(tmp_path).read_text()
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'href="test.json"' in page and "invalid" in page


def data_block(page: str) -> dict[str, Any]:
    start = page.index('<script type="application/json" id=kv-data>')
    block = page[page.index(">", start) + 1:page.index("</script>", start)]
    assert "<" not in block and ">" not in block and "&" not in block
    return json.loads(block)


def test_embedded_data_keeps_hostile_text_intact_and_inert(tmp_path: Path) -> None:
    page = make_run(tmp_path / "run").read_text()
    data = data_block(page)
    assert SCRIPT in data["calls"]["key"] and IMG in data["calls"]["node"]
    assert SCRIPT in data["calls"]["error"] and IMG in data["calls"]["error"]
    assert [w["targets"] for w in data["windows"]] == [f"n1 | n2,{IMG}"]
    assert IMG in data["windows"][0]["detail"]
    assert page.count("<script") == 2  # the data block and the page's own script


def test_report_shows_verdicts_anomalies_convergence_and_links(tmp_path: Path) -> None:
    page = make_run(tmp_path / "run").read_text()
    assert "read of &#x27;k1&#x27; through n2" in page and "1/87 stale" in page
    assert page.index("&lt;script&gt;alert(1)&lt;/script&gt;</th>") < page.index("k1</th>")
    assert "diverged" in page and "agreed 0.10 s after the heal" in page
    for link in ("history.jsonl", "results.json", "final-state.json",
                 "nodes/n1/kvstore.log"):
        assert f'href="{link}"' in page
    data = data_block(page)
    stale = next(a for a in data["anomalies"] if a["kind"] == "stale-read")
    assert sum(c["marked"] for c in stale["calls"]) == 3  # the read, 380 and 390 writes


def test_overlapping_faults_each_have_their_kinds_lane(tmp_path: Path) -> None:
    data = data_block(make_run(tmp_path / "run", overlaps=True).read_text())
    assert data["faults"] == [{"fault": "partition", "colour": 0}, {"fault": "kill", "colour": 1},
                              {"fault": "pause", "colour": 2}, {"fault": "clock", "colour": 3}]
    assert [(w["fault"], w["lane"], w["targets"], w["start"], w["end"])
            for w in data["windows"]] == [
        ("partition", 0, f"n1 | n2,{IMG}", 111.0, 211.0),  # kill n2 overlaps its end
        ("kill", 1, "n2", 161.0, 261.0),
        ("pause", 2, "n1", 291.0, 2401.0),  # closed by the heal
        ("clock", 3, f"n2,{IMG}", 311.0, 341.0),  # inside the pause
        ("kill", 1, "n1", 361.0, 391.0)]
    assert data["windows"][0]["availability"] == "100.0 % of 40 calls"


def test_one_kind_of_fault_is_one_lane(tmp_path: Path) -> None:
    data = data_block(make_run(tmp_path / "run").read_text())
    assert data["faults"] == [{"fault": "partition", "colour": 0}]
    assert [w["lane"] for w in data["windows"]] == [0]


def test_kinds_beyond_the_known_ones_follow_them_in_grey() -> None:
    windows = [{"fault": f} for f in ("zap", "clock", "bitflip", "partition")]
    grey = len(report_data.FAULT_ORDER)
    assert report_data._lanes(windows) == [
        {"fault": "partition", "colour": 0}, {"fault": "clock", "colour": 3},
        {"fault": "bitflip", "colour": grey}, {"fault": "zap", "colour": grey}]
    assert [w["lane"] for w in windows] == [3, 1, 2, 0]


def test_every_known_kind_has_a_colour_of_its_own_and_the_others_share_grey() -> None:
    palette = re.search(r"const FAULTS = \[([^\]]*)\]", report_assets.SCRIPT)
    assert palette is not None
    colours = re.findall(r'"(#[0-9a-f]{6})"', palette.group(1))
    assert len(set(colours)) == len(colours) == len(report_data.FAULT_ORDER) + 1


def test_availability_outside_faults_counts_a_call_in_overlapping_windows_once(
        tmp_path: Path) -> None:
    run = tmp_path / "run"
    page = make_run(run, overlaps=True).read_text()
    windows = [(w["start"] * MS, w["end"] * MS) for w in data_block(page)["windows"]]
    calls = [c for c in pair_calls(read_history(run / "history.jsonl")) if not c.invoke.final]
    outside = [c for c in calls if not any(t0 <= c.invoke.time < t1 for t0, t1 in windows)]
    stats = json.loads((run / "results.json").read_text())["checkers"]["stats"]["figures"]
    availability = stats["availability"]
    assert availability["overall"]["calls"] == len(calls) == 163
    assert availability["outside_faults"] == {"calls": len(outside), "ok": len(outside),
                                              "availability": 1.0}
    assert len(outside) == 56  # 163 less 60 under partition or kill, less 47 under the pause
    # Each window counts the calls invoked in it, overlaps included.
    assert [w["calls"] for w in availability["windows"]] == [40, 40, 47, 12, 12]
    assert "98.8 % of 163 calls overall, 100.0 % of 56 calls outside every fault window" in page


def test_big_histories_are_sampled_and_say_so(tmp_path: Path, monkeypatch: Any) -> None:
    make_run(tmp_path / "run")
    monkeypatch.setattr(report_data, "MAX_DRAWN", 50)
    data = report_data.load_run(tmp_path / "run")
    calls = data["calls"]
    assert data["sampled"] == {"drawn": 50, "total": 169}
    assert calls["type"].count(1) == 1 and calls["type"].count(2) == 1  # fail, info kept
    assert calls["t0"] == sorted(calls["t0"])
    per_second = data["buckets"]["per_second"]
    width = data["buckets"]["width"]
    assert round(sum(per_second["ok"]) * width / 1000) == 167  # every call counted
    assert "show 50 of 169 calls" in render(data).replace("timeline and the scatter ", "")


def test_kvcheck_report_regenerates_and_rejects_a_non_run(tmp_path: Path) -> None:
    report = make_run(tmp_path / "run")
    report.unlink()
    assert main(["report", str(tmp_path / "run")]) == 0 and report.exists()
    assert main(["report", str(tmp_path)]) == 254


def _rewrite_results(run: Path, change: Any) -> str:
    """Change the run's results.json with ``change(results)``, then rewrite the report."""
    path = run / "results.json"
    results = json.loads(path.read_text())
    change(results)
    path.write_text(json.dumps(results))
    return write_report(run).read_text()


def test_the_report_shows_the_checkers_judgement_not_its_own(tmp_path: Path) -> None:
    run = tmp_path / "run"
    page = make_run(run).read_text()
    assert "<td><b class=error>diverged</b>" in page and "agreed 0.10 s after the heal" in page

    def overrule(results: dict[str, Any]) -> None:
        # What the history and the final state alone would not give.
        checkers = results["checkers"]
        checkers["convergence"]["figures"]["by_key"] = {
            "k1": {"replicas": "undecided"},
            SCRIPT: {"replicas": "converged", "converged_after_ms": 1234.0,
                     "final_reads": "disagree"}}
        checkers["stats"]["figures"]["calls"] = 424
        checkers["stale-reads"]["anomaly_counts"] = {"stale-read": 7}

    page = _rewrite_results(run, overrule)
    assert "<td><b class=error>diverged</b>" not in page and "agreed 0.10 s" not in page
    assert "undecided: a replica could not be asked" in page
    assert "agreed 1.23 s after the heal · <b class=error>final reads disagree</b>" in page
    assert "424 calls" in page and "stale-read: 7" in page


def test_keys_the_convergence_checker_did_not_judge_say_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run)
    page = _rewrite_results(run, lambda results: results["checkers"].pop("convergence"))
    assert page.count("not judged: no convergence result in results.json") == 2


def test_latency_lines_use_the_checkers_quantiles(tmp_path: Path) -> None:
    ops = []
    for i, ms in enumerate((1, 2, 3, 4)):
        ops.append(Op(2 * i, 0, i, "invoke", "write", "k", i))
        ops.append(Op(2 * i + 1, ms * 1_000_000, i, "ok", "write", "k", i))
    stats = check_stats(ops).figures["latency_ms"]["write"]
    buckets = report_data._buckets(pair_calls(ops), 4_000_000)
    assert [buckets[q] for q in ("p50", "p95", "p99")] == [[2.0], [4.0], [4.0]]
    assert (stats["p50"], stats["p95"], stats["p99"]) == (2.0, 4.0, 4.0)


def test_a_checker_the_database_could_not_serve_is_shown_with_the_reason(tmp_path: Path) -> None:
    why = "etcd cannot report what each replica stores, which the convergence checker needs"
    (tmp_path / "test.json").write_text(json.dumps({
        "name": "t", "db": "etcd", "db_options": {"reads": "serializable"},
        "skipped_checkers": {"convergence": why}}))
    (tmp_path / "results.json").write_text(json.dumps({"valid": True, "checkers": {}}))
    page = write_report(tmp_path).read_text()
    assert (f"<tr><th>convergence</th><td>not run</td><td>-</td><td>-</td><td>{why}</td></tr>"
            in page)
    assert "<th>db</th><td>etcd</td>" in page


def test_a_run_without_replica_states_has_no_convergence_table(tmp_path: Path) -> None:
    """A database without the replica-state capability samples nothing: final-state.json has
    no samples, and the report is written all the same."""
    (tmp_path / "test.json").write_text(json.dumps({"name": "t", "db": "mine"}))
    (tmp_path / "results.json").write_text(json.dumps({"valid": True, "checkers": {}}))
    (tmp_path / "final-state.json").write_text(json.dumps({
        "format": "kvcheck-final-state", "version": 1, "samples": [], "replicas": {},
        "crashed_nodes": []}))
    assert report_data.load_run(tmp_path)["convergence"] == {"nodes": [], "keys": []}
    assert write_report(tmp_path).exists()


def test_a_run_with_zones_lists_its_nodes_and_availability_by_zone(tmp_path: Path) -> None:
    page = make_zone_run(tmp_path / "run").read_text()
    assert "<img" not in page
    zone_img = html.escape(f"zone {IMG}")
    assert (f"<th>nodes</th><td>{zone_img}: n3 (weight 1), n6 (weight 1)<br>"
            "zone a: n1 (weight 1), n4 (weight 1), n7 (weight 1) (spare)<br>"
            "zone b: n2 (weight 2), n5 (weight 1)</td>") in page
    assert (f"<th>all calls</th><th>{zone_img}</th><th>zone a</th><th>zone b</th>"
            "<th>no zone</th></tr>") in page
    assert ("<tr><th>whole test</th><td></td><td></td><td>89.0 % of 181 calls</td>"
            "<td>100.0 % of 60 calls</td><td>66.7 % of 60 calls</td><td>100.0 % of 60 calls</td>"
            "<td>100.0 % of 1 calls</td></tr>") in page
    # In zone a's outage its nodes' calls fail; every call through the other zones succeeds.
    assert ("<td>67.2 % of 61 calls</td><td>100.0 % of 20 calls</td>"
            "<td class=hit>0.0 % of 20 calls</td><td>100.0 % of 20 calls</td>"
            "<td>100.0 % of 1 calls</td></tr>") in page
    (w,) = data_block(page)["windows"]
    assert (w["fault"], w["targets"]) == ("zone", "n1,n4")
    assert w["zones"] == [{"zone": IMG, "share": "100.0 % of 20 calls", "hit": False},
                          {"zone": "a", "share": "0.0 % of 20 calls", "hit": True},
                          {"zone": "b", "share": "100.0 % of 20 calls", "hit": False},
                          {"zone": None, "share": "100.0 % of 1 calls", "hit": False}]


def test_a_run_without_zones_shows_none(tmp_path: Path) -> None:
    run = tmp_path / "run"
    page = make_run(run).read_text()
    assert "zone" not in re.sub(r"<(style|script)\b.*?</\1>", "", page, flags=re.S)
    assert "<th>nodes</th><td>[&quot;n1&quot;, &quot;n2&quot;," in page
    data = data_block(page)
    assert [w["zones"] for w in data["windows"]] == [[]]
    test = json.loads((run / "test.json").read_text())
    for zones in ({"n1": "a", "n2": "a", IMG: "a"}, {"n1": "a", "n2": ""}):
        (run / "test.json").write_text(json.dumps({**test, "zones": zones}))
        page = write_report(run).read_text()
        assert "<th>all calls</th>" not in page and "zone a:" not in page
    assert "zones: node &#x27;n2&#x27; must name a non-empty zone" in page


def test_the_convergence_table_groups_its_nodes_by_zone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run)
    test = json.loads((run / "test.json").read_text())
    (run / "test.json").write_text(json.dumps({**test, "zones": {"n2": "b", IMG: "a"}}))
    page = write_report(run).read_text()
    img = html.escape(IMG)
    assert ("<tr><th></th><th colspan=1>zone a</th><th colspan=1>zone b</th>"
            "<th colspan=1>no zone</th><th></th></tr>"
            f"<tr><th>key</th><th>{img}</th><th>n2</th><th>n1</th><th></th></tr>") in page
    assert f"zone a: {img}<br>zone b: n2<br>no zone: n1</td>" in page


def test_weights_are_shown_only_when_some_node_does_not_weigh_1(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run)
    test = json.loads((run / "test.json").read_text())
    (run / "test.json").write_text(json.dumps({**test, "weights": {"n1": 1, "n2": 1, IMG: 1}}))
    assert "<th>nodes</th><td>[&quot;n1&quot;" in write_report(run).read_text()
    (run / "test.json").write_text(json.dumps({**test, "weights": {"n1": 3}}))
    img = html.escape(IMG)
    assert (f"<th>nodes</th><td>n1 (weight 3), n2 (weight 1), {img} (weight 1)</td>"
            in write_report(run).read_text())
