"""What a run left behind on the Docker engine, found by the run ids of its run directories."""

from __future__ import annotations

import json
from pathlib import Path

from kvcheck.harness.docker_cluster import RUN_LABEL
from kvcheck.harness.engine import connect


def run_ids(histories: Path) -> set[str]:
    """The run ids of the runs kept under ``histories`` (``run_id`` in each ``test.json``)."""
    return {json.loads(test.read_text())["run_id"] for test in histories.glob("*/*/test.json")}


def leftovers(histories: Path) -> list[str]:
    """Containers and networks still there from the runs kept under ``histories``."""
    ids = run_ids(histories)
    client = connect()
    found = ([(c.name, c.labels[RUN_LABEL])
              for c in client.containers.list(all=True, filters={"label": RUN_LABEL})]
             + [(n.name, n.attrs["Labels"][RUN_LABEL])
                for n in client.networks.list(filters={"label": RUN_LABEL})])
    return [name for name, run in found if run in ids]
