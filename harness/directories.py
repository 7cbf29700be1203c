"""Directories of runs and matrices: a fresh one beside those already there, and the
``latest`` link that points at the newest."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def new_dir(path: Path) -> Path:
    """Create ``path`` (with its parents), or ``path-2``, ``path-3``, … where it is taken;
    return the one made. Raises OSError."""
    made, suffix = path, 1
    while made.exists():
        suffix += 1
        made = path.with_name(f"{path.name}-{suffix}")
    made.mkdir(parents=True)
    return made


def point_latest(parent: Path, target: Path) -> None:
    """Point ``parent/latest`` at ``target`` (below ``parent``), replacing it at once.
    Raises OSError."""
    temporary = parent / f".latest-{os.getpid()}-{secrets.token_hex(2)}"
    temporary.symlink_to(target.relative_to(parent))
    os.replace(temporary, parent / "latest")
