"""Typed configuration, validated once: defaults < YAML file < environment < CLI flags.

Environment variables are ``RSTACK_<SECTION>__<FIELD>`` (e.g. ``RSTACK_LEVEL0__BATCH_SIZE=4``);
CLI flags arrive as dotted keys (``{"level0.batch_size": 4}``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rstack.errors import ConfigError

FEATURE_SETS = ("seed", "extended", "scaled")
BASELINES = ("single_rf", "gbt", "har_logit")
# Level-0 learners: Spark's RandomForestClassifier, or xgboost's PySpark estimator grown as a random
# forest (an optional dependency: pip install 'rstack[xgboost]').
LEARNERS = ("random_forest", "xgboost_rf")
XGBOOST_INSTALL = "pip install 'rstack[xgboost]'"
ENV_PREFIX = "RSTACK_"


@dataclass(frozen=True)
class FeatureConfig:
    # scaled: volatility in units of each symbol's own scale, HAR windows, seasonality (volfeatures.py)
    feature_set: str = "scaled"
    rv_windows: tuple[int, ...] = (5, 10, 20, 50)
    volume_z_window: int = 20
    # Largest step between consecutive candles, in bars, that lags and windows may span; after a
    # wider gap every window restarts (warm-up again), so no feature silently bridges missing data.
    max_gap_bars: int = 1
    # Windows of the scaled set, defined in time so they follow the candle interval: the label
    # horizon, these in-between ones, a day and a week (HAR's three are horizon, day, week).
    mid_windows: tuple[str, ...] = ("4h", "3d")
    day: str = "1d"
    week: str = "7d"
    # The intraday seasonal profile averages the same time of day over this many previous days.
    seasonal_days: int = 7
    # A long window is defined when at least this share of its candles is present (time-based windows:
    # a missing candle is a hole in the window, not a reason to restart it).
    min_fill: float = 0.8


@dataclass(frozen=True)
class LabelConfig:
    horizon: int = 5
    label_quantile: float = 0.5


@dataclass(frozen=True)
class SplitConfig:
    # L0-train, L1-fit, L2-fit, test: consecutive in time, one global cutoff set.
    fractions: tuple[float, float, float, float] = (0.7, 0.1, 0.1, 0.1)
    embargo: int = 0
    min_train_rows: int = 100
    # Use only candles before this fraction of the data's time range (walk-forward folds set it;
    # the cut is applied to the raw candles, before any feature or label is computed).
    until: float = 1.0


@dataclass(frozen=True)
class Level0Config:
    batch_size: int = 10
    concurrency: int = 2
    # Attempts after the first for a failed batch (task error, lost Spark host or executor).
    max_retries: int = 2
    num_trees: int = 100
    max_depth: int = 10
    seed: int = 42
    learner: str = "random_forest"
    # Refit each Level-0 model on L0-train + L1-fit + L2-fit once its L0-train model has produced the
    # meta-levels' training predictions; the refitted model scores test (and is what serving uses), so
    # Level 0 is not 20 % of the history older than the baselines it is compared with.
    refit: bool = False


@dataclass(frozen=True)
class Level1Config:
    num_trees: int = 50
    max_depth: int = 8
    seed: int = 42
    # Feature-weighted stacking: features Level 1 sees beside the Level-0 probabilities.
    context: tuple[str, ...] = ("lrv_1d", "lrv_7d", "lseas_h", "tod_sin", "tod_cos")


@dataclass(frozen=True)
class Level2Config:
    max_iter: int = 100
    reg_param: float = 0.01
    elastic_net_param: float = 0.5
    # Skip connections: Level 2 sees every Level-0 probability beside Level 1's, so it is more than a
    # monotone map of Level 1.
    skip: bool = True


@dataclass(frozen=True)
class EvalConfig:
    threshold: float = 0.5
    # Baselines fitted beside the stack, scored on test: single_rf (one RandomForest like Level 0's on
    # all symbols' L0-train rows) and gbt (a GBTClassifier on L0-train + L1-fit + L2-fit rows).
    # har_logit: logistic regression on log realized volatility over horizon, day and week (scaled).
    baselines: tuple[str, ...] = ("single_rf", "gbt", "har_logit")


@dataclass(frozen=True)
class RuntimeConfig:
    address: str | None = None
    num_cpus: int | None = None
    num_executors: int = 1
    executor_cores: int = 2
    executor_memory: str = "2g"
    driver_memory: str = "2g"
    shuffle_partitions: int = 4
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    ray_temp_dir: str | None = None
    # Address the Spark driver and its UI bind to. 127.0.0.1 keeps the UI off the network and
    # works when every Ray node is on this machine; "auto" lets Spark pick the host's address,
    # which a cluster whose executors run on other hosts needs.
    spark_bind_address: str = "127.0.0.1"
    # RayDP placement group strategy for the executors (SPREAD puts them on as many nodes as it
    # can, PACK on as few); null lets Ray place each executor actor where it fits.
    placement_strategy: str | None = None


# Keys that change how a run executes but not what it computes: a run may be resumed with others.
EXECUTION_ONLY = ("runtime", "level0.concurrency", "level0.max_retries")


@dataclass(frozen=True)
class Config:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    level0: Level0Config = field(default_factory=Level0Config)
    level1: Level1Config = field(default_factory=Level1Config)
    level2: Level2Config = field(default_factory=Level2Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with dotted-key overrides applied and validated."""
        return build_config(_merge(self.to_dict(), _nest(overrides, "override")))


