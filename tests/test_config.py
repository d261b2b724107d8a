from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from rstack.config import Config, Level0Config, build_config, load_config
from rstack.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_laptop_yaml_is_the_builtin_default() -> None:
    # The CLI falls back to the dataclass defaults when configs/ is not shipped; they must agree.
    assert load_config(ROOT / "configs" / "laptop.yaml", environ={}) == Config()


def test_default_baselines_and_heaps() -> None:
    # Chosen for cost (issue 20, docs/benchmarks.md): the single forest over all symbols refits as many
    # rows as all of Level 0, so it is opt-in; the GBT (the strongest baseline on validation) stays on.
    cfg = Config()
    assert cfg.eval.baselines == ("gbt", "har_logit")
    assert (cfg.runtime.executor_memory, cfg.runtime.driver_memory) == ("1g", "1g")


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


def test_env_text_is_parsed_into_the_declared_types() -> None:
    env = {
        "RSTACK_RUNTIME__NUM_CPUS": "",
        "RSTACK_RUNTIME__PLACEMENT_STRATEGY": "null",
        "RSTACK_RUNTIME__DASHBOARD": "off",
        "RSTACK_EVAL__BASELINES": "",
        "RSTACK_LEVEL1__CONTEXT": "lrv_1d, tod_sin",
        "RSTACK_LEVEL0__REFIT": "yes",
        "RSTACK_FEATURES__MIN_FILL": "0.5",
    }
    cfg = load_config(None, {"runtime.executor_memory": 2048}, environ=env)
    assert (cfg.runtime.num_cpus, cfg.runtime.placement_strategy, cfg.runtime.dashboard) == (None, None, False)
    assert (cfg.eval.baselines, cfg.level1.context) == ((), ("lrv_1d", "tod_sin"))
    assert (cfg.level0.refit, cfg.features.min_fill, cfg.runtime.executor_memory) == (True, 0.5, "2048")


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
        # The rule (range, choices or fix) after the value.
        ("", {"label.label_quantile": 0}, r"label.label_quantile = 0 is invalid: use a value in \(0, 1\)"),
        ("", {"features.min_fill": 1.5}, r"features.min_fill = 1.5 is invalid: use a value in \(0, 1\]"),
        ("", {"level0.max_depth": 31}, r"level0.max_depth = 31 is invalid: use 1..30 \(Spark's limit\)"),
        ("", {"level0.max_retries": -1}, r"level0.max_retries = -1 is invalid: use 0..10"),
        ("", {"split.embargo": -1}, r"split.embargo = -1 is invalid: use >= 0 \(bars\)"),
        ("", {"level2.reg_param": -0.5}, r"level2.reg_param = -0.5 is invalid: use >= 0"),
        ("", {"runtime.placement_strategy": "X"}, r"'X' is invalid: use one of null, PACK, SPREAD, STRICT_PACK"),
        ("", {"eval.baselines": "gbt,rf"}, r"eval.baselines = 'gbt,rf' is invalid: use any of single_rf, gbt"),
        ("", {"features.rv_windows": [5, 1]}, r"features.rv_windows = \[5, 1\] is invalid: give at least two"),
        ("", {"features.mid_windows": "4h,soon"}, r"features.mid_windows = '4h,soon' is invalid: write a duration"),
        ("", {"features.week": "12h"}, r"features.week = '12h' is invalid: use a window longer than the day \(1d\)"),
        ("", {"runtime.spark_bind_address": "a b"}, r"'a b' is invalid: use an IP address or host name"),
        ("", {"tracking.register": "m"}, r"tracking.register = 'm' is invalid: set tracking.uri \(--mlflow URI\)"),
        # Values that are not of the key's type.
        ("level0:\n  num_trees: yes\n", {}, r"level0.num_trees: expected an integer, got True"),
        ("", {"level0.num_trees": 2.5}, r"level0.num_trees: expected an integer, got 2.5"),
        ("", {"eval.threshold": "half"}, r"eval.threshold: expected a number, got 'half'"),
        ("", {"runtime.dashboard": "maybe"}, r"runtime.dashboard: expected true/false, got 'maybe'"),
        ("", {"runtime.executor_memory": [2]}, r"runtime.executor_memory: expected text, got \[2\]"),
        ("", {"split.fractions": 1}, r"split.fractions: expected a list, got 1"),
        ("", {"split.fractions": [0.2] * 5}, r"split.fractions: expected 4 values, got 5"),
        ("level0: 3\n", {}, r"config section 'level0' must be a mapping, got 3"),
        ("", {"level0": 3}, r"key 'level0' must be SECTION.FIELD"),
    ],
)
def test_bad_config_names_key_value_and_fix(tmp_path: Path, yaml_text: str, overrides: dict, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path, overrides, environ={})
    for pydantic_words in ("Input should", "validation error", "pydantic", "type="):
        assert pydantic_words not in str(info.value)


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        ("yaml", r"level0.num_trees = 0 is invalid: use >= 1 \(from config file \S+c.yaml\)$"),
        ("env", r"level0.num_trees = '0' is invalid: use >= 1 \(from environment variable RSTACK_LEVEL0__NUM_TREES\)$"),
        ("flag", r"level0.num_trees = 0 is invalid: use >= 1 \(from command-line flag\)$"),
    ],
)
def test_error_names_where_the_value_was_set(tmp_path: Path, layer: str, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("level0:\n  num_trees: 0\n" if layer == "yaml" else "")
    environ = {"RSTACK_LEVEL0__NUM_TREES": "0"} if layer == "env" else {}
    with pytest.raises(ConfigError, match=match):
        load_config(path, {"level0.num_trees": 0} if layer == "flag" else {}, environ=environ)


def test_unknown_keys_and_cross_key_rules_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key level0.trees; .* \(from environment variable RSTACK_"):
        load_config(None, environ={"RSTACK_LEVEL0__TREES": "5"})
    path = tmp_path / "c.yaml"
    path.write_text("runtime:\n  num_cpus: 2\n")
    with pytest.raises(ConfigError, match=r"runtime.num_cpus = 2 is invalid: Ray needs .* \(from config file "):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match=r"level0.num_trees = 0 is invalid: use >= 1 \(from Config.replace\)"):
        Config().replace({"level0.num_trees": 0})


def test_every_bad_key_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"level0.batch_size": 0, "label.horizon": "soon", "level0.trees": 1}, environ={})
    message = str(info.value)
    for part in ("level0.batch_size = 0 is invalid", "label.horizon: expected an integer", "key level0.trees"):
        assert part in message


