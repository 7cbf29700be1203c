"""Where a Jepsen test leaves its histories: the layout of Jepsen's ``store/`` directory.

``jepsen.store`` writes each run to ``store/<test-name>/<start-time>/`` (the time in basic ISO
form, ``20240501T120000.000Z``, so names sort in time order) and points the symlinks
``store/latest``, ``store/current`` and ``store/<test-name>/latest`` at the newest run. A run
directory holds ``history.edn`` (one op map per line) and ``history.txt`` (the same ops in
``jepsen.util``'s tab-separated text) once the test has finished, ``jepsen.log`` (every op
logged as it happened, so also after a crash), ``results.edn``, and ``test.jepsen`` or
``test.fressian`` (binary, not read here).

What a path stands for (:func:`jepsen_histories`): a file, itself; a run directory, its
history, the first of :data:`HISTORY_FILES` it holds; a test directory ``store/<test-name>/``
or the ``store/`` root, the history of every run directory one or two levels below, in path
order (so per test, oldest first). Symlinks below the given path are not followed: they only
name runs found anyway. ``store/latest`` names the newest run alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from kvcheck.checkers.history import HistoryError

#: A run directory's history files, the most complete first: ``history.edn`` has every op with
#: its ``:time`` and ``:index``, ``history.txt`` the same ops without them, and ``jepsen.log``
#: is all a run that crashed before writing its history leaves.
HISTORY_FILES = ("history.edn", "history.txt", "jepsen.log")

_DEPTH = 2  # store/ -> test -> run


def run_history(run_dir: Path) -> Path | None:
    """The history file of the Jepsen run directory ``run_dir`` (see :data:`HISTORY_FILES`),
    or ``None`` when it holds none."""
    for name in HISTORY_FILES:
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def jepsen_histories(path: str | os.PathLike[str]) -> list[Path]:
    """The Jepsen history files ``path`` stands for (module docstring).

    Raises :class:`HistoryError` when ``path`` is a directory with no Jepsen run in it or
    within two levels below, or when a directory cannot be listed.
    """
    p = Path(path)
    if not p.is_dir():
        return [p]
    found = list(_runs(p, _DEPTH))
    if not found:
        raise HistoryError(f"no Jepsen history ({', '.join(HISTORY_FILES)}) here or in the "
                           "run directories below", p)
    return found


def _runs(d: Path, depth: int) -> Iterator[Path]:
    history = run_history(d)
    if history is not None:
        yield history
        return
    if depth == 0:
        return
    try:
        children = sorted(d.iterdir())
    except OSError as e:
        raise HistoryError(f"cannot list directory: {e.strerror}", d) from None
    for child in children:
        if child.is_dir() and not child.is_symlink():
            yield from _runs(child, depth - 1)
