"""Configuration: TOML files, flags over files, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvcheck.store.cli import build_parser
from kvcheck.store.cli.serve import node_config
from kvcheck.store.config import Address, ClusterConfig, ConfigError, parse_peers

TOML = """
node_id = "n1"
listen = "127.0.0.1:7001"
data_dir = "data/n1"
zone = "a"

[cluster]
n = 3
w = 1
versioning = "lww"

[peers]
n2 = "127.0.0.1:7002"
n3 = { address = "127.0.0.1:7003", zone = "b", weight = 2 }
"""


def config_from(argv: list[str]):  # type: ignore[no-untyped-def]
    return node_config(build_parser().parse_args(["serve", *argv]))


def test_a_toml_file_configures_a_node_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "n1.toml"
    path.write_text(TOML)
    config = config_from(["--config", str(path), "--w", "2", "--fsync", "interval"])
    assert config.me.node_id == "n1" and config.me.zone == "a"
    assert config.me.address == Address("127.0.0.1", 7001)
    assert [(p.node_id, p.zone, p.weight) for p in config.peers] == [
        ("n2", "default", 1), ("n3", "b", 2)]
    assert (config.cluster.n, config.cluster.w, config.cluster.r) == (3, 2, 2)
    assert (config.cluster.versioning, config.cluster.fsync) == ("lww", "interval")
    assert config.data_dir == Path("data/n1")


BASE = 'node_id = "n1"\nlisten = "127.0.0.1:1"\ndata_dir = "d"\n'


@pytest.mark.parametrize(("text", "message"), [
    (BASE + 'colour = "red"', "unknown setting"),
    (BASE + "[cluster]\nquorum = 2", "unknown cluster setting"),
    ("node_id = ", "n1.toml"),
    (BASE + "[cluster]\nn = 5", "n=5 needs at least 5 nodes"),
    (BASE + "[peers]\nn2 = 7", "peer n2 must be"),
])
def test_bad_files_give_errors_that_name_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "n1.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config_from(["--config", str(path)])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"w": 4}, "w and r must be between 1 and n=3"),
    ({"r": 0}, "r must be a positive integer"),
    ({"versioning": "newest"}, "versioning must be"),
    ({"fsync": "sometimes"}, "fsync must be"),
    ({"siblings_warning": 30, "siblings_max": 20}, "siblings_warning .30. must not exceed"),
    ({"http_max_connections": 0}, "http_max_connections must be a positive integer"),
])
def test_cluster_settings_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClusterConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["n2", "n2=nowhere", "n2=host:99999", "=h:1"])
def test_bad_peer_lists_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_peers(text)


def test_missing_required_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="missing --node-id, --listen, --data-dir"):
        config_from([])


def test_duplicate_node_ids_are_refused() -> None:
    with pytest.raises(ConfigError, match="unique"):
        config_from(["--node-id", "n1", "--listen", "h:1", "--data-dir", "d",
                     "--peers", "n1=h:2"])
