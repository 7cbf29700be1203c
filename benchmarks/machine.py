"""What every benchmark's JSON says of the machine it ran on: its figures are read by these."""

from __future__ import annotations

import os
import platform


def machine() -> dict[str, object]:
    """The machine's logical CPUs (``cpus``), CPU type and the Python that ran the benchmark."""
    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "python": f"{platform.python_implementation()} {platform.python_version()}"}
