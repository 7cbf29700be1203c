"""kvcheck as a user installs it: a wheel in a fresh virtual environment, run outside the checkout.

The wheel is built with pip from a copy of the checkout (so that nothing a build leaves, such as
``build/``, lands in the work tree, nor a stale copy of a module in the wheel), installed into a
new venv with the dependency versions of the development environment (so that the image it
builds is the one the other tests use), and every command is run from an empty directory
elsewhere. Needs the package index for the build backend and the dependencies, and a Docker
engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from leftovers import leftovers

import kvcheck
from kvcheck.checkers import Op, write_history
from kvcheck.harness.base_image import Base, resolve_base
from kvcheck.harness.databases.kvstore import KvStore
from kvcheck.harness.engine import connect
from kvcheck.harness.image import image_tag
from kvcheck.harness.package import Package

REPO = Path(__file__).resolve().parents[2]
_NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "histories", "__pycache__",
               ".*_cache", ".hypothesis", ".typecheck")
pytestmark = pytest.mark.integration


def _run(command: list[str], cwd: Path, *, timeout: float = 600) -> subprocess.CompletedProcess:
    # No PYTHONPATH or venv of ours leaks into the installed commands.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding kvcheck's wheel and its dependencies; yields its ``bin``."""
    root = tmp_path_factory.mktemp("install")
    source, wheels, env = root / "source", root / "wheels", root / "venv"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels),
                  str(source)], root)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("kvcheck-*.whl")
    made = _run([sys.executable, "-m", "venv", str(env)], root)
    assert made.returncode == 0, made.stderr
    frozen = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], root)
    constraints = root / "constraints.txt"
    constraints.write_text(frozen.stdout)
    installed = _run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet",
                      "--disable-pip-version-check", "--constraint", str(constraints),
                      str(wheel)], root)
    assert installed.returncode == 0, installed.stderr
    yield env / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """An empty working directory outside the checkout."""
    assert REPO not in tmp_path.parents
    return tmp_path


def test_the_wheel_installs_one_import_root(venv: Path) -> None:
    purelib = _run([str(venv / "python"), "-c",
                    "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv)
    site = Path(purelib.stdout.strip())
    installed = {p.relative_to(site).as_posix() for p in (site / "kvcheck").rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
    assert installed == set(Package.running().files)  # every module, and nothing else
    (dist_info,) = site.glob("kvcheck-*.dist-info")
    assert (dist_info / "licenses" / "LICENSE").read_text() == (REPO / "LICENSE").read_text()
    metadata = (dist_info / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Project-URL: Source, " in metadata
    for old in ("store", "harness", "nemesis", "checkers"):
        assert not (site / old).exists(), f"the wheel installs a top-level {old}/"
    assert sysconfig.get_paths()["purelib"] != str(site)  # not the environment of the tests


def test_the_commands_work_from_any_directory(venv: Path, elsewhere: Path) -> None:
    for command in ([str(venv / "kvcheck"), "--version"],
                    [str(venv / "python"), "-m", "kvcheck", "--version"]):
        version = _run(command, elsewhere)
        assert (version.returncode, version.stdout.strip()) == (0, f"kvcheck {kvcheck.__version__}")
    assert _run([str(venv / "kvstore"), "--version"], elsewhere).stdout.strip() == \
        f"kvstore {kvcheck.__version__}"
    help_ = _run([str(venv / "kvcheck"), "run", "--help"], elsewhere)
    assert help_.returncode == 0 and "--nemesis" in help_.stdout


def _history(path: Path, second_read: int) -> Path:
    """One key: a write of 1 that completes, then two reads, the second of ``second_read``."""
    ops = [Op(0, 0, 0, "invoke", "write", "k", 1, "n1"), Op(1, 1, 0, "ok", "write", "k", 1, "n1"),
           Op(2, 2, 1, "invoke", "read", "k", None, "n1"), Op(3, 3, 1, "ok", "read", "k", 1, "n1"),
           Op(4, 4, 1, "invoke", "read", "k", None, "n2"),
           Op(5, 5, 1, "ok", "read", "k", second_read, "n2")]
    write_history(path, ops)
    return path


def test_check_decides_from_any_directory(venv: Path, elsewhere: Path) -> None:
    valid = _history(elsewhere / "valid.jsonl", 1)
    invalid = _history(elsewhere / "invalid.jsonl", 7)
    check = [str(venv / "kvcheck"), "check", "--checkers", "linearizable", "--json"]
    ok = _run([*check, str(valid)], elsewhere)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["valid"] is True
    bad = _run([*check, str(invalid)], elsewhere)
    assert bad.returncode == 1, bad.stderr
    assert json.loads(bad.stdout)["valid"] is False


def test_run_builds_its_image_from_the_installed_files(venv: Path, elsewhere: Path) -> None:
    """The installed package's files hash to the same tag as the checkout's (same content), and
    a whole run works from the installed commands, leaving its history where it ran."""
    probe = _run([str(venv / "python"), "-c",
                  "from kvcheck.harness.package import Package; import json; "
                  "p = Package.running(); print(json.dumps(sorted(map(str, p.files.values()))))"],
                 elsewhere)
    assert probe.returncode == 0, probe.stderr
    files = [Path(f) for f in json.loads(probe.stdout)]
    assert files and all(venv.parent in f.parents for f in files)
    client = connect()
    try:
        tag = image_tag(KvStore(), Package.running(), resolve_base(client, Base.AUTO))
    finally:
        client.close()
    shown = _run([str(venv / "kvcheck"), "image", "build"], elsewhere)
    assert (shown.returncode, shown.stdout.strip()) == (0, tag), shown.stderr
    run = _run([str(venv / "kvcheck"), "run", "--nodes", "3", "--time-limit", "5",
                "--rate", "20", "--nemesis", "none", "--recovery-time", "1"], elsewhere)
    histories = elsewhere / "histories"
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    directory = (histories / "latest").resolve()
    assert directory.parent.parent == histories.resolve()
    assert (directory / "history.jsonl").stat().st_size > 0
    assert json.loads((directory / "results.json").read_text())["valid"] is True
    assert leftovers(histories) == []
