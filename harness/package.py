"""The running kvcheck package as the store image's input: its files, its pins, its wheel.

The image holds the very kvcheck that runs the harness — installed from a wheel, or from a
checkout in editable mode — so what goes into it is read through the import system and the
installed metadata, never from a source tree: the ``*.py`` files of every ``kvcheck`` package
(and ``py.typed``), the version, the runtime requirements and the console scripts. The image's
wheel is built from exactly those, with a build configuration generated from the metadata, so
``kvcheck run`` works from any directory.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DISTRIBUTION = "kvcheck"
# The import root and the packages mapped into it (pyproject.toml's package-dir): walked one by
# one because in an editable install each lives in its own folder of the checkout.
PACKAGES = ("kvcheck", "kvcheck.store", "kvcheck.harness", "kvcheck.nemesis", "kvcheck.checkers")
_SOURCE_PATTERNS = ("*.py", "py.typed")


class PackageError(RuntimeError):
    """The running kvcheck package cannot be read or turned into a wheel; says what to do."""


@dataclass(frozen=True)
class Package:
    """A kvcheck package as the image needs it.

    ``files`` maps each path inside the package tree (``kvcheck/store/node.py``) to the file
    that holds it; ``requires`` are the runtime requirements (no extras), ``scripts`` the
    console scripts (name → ``module:function``).
    """

    files: Mapping[str, Path]
    version: str
    requires_python: str
    requires: tuple[str, ...]
    scripts: Mapping[str, str]

    @classmethod
    def running(cls) -> Package:
        """The kvcheck this Python runs: its files found by importing its packages, its metadata
        from the installed distribution.

        Raises PackageError if kvcheck is not installed (only imported from a tree).
        """
        try:
            dist = importlib.metadata.distribution(DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            raise PackageError(
                "kvcheck is not installed in this Python environment "
                f"({sys.prefix}), so the store image has no package metadata to build from; "
                "install it (`pip install .`, or scripts/setup in a checkout).") from None
        files: dict[str, Path] = {}
        for name in PACKAGES:
            for folder in importlib.import_module(name).__path__:
                root = Path(folder)
                for pattern in _SOURCE_PATTERNS:
                    for path in root.rglob(pattern):
                        if "__pycache__" not in path.parts and path.is_file():
                            inside = Path(*name.split("."), path.relative_to(root))
                            files[inside.as_posix()] = path
        requires = tuple(r for r in dist.requires or () if not _behind_extra(r))
        scripts = {ep.name: ep.value for ep in dist.entry_points
                   if ep.group == "console_scripts"}
        return cls(files=dict(sorted(files.items())), version=dist.version,
                   requires_python=dist.metadata.get_all("Requires-Python", [""])[0],
                   requires=requires, scripts=dict(sorted(scripts.items())))

    def build_config(self) -> str:
        """The ``pyproject.toml`` that builds this package's wheel from its files."""
        packages = sorted({str(Path(p).parent).replace("/", ".") for p in self.files
                           if p.endswith("/__init__.py")})
        scripts = "".join(f"{json.dumps(name)} = {json.dumps(target)}\n"
                          for name, target in self.scripts.items())
        return (
            '[build-system]\nrequires = ["setuptools>=77"]\n'
            'build-backend = "setuptools.build_meta"\n\n'
            f"[project]\nname = {json.dumps(DISTRIBUTION)}\nversion = {json.dumps(self.version)}\n"
            f"requires-python = {json.dumps(self.requires_python)}\n"
            f"dependencies = {json.dumps(list(self.requires))}\n\n"
            f"[project.scripts]\n{scripts}\n"
            f"[tool.setuptools]\npackages = {json.dumps(packages)}\n"
            f'package-data = {{ {json.dumps(DISTRIBUTION)} = ["py.typed"] }}\n')

    def hash_parts(self) -> list[tuple[str, bytes]]:
        """What the image's tag hashes of this package: the build configuration, every file
        (by its path in the package) and the pinned dependency set."""
        return [("pyproject.toml", self.build_config().encode()),
                ("pins", "\n".join(self.pins()).encode()),
                *((f"src/{inside}", path.read_bytes()) for inside, path in self.files.items())]

    def pins(self) -> list[str]:
        """``name==version`` for the runtime requirements and theirs, as installed in the
        running environment (the versions the harness is tested with), sorted.

        Requirements behind an extra, or not installed here (e.g. for another platform), are
        left out; pip checks inside the build that the set is complete. Raises PackageError if
        a direct, unconditional requirement is not installed.
        """
        pins: dict[str, str] = {}
        pending = list(self.requires)
        direct = {_requirement_name(r) for r in pending if ";" not in r}
        while pending:
            name = _requirement_name(pending.pop())
            if name in pins:
                continue
            try:
                dist = importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                if name in direct:
                    raise PackageError(
                        f"{name}, a dependency of kvcheck, is not installed in this Python "
                        f"environment ({sys.prefix}), so its version cannot be pinned for the "
                        "image; reinstall kvcheck with its dependencies.") from None
                continue
            pins[name] = dist.version
            pending.extend(r for r in dist.requires or () if not _behind_extra(r))
        return sorted(f"{name}=={version}" for name, version in pins.items())

    def make_wheel(self, wheels: Path) -> None:
        """Build this package's wheel into the directory ``wheels`` (with ``pip wheel``, from
        a copy of its files and :meth:`build_config`). Raises PackageError if pip fails."""
        with tempfile.TemporaryDirectory(prefix="kvcheck-src-") as tmp:
            tree = Path(tmp)
            (tree / "pyproject.toml").write_text(self.build_config())
            for inside, path in self.files.items():
                (tree / inside).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, tree / inside)
            pip(["wheel", "--no-deps", "--wheel-dir", str(wheels), tmp],
                "building the kvcheck wheel")


def pip(args: list[str], doing: str) -> None:
    """Run this Python's pip with ``args``; raise PackageError (with pip's last lines) if it
    fails. ``doing`` names the step for the message."""
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise PackageError(
            f"{doing} failed (pip exited {result.returncode}). The host needs the package index "
            "(PyPI) to make the image's wheels, and every dependency needs a CPython "
            f"manylinux wheel there; pip said:\n{tail}")


_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _requirement_name(requirement: str) -> str:
    """The normalized project name of a PEP 508 requirement string."""
    match = _NAME.match(requirement)
    if not match:
        raise PackageError(f"cannot read the requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _behind_extra(requirement: str) -> bool:
    return "extra" in requirement.partition(";")[2]
