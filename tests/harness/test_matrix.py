"""``kvcheck matrix``: a grid of simulated runs tabulated into matrix.json and matrix.html, each
cell's runs ordinary run directories; shards merge into the matrix one run would have made; bad
grids are refused before anything runs."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from polling import wait_until

from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.matrix import Grid, GridError, read_matrix, shard
from kvcheck.harness.matrix_figures import FIGURES, run_figures, summarise
from kvcheck.harness.matrix_page import render_page

#: Two cells of two short runs each: W + R <= N and W + R > N, under a partition.
SMALL = ["--quorums", "1/1,2/2", "--sloppy", "off", "--versioning", "vclock",
         "--nemesis", "partition", "--workload", "register", "--seeds", "2",
         "--time-limit", "12", "--rate", "60", "--nemesis-interval", "4",
         "--recovery-time", "3"]


def matrix_of(histories: Path, name: str = "latest") -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (histories / "matrices" / name / "matrix.json").read_text())
    return document


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    histories = tmp_path_factory.mktemp("matrix")
    assert main(["matrix", *SMALL, "--jobs", "2", "--histories", str(histories)]) == Exit.OK
    return histories


def test_each_cell_has_its_axes_runs_figures_and_verdicts(small: Path) -> None:
    matrix = matrix_of(small)
    assert matrix["format"] == "kvcheck-matrix" and matrix["complete"]
    cells = {(c["w"], c["r"]): c for c in matrix["cells"]}
    assert set(cells) == {(1, 1), (2, 2)}
    for cell in cells.values():
        assert (cell["n"], cell["sloppy_quorum"], cell["versioning"], cell["nemesis"],
                cell["workload"]) == (3, False, "vclock", "partition", "register")
        assert [run["seed"] for run in cell["runs"]] == [1, 2]
        assert sum(cell["verdicts"].values()) == 2
        assert set(cell["figures"]) == set(FIGURES)
        assert cell["figures"]["lost_writes"] is None  # a register cannot tell a lost write
        for name in ("availability", "stale_read_share", "p50_ms", "p99_ms",
                     "convergence_seconds"):
            spread = cell["figures"][name]
            assert spread["min"] <= spread["mean"] <= spread["max"], name
    assert cells[2, 2]["guarantee"] == "no-stale-reads"
    assert cells[2, 2]["verdicts"]["valid"] == 2
    assert cells[2, 2]["figures"]["stale_read_share"]["max"] == 0
    assert cells[1, 1]["figures"]["stale_read_share"]["min"] > 0


def test_every_run_is_an_ordinary_run_directory_that_checks_the_same_again(
        small: Path) -> None:
    matrix_dir = (small / "matrices" / "latest").resolve()
    for cell in matrix_of(small)["cells"]:
        for run in cell["runs"]:
            run_dir = matrix_dir / run["path"]
            assert (run_dir / "report.html").is_file()
            test = json.loads((run_dir / "test.json").read_text())
            assert (test["name"], test["seed"], test["w"]) == (cell["id"], run["seed"],
                                                                cell["w"])
            assert main(["check", str(run_dir)]) == run["exit_code"]
    page = (matrix_dir / "matrix.html").read_text()
    assert all(run["path"] in page for cell in matrix_of(small)["cells"]
               for run in cell["runs"])


def test_shards_merge_into_the_matrix_one_run_makes(small: Path, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    for index in (0, 1):
        assert main(["matrix", *SMALL, "--jobs", "1", "--shard", f"{index}/2",
                     "--histories", str(shards / str(index))]) == Exit.OK
        assert len(matrix_of(shards / str(index))["cells"]) == 1
    merged = tmp_path / "merged"
    assert main(["matrix", "--merge", str(shards), "--histories", str(merged)]) == Exit.OK

    def by_id(matrix: dict[str, Any]) -> dict[str, Any]:
        return {c["id"]: (c["figures"], c["verdicts"], [r["seed"] for r in c["runs"]])
                for c in matrix["cells"]}

    assert by_id(matrix_of(merged)) == by_id(matrix_of(small))  # simulated: same seeds, same
    merged_dir = (merged / "matrices" / "latest").resolve()
    for cell in matrix_of(merged)["cells"]:
        for run in cell["runs"]:
            assert (merged_dir / run["path"] / "results.json").is_file()
    # Merging again, with a shard given twice, an earlier merge among them (its runs are
    # copies) and a damaged matrix.json, counts each seed of each cell once.
    (shards / "damaged").mkdir()
    (shards / "damaged" / "matrix.json").write_text('{"format": "kvcheck-matrix", "version": 1}')
    hostile = matrix_of(shards / "0")  # a run path out of its matrix: a merge would copy it
    hostile["cells"][0]["runs"][0].update(path="../../..", seed=99)
    (shards / "hostile").mkdir()
    (shards / "hostile" / "matrix.json").write_text(json.dumps(hostile))
    again = tmp_path / "again"
    assert main(["matrix", "--merge", str(shards), str(shards / "0"), str(merged),
                 "--histories", str(again)]) == Exit.OK
    assert by_id(matrix_of(again)) == by_id(matrix_of(small))


def test_matrices_run_with_other_settings_are_not_merged(small: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    other = tmp_path / "other"
    assert main(["matrix", *SMALL, "--rate", "40", "--seeds", "1", "--quorums", "1/1",
                 "--histories", str(other)]) == Exit.OK
    code = main(["matrix", "--merge", str(small), str(other), "--histories", str(tmp_path)])
    assert code == Exit.USAGE and "different settings" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "says"), [
    (["--quorums", "4/1"], "--quorums 4/1"),
    (["--quorums", "2-2"], "W/R"),
    (["--n", "6"], "--nodes"),
    (["--seeds", "0"], "--seeds"),
    (["--nodes", "1", "--n", "1", "--quorums", "1/1", "--nemesis", "none,partition"],
     "cell n1-w1-r1-strict-vclock-partition-register: --nemesis partition and packet need"),
    (["--nemesis", "none,zone"], "--nemesis zone: the zone nemesis takes a zone away, so it "
     "needs the nodes spread over two zones or more, and --zones is 1: add a zone count, e.g. "
     "--zones 1,3"),
    (["--zones", "1,6"], "--zones 6: the nodes cannot be spread over more zones than there are "
     "nodes (5): give fewer zones or more --nodes"),
])
def test_an_impossible_grid_is_refused_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str) -> None:
    assert main(["matrix", *argv, "--histories", str(tmp_path)]) == Exit.USAGE
    assert says in capsys.readouterr().err
    assert not (tmp_path / "matrices").exists()


@pytest.mark.parametrize("argv", [["--nemesis", "partition+bogus"], ["--sloppy", "maybe"],
                                  ["--versioning", "lamport"], ["--nemesis", "none+kill"]])
def test_a_bad_axis_value_is_a_usage_error(tmp_path: Path, argv: list[str]) -> None:
    assert main(["matrix", *argv, "--histories", str(tmp_path)]) == Exit.USAGE


def test_merge_without_a_matrix_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["matrix", "--merge", str(tmp_path), "--histories", str(tmp_path)]) == Exit.USAGE


def test_the_plan_lists_the_full_grid_and_its_duration_and_runs_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "--full", "--plan", "--histories", str(tmp_path)]) == Exit.OK
    printed = capsys.readouterr().out
    first, note, *cells = printed.splitlines()
    # W x R, sloppy, versioning, workload; 7 nemeses in 1 zone, those and zone in 3
    full = 9 * 2 * 2 * 2 * (7 + 8)
    assert first.startswith(f"{full} cells x 3 seeds = {3 * full} runs") and "about" in first
    assert note == ("  (no cell of nemesis zone with --zones 1: the zone nemesis takes a zone "
                    "away, so it runs only with two zones or more)")
    assert len(cells) == full and not (tmp_path / "matrices").exists()
    assert main(["matrix", "--full", "--zones", "1", "--plan"]) == Exit.OK  # no zone nemesis
    assert capsys.readouterr().out.startswith(f"{9 * 2 * 2 * 2 * 7} cells x 3 seeds")


#: One configuration, in one zone and in three, with no nemesis and with the zone nemesis.
ZONED = ["--zones", "1,3", "--nodes", "6", "--nemesis", "none,zone", "--quorums", "2/2",
         "--sloppy", "off", "--versioning", "vclock", "--workload", "register"]


def test_the_zone_nemesis_runs_only_in_the_zone_counts_it_fits(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default's cell keeps its name; a zone count other than 1 is in the name, and the
    zone nemesis, which needs two zones, is left out of one zone, saying so."""
    assert main(["matrix", *ZONED, "--plan", "--histories", str(tmp_path)]) == Exit.OK
    first, note, *cells = capsys.readouterr().out.splitlines()
    assert first.startswith("3 cells x 3 seeds = 9 runs")
    assert note == ("  (no cell of nemesis zone with --zones 1: the zone nemesis takes a zone "
                    "away, so it runs only with two zones or more)")
    assert cells == ["  n3-w2-r2-strict-vclock-none-register",
                     "  n3-w2-r2-z3-strict-vclock-none-register",
                     "  n3-w2-r2-z3-strict-vclock-zone-register"]
    assert main(["matrix", *ZONED[2:], "--plan",
                 "--histories", str(tmp_path)]) == Exit.USAGE  # zone in one zone only
    assert "add a zone count, e.g. --zones 1,3" in capsys.readouterr().err
    assert not (tmp_path / "matrices").exists()


