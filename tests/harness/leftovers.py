"""What a run left behind on the Docker engine, found by the run ids of its run directories."""

from __future__ import annotations

from pathlib import Path

from kvcheck.harness.docker_cluster import RUN_LABEL
from kvcheck.harness.engine import connect


def leftovers(histories: Path) -> list[str]:
    """Containers and networks still there from the runs kept under ``histories`` (run ids
    start with the run directory's timestamp)."""
    stamps = tuple(d.name.lower() for d in histories.glob("*/*") if d.is_dir())
    client = connect()
    found = ([(c.name, c.labels[RUN_LABEL])
              for c in client.containers.list(all=True, filters={"label": RUN_LABEL})]
             + [(n.name, n.attrs["Labels"][RUN_LABEL])
                for n in client.networks.list(filters={"label": RUN_LABEL})])
    return [name for name, run in found if run.startswith(stamps)]
