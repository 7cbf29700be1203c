"""The ``kvstore`` command line: every serve setting's help and default, true/false settings as
flags over the TOML file."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

from kvcheck.store.cli import build_parser
from kvcheck.store.cli.serve import node_config
from kvcheck.store.cli.settings import SETTINGS, as_flags
from kvcheck.store.config import ClusterConfig, NodeSpec

NODE = ["--node-id", "n1", "--listen", "127.0.0.1:7001", "--data-dir", "d",
        "--peers", "n2=127.0.0.1:7002,n3=127.0.0.1:7003"]


def _serve_actions() -> dict[str, argparse.Action]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in commands.choices["serve"]._actions}


def _default_text(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def test_every_cluster_setting_is_a_serve_flag_whose_help_names_its_default() -> None:
    actions = _serve_actions()
    for field in dataclasses.fields(ClusterConfig):
        if field.name == "bugs":  # not a setting: --bug NAME, repeatable
            assert actions["bug"].default == [] and "--bug help" in (actions["bug"].help or "")
            continue
        action = actions[field.name]
        assert action.default is None, field.name  # not given: the TOML file or the default
        assert action.help and not action.help.startswith("(default"), field.name
        assert action.help.endswith(f"(default: {_default_text(field.default)})"), field.name
    for name in ("zone", "weight"):
        default = NodeSpec.__dataclass_fields__[name].default
        assert (actions[name].help or "").endswith(f"(default: {default})")


def test_serve_help_shows_every_setting_with_its_default() -> None:
    result = subprocess.run([sys.executable, "-m", "kvcheck.store", "serve", "--help"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "1000"})
    assert result.returncode == 0, result.stderr
    options = re.split(r"\n(?=  -)", result.stdout)  # one entry per option, with its help
    for setting in SETTINGS:
        (text,) = [o for o in options if re.match(rf"  {setting.flag}[ ,\n]", o)]
        assert " ".join(text.split()).endswith(
            f"(default: {_default_text(setting.default)})"), setting.name


def test_true_false_settings_are_flags_that_override_the_file(tmp_path: Path) -> None:
    def sloppy(*argv: str) -> bool:
        return node_config(build_parser().parse_args(["serve", *NODE, *argv])).cluster \
            .sloppy_quorum

    assert sloppy() is ClusterConfig().sloppy_quorum is True
    assert sloppy("--no-sloppy-quorum") is False
    strict = tmp_path / "strict.toml"
    strict.write_text("[cluster]\nsloppy_quorum = false\n")
    assert sloppy("--config", str(strict)) is False
    assert sloppy("--config", str(strict), "--sloppy-quorum") is True


def test_flags_made_from_settings_read_back_as_the_same_settings() -> None:
    values = {"n": 5, "w": 3, "sloppy_quorum": False, "versioning": "lww"}
    args = build_parser().parse_args(["serve", *NODE, *as_flags(values)])
    assert {name: getattr(args, name) for name in values} == values