def _nest(flat: Mapping[str, Any], origin: str) -> dict[str, dict[str, Any]]:
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"{origin}: key {key!r} must be SECTION.FIELD, e.g. level0.batch_size")
        nested.setdefault(section, {})[name] = value
    return nested


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
        out.setdefault(section, {}).update(values)
    return out


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn YAML/env/CLI values into the declared type, or say which key is wrong."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        elem = args[0]
        items = tuple(_coerce(v, elem, where) for v in value)
        if args[-1] is not Ellipsis and len(items) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(items)}: {value!r}")
        return items
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {hint!r}")


def build_config(raw: Mapping[str, Any]) -> Config:
    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    for section, values in raw.items():
        if section not in hints:
            known = ", ".join(hints)
            raise ConfigError(f"unknown config section {section!r}; known sections: {known}")
        cls = hints[section]
        field_hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in (values or {}).items():
            if name not in field_hints:
                known = ", ".join(field_hints)
                raise ConfigError(f"unknown config key {section}.{name}; known keys: {known}")
            kwargs[name] = _coerce(value, field_hints[name], f"{section}.{name}")
        sections[section] = cls(**kwargs)
    config = Config(**sections)
    validate(config)
    return config


def validate(c: Config) -> None:
    def need(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key} = {value!r} is invalid: {rule}")

    need(
        c.features.feature_set in FEATURE_SETS,
        "features.feature_set",
        c.features.feature_set,
        f"use one of {', '.join(FEATURE_SETS)}",
    )
    need(
        all(w >= 2 for w in c.features.rv_windows) and len(c.features.rv_windows) >= 2,
        "features.rv_windows",
        c.features.rv_windows,
        "give at least two windows, each >= 2 bars",
    )
    need(c.features.volume_z_window >= 2, "features.volume_z_window", c.features.volume_z_window, "use >= 2 bars")
    need(
        c.features.max_gap_bars >= 1,
        "features.max_gap_bars",
        c.features.max_gap_bars,
        "use >= 1 (1 = windows never span a missing candle)",
    )
    fc = c.features
    for key in ("day", "week"):
        need(
            _DURATION.match(str(getattr(fc, key)).lower()) is not None,
            f"features.{key}",
            getattr(fc, key),
            "write a duration such as 1d or 7d",
        )
    for w in fc.mid_windows:
        need(
            _DURATION.match(str(w).lower()) is not None,
            "features.mid_windows",
            fc.mid_windows,
            "write durations such as 4h or 3d",
        )
    need(
        duration_ms(fc.day) < duration_ms(fc.week),
        "features.week",
        fc.week,
        f"use a window longer than the day ({fc.day})",
    )
    need(fc.seasonal_days >= 1, "features.seasonal_days", fc.seasonal_days, "use >= 1 day")
    need(0 < fc.min_fill <= 1, "features.min_fill", fc.min_fill, "use a share in (0, 1]")
    from rstack.features.windows import table_columns  # here: features.py imports this module

    allowed = table_columns(fc)
    need(
        all(x in allowed for x in c.level1.context),
        "level1.context",
        c.level1.context,
        f"use columns of the training table for feature_set {fc.feature_set!r}: {', '.join(allowed)} (or [])",
    )
    need(c.label.horizon >= 1, "label.horizon", c.label.horizon, "use >= 1 bar")
    need(
        0.0 < c.label.label_quantile < 1.0,
        "label.label_quantile",
        c.label.label_quantile,
        "use a value strictly between 0 and 1",
    )
    f = c.split.fractions
    need(
        all(x > 0 for x in f) and abs(sum(f) - 1.0) < 1e-9,
        "split.fractions",
        f,
        "give four positive fractions (L0-train, L1-fit, L2-fit, test) that sum to 1",
    )
    need(0.0 < c.split.until <= 1.0, "split.until", c.split.until, "use a fraction in (0, 1]")
    need(
        set(c.eval.baselines) <= set(BASELINES),
        "eval.baselines",
        c.eval.baselines,
        f"use any of {', '.join(BASELINES)} (or an empty list)",
    )
    need(c.split.embargo >= 0, "split.embargo", c.split.embargo, "use >= 0 bars")
    need(c.split.min_train_rows >= 1, "split.min_train_rows", c.split.min_train_rows, "use >= 1")
    need(c.level0.batch_size >= 1, "level0.batch_size", c.level0.batch_size, "use >= 1")
    need(c.level0.concurrency >= 1, "level0.concurrency", c.level0.concurrency, "use >= 1")
    need(0 <= c.level0.max_retries <= 10, "level0.max_retries", c.level0.max_retries, "use 0..10")
    need(c.level0.learner in LEARNERS, "level0.learner", c.level0.learner, f"use one of {', '.join(LEARNERS)}")
    if c.level0.learner == "xgboost_rf":
        missing = xgboost_missing()
        need(
            not missing,
            "level0.learner",
            c.level0.learner,
            f"it needs {' and '.join(missing)}, not installed here: {XGBOOST_INSTALL} (or use random_forest)",
        )
    for key in ("level0", "level1"):
        lvl = getattr(c, key)
        need(lvl.num_trees >= 1, f"{key}.num_trees", lvl.num_trees, "use >= 1")
        need(1 <= lvl.max_depth <= 30, f"{key}.max_depth", lvl.max_depth, "use 1..30 (Spark's limit)")
    need(c.level2.max_iter >= 1, "level2.max_iter", c.level2.max_iter, "use >= 1")
    need(c.level2.reg_param >= 0, "level2.reg_param", c.level2.reg_param, "use >= 0")
    need(0 <= c.level2.elastic_net_param <= 1, "level2.elastic_net_param", c.level2.elastic_net_param, "use 0..1")
    need(0 < c.eval.threshold < 1, "eval.threshold", c.eval.threshold, "use a value in (0, 1)")
    r = c.runtime
    need(r.num_executors >= 1, "runtime.num_executors", r.num_executors, "use >= 1")
    need(r.executor_cores >= 1, "runtime.executor_cores", r.executor_cores, "use >= 1")
    need(
        r.spark_bind_address == "auto" or re.fullmatch(r"[0-9A-Za-z.:-]+", r.spark_bind_address) is not None,
        "runtime.spark_bind_address",
        r.spark_bind_address,
        "use an IP address or host name (127.0.0.1 keeps Spark local) or auto",
    )
    need(
        r.placement_strategy in (None, "PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
        "runtime.placement_strategy",
        r.placement_strategy,
        "use null, PACK, SPREAD, STRICT_PACK or STRICT_SPREAD",
    )
    need(r.shuffle_partitions >= 1, "runtime.shuffle_partitions", r.shuffle_partitions, "use >= 1")
    need(
        r.num_cpus is None or r.num_cpus > r.num_executors * r.executor_cores,
        "runtime.num_cpus",
        r.num_cpus,
        "Ray needs more logical CPUs than executors x cores, or executors starve Ray tasks",
    )


_DURATION = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$")
_UNIT_MS = {"m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def duration_ms(text: str) -> int:
    """``"4h"`` -> 14,400,000; units m, h, d, w."""
    m = _DURATION.match(str(text).lower())
    if m is None:
        raise ConfigError(f"{text!r} is not a duration; write a number and a unit, e.g. 30m, 4h, 1d or 7d")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def xgboost_missing() -> list[str]:
    """The distributions the xgboost_rf learner needs that are not importable (found without importing)."""
    # xgboost.spark builds its models through xgboost's scikit-learn wrapper, hence scikit-learn.
    wanted = {"xgboost": "xgboost", "sklearn": "scikit-learn"}
    return [dist for module, dist in wanted.items() if importlib.util.find_spec(module) is None]


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    flat = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
            flat[f"{section}.{name}"] = value
    return _nest(flat, "environment")


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then the YAML file, then ``RSTACK_*`` env vars, then CLI overrides."""
    raw: dict[str, Any] = Config().to_dict()
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
        raw = _merge(raw, loaded)
    raw = _merge(raw, _from_env(os.environ if environ is None else environ))
    if overrides:
        raw = _merge(raw, _nest({k: v for k, v in overrides.items() if v is not None}, "override"))
    return build_config(raw)


def result_config(cfg: Config | Mapping[str, Any]) -> dict[str, Any]:
    """The part of a config that decides a run's results (what a resumed run must share)."""
    # Through JSON, so a config read back from a run record (lists) equals a live one (tuples). A
    # record written before a key existed gets that key's default (e.g. level0.learner: random_forest,
    # which is what such a run used), so it still resumes and compares equal.
    raw = cfg.to_dict() if isinstance(cfg, Config) else _merge(Config().to_dict(), dict(cfg))
    out = json.loads(json.dumps(raw))
    for key in EXECUTION_ONLY:
        section, _, name = key.partition(".")
        if name:
            out.get(section, {}).pop(name, None)
        else:
            out.pop(section, None)
    return out
