"""``kvcheck matrix --backend docker``: cells run in containers, as ``kvcheck run`` runs them,
and leave nothing behind; with no simulated latencies, the page says why there is no PBS
prediction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from leftovers import leftovers

from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit

pytestmark = pytest.mark.integration


def test_a_docker_cell_is_an_ordinary_run_with_its_verdict_and_figures(tmp_path: Path) -> None:
    code = main(["matrix", "--backend", "docker", "--quorums", "1/1,2/2", "--sloppy", "off",
                 "--versioning", "vclock", "--nemesis", "partition", "--workload", "register",
                 "--seeds", "1", "--time-limit", "10", "--nemesis-interval", "3",
                 "--recovery-time", "3", "--histories", str(tmp_path)])
    assert code == Exit.OK
    matrix_dir = (tmp_path / "matrices" / "latest").resolve()
    matrix = json.loads((matrix_dir / "matrix.json").read_text())
    assert matrix["backend"] == "docker"
    for cell in matrix["cells"]:
        (run,) = cell["runs"]
        assert run["valid"] is True, cell["id"]  # 2/2 promises fresh reads; 1/1 convergence
        test = json.loads((matrix_dir / run["path"] / "test.json").read_text())
        assert (test["backend"], test["w"], test["r"]) == ("docker", cell["w"], cell["r"])
        assert cell["figures"]["availability"]["min"] > 0
        assert cell["pbs"] is None  # containers do not measure replica latencies
    assert "Docker runs" in (matrix_dir / "matrix.html").read_text()
    assert leftovers(matrix_dir / "runs") == []