def test_a_zoned_matrix_records_its_zones(tmp_path: Path) -> None:
    """Each run is spread over the cell's zones and loses one of them; matrix.json, the page
    and the run directories say so."""
    argv = ["--zones", "3", "--nodes", "6", "--nemesis", "zone", *ZONED[6:], "--seeds", "1",
            "--time-limit", "5", "--nemesis-interval", "2", "--recovery-time", "3"]
    assert main(["matrix", *argv, "--histories", str(tmp_path)]) == Exit.OK
    matrix = matrix_of(tmp_path)
    assert matrix["axes"]["zones"] == [3]
    (cell,) = matrix["cells"]
    assert (cell["id"], cell["zones"], cell["nemesis"]) == (
        "n3-w2-r2-z3-strict-vclock-zone-register", 3, "zone")
    assert cell["guarantee"] == "no-stale-reads" and cell["verdicts"]["valid"] == 1
    run_dir = tmp_path / "matrices" / "latest" / cell["runs"][0]["path"]
    test = json.loads((run_dir / "test.json").read_text())
    assert sorted(set(test["zones"].values())) == ["a", "b", "c"]
    assert '"start-zone"' in (run_dir / "history.jsonl").read_text()
    assert cell["figures"]["availability_in_faults"] is not None
    page = (tmp_path / "matrices" / "latest" / "matrix.html").read_text()
    assert "N=3 W=2 R=2 Z=3 strict vclock · register" in page


