from __future__ import annotations

from pathlib import Path

import pytest

from rstack.config import Config, load_config
from rstack.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_laptop_yaml_is_the_builtin_default() -> None:
    # The CLI falls back to the dataclass defaults when configs/ is not shipped; they must agree.
    assert load_config(ROOT / "configs" / "laptop.yaml", environ={}) == Config()


def test_precedence_yaml_env_cli(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("level0:\n  batch_size: 4\n  concurrency: 3\nlabel:\n  horizon: 7\n")
    env = {"RSTACK_LEVEL0__BATCH_SIZE": "6", "RSTACK_SPLIT__FRACTIONS": "0.6,0.2,0.1,0.1"}
    cfg = load_config(path, {"level0.batch_size": 8}, environ=env)
    assert cfg.level0.batch_size == 8  # CLI beats env beats YAML
    assert cfg.level0.concurrency == 3  # YAML beats default
    assert cfg.label.horizon == 7
    assert cfg.split.fractions == (0.6, 0.2, 0.1, 0.1)  # env parsed into the typed tuple
    assert load_config(path, environ=env).level0.batch_size == 6


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "match"),
    [
        ("", {"level0.batch_size": 0}, r"level0.batch_size = 0 is invalid"),
        ("", {"label.label_quantile": 1.5}, r"label.label_quantile = 1.5 is invalid"),
        ("", {"features.feature_set": "fancy"}, r"use one of seed, extended"),
        ("split:\n  fractions: [0.5, 0.5, 0.1, 0.1]\n", {}, r"sum to 1"),
        ("split:\n  fractions: [0.5, 0.5]\n", {}, r"expected 4 values"),
        ("level0:\n  num_trees: many\n", {}, r"level0.num_trees: expected an integer, got 'many'"),
        ("level9:\n  x: 1\n", {}, r"unknown config section 'level9'"),
        ("level0:\n  trees: 5\n", {}, r"unknown config key level0.trees"),
        ("- just\n- a list\n", {}, r"must hold a mapping"),
        ("a: [1,\n", {}, r"not valid YAML"),
        ("", {"runtime.num_cpus": 2}, r"more logical CPUs than executors"),
        ("", {"label.horizon": 0}, r"label.horizon = 0 is invalid"),
    ],
)
def test_bad_config_names_key_value_and_fix(tmp_path: Path, yaml_text: str, overrides: dict, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, overrides, environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})
