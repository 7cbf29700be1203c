"""A tiny file system for tests of a full disk: a tmpfs mounted for one test (root only; the
test is skipped, saying why, where mounting is not permitted) and always unmounted after it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tiny_fs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (as mount takes it: ``512k``, ``2m``) mounted on ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: cannot make a small file system")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                              str(path)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (root is needed): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], check=True)  # a file still open


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte, as of now, with a new file;
    return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        disk = os.statvfs(directory)
        with contextlib.suppress(OSError):  # most of it at once
            os.posix_fallocate(fd, 0, disk.f_bavail * disk.f_frsize)
        os.lseek(fd, 0, os.SEEK_END)
        for chunk in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler
