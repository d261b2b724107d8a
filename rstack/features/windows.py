"""Backward-looking window features and the forward-volatility label, all per symbol in time order.

Every window is ``Window.partitionBy("symbol").orderBy("open_time")`` with frames ending at the
current row (features) or starting after it (label only). A rolling value is defined only when its
window is full, so warm-up rows are null and get dropped (and counted) by the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rstack.config import Config, FeatureConfig
from rstack.errors import ConfigError
from rstack.features.vol import REPAIR_FLAGS as VOL_REPAIR_FLAGS
from rstack.features.vol import add_raw_vol, raw_columns, scaled_names

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, WindowSpec

SEED_FEATURES = (
    "lag1_close",
    "lag2_close",
    "lag3_close",
    "return_1",
    "return_2",
    "hl_spread",
    "std_5",
    "std_10",
    "lag1_volume",
    "volume_change",
    "mean_5",
    "price_ma_ratio",
)

# Repairs applied instead of dividing by zero; each is counted and reported by the caller.
REPAIR_FLAGS = ("repair_zero_prev_volume", "repair_flat_long_rv", "repair_flat_volume_window")


def extended_names(cfg: FeatureConfig) -> tuple[str, ...]:
    short, long = min(cfg.rv_windows), max(cfg.rv_windows)
    return (
        "log_return_1",
        *(f"rv_{w}" for w in cfg.rv_windows),
        f"rv_ratio_{short}_{long}",
        "log_hl",
        "log_hl_ma_10",
        f"volume_z_{cfg.volume_z_window}",
    )


def feature_names(cfg: FeatureConfig) -> list[str]:
    if cfg.feature_set == "seed":
        return list(SEED_FEATURES)
    if cfg.feature_set == "scaled":
        return scaled_names(cfg)
    return [*SEED_FEATURES, *extended_names(cfg)]


def table_columns(cfg: FeatureConfig, with_vol: bool = True) -> list[str]:
    """Feature columns of the training table: the set's features, then (``with_vol``) the scaled ones,
    carried whatever the feature set for the HAR-logit baseline and for Level 1's context."""
    feats = feature_names(cfg)
    return [*feats, *(c for c in scaled_names(cfg) if with_vol and c not in feats)]


def check_context(cfg: Config) -> None:
    """Level 1's context features must be columns of the training table. Checked where a run starts,
    not in the config: which columns a feature set makes is the features' to know."""
    allowed = table_columns(cfg.features)
    if not set(cfg.level1.context) <= set(allowed):
        raise ConfigError(
            f"level1.context = {cfg.level1.context!r} is invalid: use columns of the training table for "
            f"feature_set {cfg.features.feature_set!r}: {', '.join(allowed)} (or [])"
        )


def needs_vol(features: FeatureConfig, context: tuple[str, ...], baselines: tuple[str, ...]) -> bool:
    """Whether training needs the time-based volatility columns: the scaled set, a context feature
    outside the set, or the HAR-logit baseline. Without them seed/extended runs work on any interval."""
    outside = set(context) - set(feature_names(features))
    return features.feature_set == "scaled" or bool(outside) or "har_logit" in baselines


def warmup_rows(cfg: FeatureConfig, horizon: int) -> int:
    """Leading rows of each gap-free run whose row-based windows cannot be defined yet.

    Time-based windows (``features/vol.py``) say so in ``_hist_ok`` instead. Any null after these rows
    comes from a bad value (a price <= 0, a NaN), not from warm-up.
    """
    # lag3 needs 3 earlier rows, std_10 9, the trailing rv of the baseline `horizon` returns.
    if cfg.feature_set == "scaled":
        return horizon
    rows = max(3, 9, horizon)
    if cfg.feature_set == "extended":
        rows = max(rows, *cfg.rv_windows, cfg.volume_z_window, 10)
    return rows


def status_inputs(cfg: FeatureConfig, with_vol: bool) -> list[str]:
    """The columns that must be defined (before scaling) for a row's features to be."""
    base = [] if cfg.feature_set == "scaled" else feature_names(cfg)
    return [*base, *(raw_columns(cfg) if with_vol else [])]


