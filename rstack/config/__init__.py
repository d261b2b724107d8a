"""Typed configuration, validated once: defaults < YAML file < environment < CLI flags.

Environment variables are ``RSTACK_<SECTION>__<FIELD>`` (e.g. ``RSTACK_LEVEL0__BATCH_SIZE=4``);
CLI flags arrive as dotted keys (``{"level0.batch_size": 4}``). The sections are frozen pydantic
dataclasses that refuse unknown keys: their annotations coerce and range-check each value, model
validators check the rules between keys, and every failure is one ConfigError naming each bad key,
its value, the rule and where the value was set (``checks.translate``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from rstack.config import types as t
from rstack.config.checks import DURATION, Invalid, rule, source, translate
from rstack.errors import ConfigError

FeatureSet = Literal["seed", "extended", "scaled"]
Baseline = Literal["single_rf", "gbt", "har_logit"]
# Level-0 learners: Spark's RandomForestClassifier, or xgboost's PySpark estimator grown as a random
# forest (an optional dependency: pip install 'rstack[xgboost]').
Learner = Literal["random_forest", "xgboost_rf"]
Placement = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
FEATURE_SETS: tuple[str, ...] = typing.get_args(FeatureSet)
BASELINES: tuple[str, ...] = typing.get_args(Baseline)
LEARNERS: tuple[str, ...] = typing.get_args(Learner)
XGBOOST_INSTALL = "pip install 'rstack[xgboost]'"
ENV_PREFIX = "RSTACK_"
# Unknown keys are refused; YAML numbers are accepted where text is expected (executor_memory: 2048).
# Validators are built on first use, not on import: Ray workers import this to unpickle configs only.
SECTION = ConfigDict(extra="forbid", coerce_numbers_to_str=True, defer_build=True)
_UNIT_MS = {"m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


@dataclass(frozen=True, config=SECTION)
class FeatureConfig:
    # scaled: volatility in units of each symbol's own scale, HAR windows, seasonality (features/vol.py)
    feature_set: FeatureSet = "scaled"
    rv_windows: t.BarWindows = (5, 10, 20, 50)
    volume_z_window: Annotated[t.Int, Field(ge=2, description="bars")] = 20
    # Largest step between candles, in bars, a window may span; a wider gap restarts every window.
    max_gap_bars: Annotated[t.Int, Field(ge=1, description="1 = windows never span a missing candle")] = 1
    # Windows of the scaled set, defined in time so they follow the candle interval: the label
    # horizon, these in-between ones, a day and a week (HAR's three are horizon, day, week).
    mid_windows: Annotated[tuple[t.Duration, ...], t.Listed] = ("4h", "3d")
    day: t.Duration = "1d"
    week: t.Duration = "7d"
    # The intraday seasonal profile averages the same time of day over this many previous days.
    seasonal_days: Annotated[t.Int, Field(ge=1, description="days")] = 7
    # A long window is defined when this share of its candles is present (a missing one is a hole).
    min_fill: t.Share = 0.8

    @model_validator(mode="after")
    def _week_after_day(self) -> FeatureConfig:
        if duration_ms(self.week) <= duration_ms(self.day):
            raise Invalid(f"use a window longer than the day ({self.day})", "week", self.week)
        return self


@dataclass(frozen=True, config=SECTION)
class LabelConfig:
    horizon: Annotated[t.Int, Field(ge=1, description="bars")] = 5
    label_quantile: t.Open01 = 0.5


@dataclass(frozen=True, config=SECTION)
class SplitConfig:
    # L0-train, L1-fit, L2-fit, test: consecutive in time, one global cutoff set.
    fractions: Annotated[
        tuple[float, float, float, float],
        t.Listed,
        rule(
            lambda f: min(f) > 0 and abs(sum(f) - 1.0) < 1e-9,
            "give four positive fractions (L0-train, L1-fit, L2-fit, test) that sum to 1",
        ),
    ] = (0.7, 0.1, 0.1, 0.1)
    embargo: Annotated[t.Int, Field(ge=0, description="bars")] = 0
    min_train_rows: t.Count = 100
    # Only candles before this fraction of the time range, cut before any feature (walk-forward sets it).
    until: t.Share = 1.0


@dataclass(frozen=True, config=SECTION)
class Level0Config:
    batch_size: t.Count = 10
    concurrency: t.Count = 2
    # Attempts after the first for a failed batch (task error, lost Spark host or executor).
    max_retries: Annotated[t.Int, Field(ge=0, le=10)] = 2
    num_trees: t.Count = 100
    max_depth: t.Depth = 10
    min_instances_per_node: t.MinLeaf = 1
    feature_subset_strategy: t.SubsetStrategy = "auto"
    seed: t.Int = 42
    learner: Learner = "random_forest"
    # Refit each Level-0 model on L0-train..L2-fit after it scored the meta-levels' rows; the refit one
    # scores test and serves, so Level 0 is not 20 % of the history older than the baselines.
    refit: bool = False


@dataclass(frozen=True, config=SECTION)
class Level1Config:
    num_trees: t.Count = 50
    max_depth: t.Depth = 8
    min_instances_per_node: t.MinLeaf = 1
    feature_subset_strategy: t.SubsetStrategy = "auto"
    seed: t.Int = 42
    # Feature-weighted stacking: what Level 1 sees beside the Level-0 probabilities.
    context: Annotated[tuple[str, ...], t.Listed] = ("lrv_1d", "lrv_7d", "lseas_h", "tod_sin", "tod_cos")


@dataclass(frozen=True, config=SECTION)
class Level2Config:
    max_iter: t.Count = 100
    reg_param: Annotated[float, Field(ge=0)] = 0.01
    elastic_net_param: Annotated[float, Field(ge=0, le=1)] = 0.5
    # Skip connections: Level 2 also sees every Level-0 probability, not only a monotone map of Level 1.
    skip: bool = True


@dataclass(frozen=True, config=SECTION)
class EvalConfig:
    threshold: t.Open01 = 0.5
    # Baselines beside the stack, scored on test: gbt (GBTClassifier on L0-train..L2-fit), har_logit
    # (logistic regression on HAR's scaled log realized volatilities) and, opt-in, single_rf (one forest
    # like Level 0's on all symbols' L0-train rows: as many rows as all of Level 0, doubling the run).
    baselines: Annotated[tuple[Baseline, ...], t.Listed] = ("gbt", "har_logit")


@dataclass(frozen=True, config=SECTION)
class RuntimeConfig:
    address: Annotated[str | None, t.Nullable] = None
    num_cpus: Annotated[t.Int | None, t.Nullable] = None
    num_executors: t.Count = 1
    executor_cores: t.Count = 2
    # 1g each runs binance-5m at batch size 10 (docs/benchmarks.md); an executor's heap fills, so costs.
    executor_memory: str = "1g"
    driver_memory: str = "1g"
    shuffle_partitions: t.Count = 4
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: t.Int = 8265
    ray_temp_dir: Annotated[str | None, t.Nullable] = None
    # The Spark driver's and UI's address: 127.0.0.1 (all nodes here) or auto (executors on other hosts).
    spark_bind_address: t.BindAddress = "127.0.0.1"
    # The executors' placement group strategy (SPREAD: many nodes, PACK: few); null: Ray places each.
    placement_strategy: Annotated[Placement | None, t.Nullable] = None

    @model_validator(mode="after")
    def _cpus_for_ray(self) -> RuntimeConfig:
        if self.num_cpus is not None and self.num_cpus <= self.num_executors * self.executor_cores:
            text = "Ray needs more logical CPUs than executors x cores, or executors starve Ray tasks"
            raise Invalid(text, "num_cpus", self.num_cpus)
        return self


@dataclass(frozen=True, config=SECTION)
class TrackingConfig:
    uri: Annotated[str | None, t.Nullable] = None  # MLflow (http://..., file:..., sqlite:...); null: off
    experiment: str = "rstack"
    register: Annotated[str | None, t.Nullable] = None  # a model name: each run its next version

    @model_validator(mode="after")
    def _register_needs_uri(self) -> TrackingConfig:
        if self.register is not None and self.uri is None:
            raise Invalid("set tracking.uri (--mlflow URI): registering needs MLflow", "register", self.register)
        return self


# What a run recorded before these keys existed used (Spark's own forest defaults), where that is not
# the key's default now.
BEFORE_KEY: dict[str, Any] = {
    f"{level}.{key}": value
    for level in ("level0", "level1")
    for key, value in (("min_instances_per_node", 1), ("feature_subset_strategy", "auto"))
}
# Keys that change how a run executes but not what it computes: a run may be resumed with others.
EXECUTION_ONLY = ("runtime", "tracking", "level0.concurrency", "level0.max_retries")


@dataclass(frozen=True, config=SECTION)
class Config:
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    label: LabelConfig = dataclasses.field(default_factory=LabelConfig)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    level0: Level0Config = dataclasses.field(default_factory=Level0Config)
    level1: Level1Config = dataclasses.field(default_factory=Level1Config)
    level2: Level2Config = dataclasses.field(default_factory=Level2Config)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with dotted-key overrides applied and validated."""
        return _build({**_flatten(self.to_dict()), **overrides}, dict.fromkeys(overrides, "Config.replace"))


