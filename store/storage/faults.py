"""A storage fault hook, for tests only: make fsync or reads fail with EIO in a real process.

A full disk can be made for real (a small tmpfs); a device that fails an fsync or a read cannot.
The engine, the commit log and the hint log therefore call :func:`fsync`, :func:`fdatasync` and
:func:`pread` of this module instead of :mod:`os`'s. In production these *are* :mod:`os`'s
functions, bound once at import: the hook costs nothing and cannot be switched on later.

It is on only when the process starts with the environment variable :data:`ENV` set to the path
of a *fault file* (a test's temporary file; the name says what it is for). Each call then reads
that file: a line ``fsync`` makes every fsync and fdatasync fail with ``EIO``, a line ``read``
every read of an SSTable block; a missing or empty file injects nothing. A test switches faults
on and off while the node runs by rewriting the file. The engine logs a warning at start-up and
``/status`` shows the file (``storage.test_fault_file``) whenever the hook is on.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

#: The environment variable that names the fault file. Never set it outside tests.
ENV = "KVSTORE_TEST_ONLY_FAULT_FILE"

#: The fault file when the hook is on (None: off, the production case).
ACTIVE: Path | None = Path(os.environ[ENV]) if os.environ.get(ENV) else None


def _injected(kind: str) -> bool:
    assert ACTIVE is not None
    try:
        return kind in ACTIVE.read_text().split()
    except FileNotFoundError:
        return False


def _failing(kind: str, call: Callable[..., object]) -> Callable[..., object]:
    def checked(*args: object) -> object:
        if _injected(kind):
            raise OSError(errno.EIO, f"{os.strerror(errno.EIO)} (injected by {ENV})")
        return call(*args)
    return checked


fsync: Callable[[int], None] = os.fsync
fdatasync: Callable[[int], None] = os.fdatasync
pread: Callable[[int, int, int], bytes] = os.pread
if ACTIVE is not None:
    fsync = _failing("fsync", os.fsync)  # type: ignore[assignment]
    fdatasync = _failing("fsync", os.fdatasync)  # type: ignore[assignment]
    pread = _failing("read", os.pread)  # type: ignore[assignment]