def history_missing(cfg: FeatureConfig, horizon: int, with_vol: bool) -> Column:
    """True for rows without enough history: a symbol's first rows, the rows right after a gap, or
    a time-based window under its minimum fill."""
    from pyspark.sql import functions as F

    missing = row_in_run() <= warmup_rows(cfg, horizon)
    return (missing | ~F.col("_hist_ok")) if with_vol else missing


def bad_bar(with_vol: bool) -> Column:
    """True for a candle whose own prices or volume are unusable (null, NaN, inf, <= 0): invalid,
    whatever its history. Training rejects such rows before; serving scores around them."""
    from pyspark.sql import functions as F

    return F.col("_bad_bar") if with_vol else F.lit(False)


def repair_columns(cfg: FeatureConfig, with_vol: bool) -> tuple[list[str], list[str]]:
    """The repair flags training and predict count on usable rows: (those of the row-window
    features, those the scaling of the volatility columns sets)."""
    rows = [] if cfg.feature_set == "scaled" else ["repair_zero_prev_volume"]
    if cfg.feature_set == "extended":
        rows += [f for f in REPAIR_FLAGS if f != "repair_zero_prev_volume"]
    return rows, list(VOL_REPAIR_FLAGS) if with_vol else []


def row_status(cfg: FeatureConfig, horizon: int, with_vol: bool, labelled: bool) -> Column:
    """The one rule of what a featurized row is: ``ok`` (scorable), ``warmup`` (not enough history),
    ``invalid`` (a value or feature undefined) and, for training's ``labelled`` rows, ``no_label``
    (no future to label: a symbol's last ``horizon`` rows, or the rows before a gap)."""
    from pyspark.sql import functions as F

    status = (
        F.when(bad_bar(with_vol), "invalid")
        .when(history_missing(cfg, horizon, with_vol), "warmup")
        # The trailing-volatility baseline is scored beside every labelled row.
        .when(undefined([*status_inputs(cfg, with_vol), *(["trail_rv"] if labelled else [])]), "invalid")
    )
    if labelled:
        status = status.when(F.col("label_end_time").isNull(), "no_label").when(undefined(["fwd_rv"]), "invalid")
    return status.otherwise("ok")


def undefined(cols: list[str]) -> Column:
    """True where any column is null, NaN or infinite. Spark gives null (not inf) for x / 0 and
    log(x <= 0); NaN and inf only come from NaN or inf in the input."""
    import math

    from pyspark.sql import functions as F

    out = F.lit(False)
    for c in cols:
        out = out | F.col(c).isNull() | F.isnan(c) | F.col(c).isin(math.inf, -math.inf)
    return out


def _ordered() -> WindowSpec:
    """Per symbol and per gap-free run, in time order: the frame of every feature and label."""
    from pyspark.sql import Window

    return Window.partitionBy("symbol", "_run").orderBy("open_time")