def build_config(raw: Mapping[str, Any]) -> Config:
    """A config from nested sections (``{"level0": {"num_trees": 5}}``); missing keys take their defaults."""
    return _build(_flatten(raw), {})


def validate(c: Config) -> None:
    """Raise ConfigError if ``c`` breaks a rule (construction already checks; this re-checks a copy)."""
    build_config(c.to_dict())


def _flatten(nested: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in nested.items():
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}{where}")
        flat.update({f"{section}.{name}": value for name, value in values.items()})
    return flat


def _nest(flat: Mapping[str, Any], sources: Mapping[str, str]) -> dict[str, Any]:
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"key {key!r} must be SECTION.FIELD, e.g. level0.batch_size{source(key, sources)}")
        nested.setdefault(section, {})[name] = value
    return nested


def _build(flat: Mapping[str, Any], sources: Mapping[str, str]) -> Config:
    nested = _nest(flat, sources)
    try:
        config = Config(**nested)
    except ValidationError as exc:
        raise ConfigError(translate(exc.errors(), Config, nested, sources)) from None
    if config.level0.learner == "xgboost_rf" and (missing := xgboost_missing()):
        text = f"it needs {' and '.join(missing)}, not installed here: {XGBOOST_INSTALL} (or use random_forest)"
        raise ConfigError(f"level0.learner = 'xgboost_rf' is invalid: {text}{source('level0.learner', sources)}")
    return config