def test_a_matrix_from_before_the_zones_axis_reads_and_merges_as_one_zone(
        small: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree((small / "matrices" / "latest").resolve(), old, symlinks=True)
    matrix = matrix_of(small)
    del matrix["axes"]["zones"]
    for cell in matrix["cells"]:
        del cell["zones"]
    (old / "matrix.json").write_text(json.dumps(matrix))
    assert read_matrix(old / "matrix.json")["cells"] == matrix["cells"]
    assert "Z=" not in render_page(matrix) and "N=3 W=1 R=1 strict" in render_page(matrix)
    merged = tmp_path / "merged"
    assert main(["matrix", "--merge", str(old), "--histories", str(merged)]) == Exit.OK
    again = matrix_of(merged)
    assert again["axes"]["zones"] == [1]
    assert [(c["id"], c["zones"]) for c in again["cells"]] == [
        (c["id"], 1) for c in matrix_of(small)["cells"]]


@given(n=st.lists(st.integers(1, 5), min_size=1, max_size=3, unique=True),
       zones=st.lists(st.integers(1, 3), min_size=1, max_size=3, unique=True),
       sloppy=st.lists(st.booleans(), min_size=1, max_size=2, unique=True),
       nemesis=st.lists(st.sampled_from(["none", "partition", "kill+clock", "zone",
                                         "partition+zone"]), min_size=1, max_size=3,
                        unique=True))
def test_the_grid_is_the_product_of_its_axes(n: list[int], zones: list[int], sloppy: list[bool],
                                             nemesis: list[str]) -> None:
    """Less the zone nemesis in one zone; a grid of only that is refused."""
    grid = Grid(n=tuple(n), zones=tuple(zones), quorums=("all",), sloppy=tuple(sloppy),
                nemesis=tuple(nemesis), workload=("register",), versioning=("vclock",))
    if max(zones) == 1 and any("zone" in m for m in nemesis):
        with pytest.raises(GridError, match=r"--nemesis .*zone: the zone nemesis"):
            grid.cells()
        return
    cells = grid.cells()
    fitting = sum(1 for z in zones for m in nemesis if z > 1 or "zone" not in m)
    assert len(cells) == sum(k * k for k in n) * len(sloppy) * fitting
    assert len({c.id for c in cells}) == len(cells)
    parts = [shard(cells, i, 3) for i in range(3)]
    assert sorted(c for part in parts for c in part) == sorted(cells)


def test_a_quorum_pair_is_kept_for_each_n_it_fits_and_refused_if_it_fits_none() -> None:
    cells = Grid(n=(1, 3), quorums=("1/1", "3/2"), sloppy=(False,), versioning=("vclock",),
                 nemesis=("none",), workload=("set",)).cells()
    assert [(c.n, c.w, c.r) for c in cells] == [(1, 1, 1), (3, 1, 1), (3, 3, 2)]
    with pytest.raises(GridError, match="4/1"):
        Grid(quorums=("4/1",)).cells()


@given(st.lists(st.dictionaries(st.sampled_from(sorted(FIGURES)),
                                st.one_of(st.none(), st.floats(0, 1e6)), max_size=4),
                max_size=5))
def test_a_summary_spans_the_runs_that_give_each_figure(runs: list[dict[str, Any]]) -> None:
    summary = summarise(runs)
    for name in FIGURES:
        values = [run[name] for run in runs if run.get(name) is not None]
        if not values:
            assert summary[name] is None
        else:
            spread = summary[name]
            assert spread is not None
            assert (spread["min"], spread["max"]) == (min(values), max(values))
            assert spread["min"] - 1e-6 <= spread["mean"] <= spread["max"] + 1e-6


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_runs_under_way_and_keeps_the_cells_that_finished(
        tmp_path: Path, signum: int) -> None:
    """A signal to kvcheck alone (not to its workers) stops every run under way, which tear
    down; nothing queued runs after it; the matrix is written, marked incomplete."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kvcheck", "matrix", "--quorums", "1/1,2/2,3/3", "--sloppy",
         "off", "--versioning", "vclock", "--nemesis", "none", "--workload", "register",
         "--seeds", "1", "--time-limit", "100000", "--jobs", "2",
         "--histories", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    runs = tmp_path / "matrices"
    wait_until(lambda: len(list(runs.glob("*/runs/*/*/history.jsonl"))) == 2, process,
               what="two cells' runs under way")
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, output
    matrix = matrix_of(tmp_path)
    assert matrix["complete"] is False and matrix["cells"] == []
    assert not list(runs.glob("*/runs/n3-w3-r3-*"))  # the third cell never started
    assert f"stopped by {signal.Signals(signum).name}" in output
    for log in runs.glob("*/runs/*/runs.log"):  # each run under way was told, and ended
        assert "the cluster was torn down" in log.read_text(), log


def test_writes_inside_faults_count_only_those_through_nodes_that_were_up(
        tmp_path: Path) -> None:
    """A write through a killed node fails whatever the quorums: it is not counted, from the
    kill until the node is ready again (later than the kill's stop, if a partition was on)."""
    lines: list[dict[str, Any]] = []

    def op(process: Any, type_: str, f: str, node: str | None = None, value: Any = None) -> None:
        lines.append({"index": len(lines), "time": len(lines) * 1000, "process": process,
                      "type": type_, "f": f, "key": "r0" if node else None, "value": value,
                      "node": node})

    def write(node: str, outcome: str) -> None:
        op(0, "invoke", "write", node, 1)
        op(0, outcome, "write", node, 1)

    write("n1", "fail")  # before any fault: not counted
    op("nemesis", "info", "start-partition", value={"fault": "partition", "targets": ["n1"]})
    op("nemesis", "info", "start-kill", value={"fault": "kill", "targets": ["n2"]})
    write("n2", "fail")  # n2 is down: not counted
    write("n1", "ok")
    op("nemesis", "info", "stop-kill", value={"fault": "kill", "targets": ["n2"]})
    write("n2", "fail")  # restarted, not ready yet: not counted
    op("nemesis", "info", "ready", value={"nodes": ["n2"], "after_s": 1.0})
    write("n2", "ok")
    write("n3", "info")
    op("nemesis", "info", "heal", value={"fault": "all"})
    (tmp_path / "history.jsonl").write_text("\n".join(
        [json.dumps({"format": "kvcheck-history", "version": 1}),
         *map(json.dumps, lines)]) + "\n")
    (tmp_path / "results.json").write_text(json.dumps({"checkers": {}}))
    figures = run_figures(tmp_path)
    assert figures["write_availability_in_faults"] == pytest.approx(2 / 3)
    assert figures["lost_writes"] is None and figures["stale_read_share"] is None