def with_runs(df: DataFrame, cfg: FeatureConfig, bar_ms: int) -> DataFrame:
    """Adds ``_run``: a counter per symbol that steps after every gap wider than ``max_gap_bars``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("symbol").orderBy("open_time")
    gap = (F.col("open_time") - F.lag("open_time").over(w)) > F.lit(cfg.max_gap_bars * bar_ms)
    step = F.coalesce(gap.cast("int"), F.lit(0))
    return df.withColumn("_run", F.sum(step).over(w.rowsBetween(Window.unboundedPreceding, 0)))


def row_in_run() -> Column:
    from pyspark.sql import functions as F

    return F.row_number().over(_ordered())


def _full(fn: str, col: Column, start: int, end: int) -> Column:
    """Aggregate over rows [start, end] relative to the current one; null unless the frame is full."""
    from pyspark.sql import functions as F

    frame = _ordered().rowsBetween(start, end)
    size = end - start + 1
    agg = getattr(F, fn)(col).over(frame)
    return F.when(F.count(col).over(frame) == size, agg)


def _rms(col: Column, start: int, end: int) -> Column:
    from pyspark.sql import functions as F

    return F.sqrt(_full("avg", col * col, start, end))


def add_features(df: DataFrame, cfg: FeatureConfig, horizon: int, bar_ms: int, with_vol: bool = True) -> DataFrame:
    """Adds ``_run``, feature columns, repair flags, ``trail_rv`` (baseline), ``fwd_rv`` and
    ``label_end_time``. ``bar_ms`` is the candle interval, for gap detection. ``with_vol`` adds the
    unscaled time-based volatility columns (``features/vol.py``) when :func:`needs_vol` says a run needs them
    (the scaled set always does)."""
    from pyspark.sql import functions as F

    if with_vol or cfg.feature_set == "scaled":
        df = add_raw_vol(df, cfg, horizon, bar_ms)
    df = with_runs(df, cfg, bar_ms)
    w = _ordered()
    if cfg.feature_set == "scaled":
        df = df.withColumn("_lr", F.log(F.col("close") / F.lag("close", 1).over(w)))
        lr = F.col("_lr")
        return df.select(
            "*",
            _rms(lr, -(horizon - 1), 0).alias("trail_rv"),
            _rms(lr, 1, horizon).alias("fwd_rv"),
            F.lead(F.col("open_time"), horizon).over(w).alias("label_end_time"),
        ).drop("_lr")
    close, volume = F.col("close"), F.col("volume")
    out = df.select(
        "*",
        F.lag(close, 1).over(w).alias("lag1_close"),
        F.lag(close, 2).over(w).alias("lag2_close"),
        F.lag(close, 3).over(w).alias("lag3_close"),
        F.lag(volume, 1).over(w).alias("lag1_volume"),
        _full("stddev_samp", close, -4, 0).alias("std_5"),
        _full("stddev_samp", close, -9, 0).alias("std_10"),
        _full("avg", close, -4, 0).alias("mean_5"),
        F.log(close / F.lag(close, 1).over(w)).alias("log_return_1"),
        F.log(F.col("high") / F.col("low")).alias("log_hl"),
    )
    prev_vol = F.col("lag1_volume")
    out = out.select(
        "*",
        (close / F.col("lag1_close") - 1).alias("return_1"),
        (close / F.col("lag2_close") - 1).alias("return_2"),
        ((F.col("high") - F.col("low")) / close).alias("hl_spread"),
        # Zero-volume candles are real (Binance fills empty bars); a change from zero is undefined,
        # so it is set to 0 and counted rather than left as inf.
        F.when(prev_vol > 0, volume / prev_vol - 1).when(prev_vol.isNotNull(), F.lit(0.0)).alias("volume_change"),
        F.when(prev_vol.isNotNull(), prev_vol == 0).alias("repair_zero_prev_volume"),
        (close / F.col("mean_5")).alias("price_ma_ratio"),
    )

    lr = F.col("log_return_1")
    rv_cols = [_rms(lr, -(win - 1), 0).alias(f"rv_{win}") for win in cfg.rv_windows]
    zw = cfg.volume_z_window
    out = out.select(
        "*",
        *rv_cols,
        _full("avg", F.col("log_hl"), -9, 0).alias("log_hl_ma_10"),
        # Trailing window excludes the current bar, so the z-score asks "is this bar unusual".
        _full("avg", volume, -zw, -1).alias("_vol_mean"),
        _full("stddev_samp", volume, -zw, -1).alias("_vol_std"),
        _rms(lr, -(horizon - 1), 0).alias("trail_rv"),
        _rms(lr, 1, horizon).alias("fwd_rv"),
        F.lead(F.col("open_time"), horizon).over(w).alias("label_end_time"),
    )
    short, long = min(cfg.rv_windows), max(cfg.rv_windows)
    rv_s, rv_l = F.col(f"rv_{short}"), F.col(f"rv_{long}")
    vmean, vstd = F.col("_vol_mean"), F.col("_vol_std")
    out = out.select(
        "*",
        F.when(rv_l > 0, rv_s / rv_l).when(rv_l.isNotNull(), F.lit(1.0)).alias(f"rv_ratio_{short}_{long}"),
        F.when(rv_l.isNotNull(), rv_l == 0).alias("repair_flat_long_rv"),
        F.when(vstd > 0, (volume - vmean) / vstd).when(vstd.isNotNull(), F.lit(0.0)).alias(f"volume_z_{zw}"),
        F.when(vstd.isNotNull(), vstd == 0).alias("repair_flat_volume_window"),
    )
    return out.drop("_vol_mean", "_vol_std")