def test_configs_pickle_hash_and_round_trip_through_a_manifest() -> None:
    cfg = load_config(ROOT / "configs" / "laptop.yaml", {"level0.num_trees": 7}, environ={})
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # shipped to Ray workers
    assert hash(pickle.loads(pickle.dumps(cfg))) == hash(cfg)
    assert build_config(json.loads(json.dumps(cfg.to_dict()))) == cfg  # manifest JSON: lists, not tuples
    assert cfg.replace({"level0.num_trees": 100}) == Config()


def test_a_section_built_in_code_is_checked_too() -> None:
    assert dataclasses.replace(Level0Config(), refit=True).refit
    with pytest.raises(ValidationError):
        dataclasses.replace(Level0Config(), num_trees=0)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_level1_context_must_be_a_training_table_column(tmp_path: Path) -> None:
    from rstack.features.windows import check_context
    from rstack.training.driver import train

    cfg = load_config(None, {"level1.context": "nope"}, environ={})
    match = r"level1.context = \('nope',\) is invalid: use columns of the training table for feature_set 'scaled'"
    with pytest.raises(ConfigError, match=match):
        check_context(cfg)
    # A run refuses it before it reads data or starts Ray (no runtime is needed to get the error).
    with pytest.raises(ConfigError, match=match):
        train(tmp_path / "no-data", tmp_path / "models", cfg, runtime=None)  # type: ignore[arg-type]
    assert not (tmp_path / "models").exists()
    check_context(load_config(None, {"level1.context": "lrv_1d"}, environ={}))  # a scaled column: fine