def duration_ms(text: str) -> int:
    """``"4h"`` -> 14,400,000; units m, h, d, w."""
    m = DURATION.match(str(text).lower())
    if m is None:
        raise ConfigError(f"{text!r} is not a duration; write a number and a unit, e.g. 30m, 4h, 1d or 7d")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def xgboost_missing() -> list[str]:
    """The distributions the xgboost_rf learner needs that are not importable (found without importing)."""
    # xgboost.spark builds its models through xgboost's scikit-learn wrapper, hence scikit-learn.
    wanted = {"xgboost": "xgboost", "sklearn": "scikit-learn"}
    return [dist for module, dist in wanted.items() if importlib.util.find_spec(module) is None]


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then the YAML file, then ``RSTACK_*`` env vars, then CLI overrides."""
    flat: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing YAML file")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        flat = _flatten(loaded, f" (from config file {path})")
        sources = dict.fromkeys(flat, f"config file {path}")
    for name, value in (os.environ if environ is None else environ).items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            section, _, field = name[len(ENV_PREFIX) :].lower().partition("__")
            flat[f"{section}.{field}"], sources[f"{section}.{field}"] = value, f"environment variable {name}"
    for key, value in (overrides or {}).items():
        if value is not None:
            flat[key], sources[key] = value, "command-line flag"
    return _build(flat, sources)


def result_config(cfg: Config | Mapping[str, Any]) -> dict[str, Any]:
    """The part of a config that decides a run's results (what a resumed run must share)."""
    # Through JSON, so a config read back from a run record (lists) equals a live one (tuples). A
    # record written before a key existed gets the value such a run used: the key's default, or
    # BEFORE_KEY where the default has changed since; so it resumes only with what it was fitted with.
    if isinstance(cfg, Config):
        raw = cfg.to_dict()
    else:
        raw = _nest({**_flatten(Config().to_dict()), **BEFORE_KEY, **_flatten(cfg)}, {})
    out = json.loads(json.dumps(raw))
    for key in EXECUTION_ONLY:
        section, _, name = key.partition(".")
        if name:
            out.get(section, {}).pop(name, None)
        else:
            out.pop(section, None)
    return out
