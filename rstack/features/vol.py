"""Scale-free volatility features (feature set ``scaled``) and the HAR columns every run carries.

Two steps, because the scale is fitted:

1. :func:`add_raw_vol` needs no fitted state. On each symbol's full candle grid (missing candles
   become empty rows, so a window of N bars always spans N bars of time) it computes per-bar
   variances averaged over windows defined in time: squared log returns, Parkinson and
   Garman-Klass range estimators, the intraday seasonal profile (squared returns at the same time
   of day over the previous days), volume against its own weekly level, and the UTC time of day and
   of week. A window is defined when at least ``features.min_fill`` of its bars are present, so a
   missing live candle does not blank a symbol for a week; which rows lack history is in
   ``_hist_ok``.
2. :func:`scale_vol` puts every volatility in units of the symbol's own scale, its label threshold
   (the L0-train quantile of forward volatility, fitted on L0-train rows only and kept in the
   bundle): ``lrv_1d = ln(rv_1d / threshold)`` means the same for BTC and PEPE.

Windows are sums of cumulative sums (``cs_t - cs_{t-n}``): Spark recomputes a bounded sliding frame
row by row, which would cost O(rows x window) for a one-week window of 5-minute candles.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from rstack.config import FeatureConfig, duration_ms
from rstack.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
# Variances below this share of the squared scale are floored (flat windows of zero-volume candles),
# so ln(.) stays finite: the log-ratio floors at ln(1e-3) = -6.9; each floored row is counted.
VAR_FLOOR = 1e-6
SCALE_COL = "_scale"
LN2 = math.log(2.0)
REPAIR_FLAGS = ("repair_vol_floor", "repair_flat_volume_week")
# What needs these windows, and how to do without them on coarse candles.
COARSE_FIX = (
    "for such candles turn off what needs intraday windows: features.feature_set extended (or seed), "
    "level1.context [] and eval.baselines without har_logit"
)


def label(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def windows(cfg: FeatureConfig) -> list[str]:
    """Window labels, shortest first: ``h`` (the label horizon), the in-between ones, a day, a week."""
    timed = sorted({*cfg.mid_windows, cfg.day, cfg.week}, key=duration_ms)
    return ["h", *[label(w) for w in timed]]


def window_bars(cfg: FeatureConfig, horizon: int, bar_ms: int) -> dict[str, int]:
    """{window label: length in bars} at this candle interval; a window under 2 bars is an error."""
    out = {"h": horizon}
    for text in sorted({*cfg.mid_windows, cfg.day, cfg.week}, key=duration_ms):
        bars = duration_ms(text) // bar_ms
        if bars < 2:
            raise InputError(
                f"features window {text!r} is {bars} bar(s) of {bar_ms // 60_000}-minute candles; windows "
                f"need >= 2 bars: lengthen it in features.mid_windows/day/week, or, {COARSE_FIX}"
            )
        out[label(text)] = bars
    if DAY_MS // bar_ms < 2 * horizon:
        raise InputError(
            f"the intraday seasonal profile needs at least {2 * horizon} candles a day, these are "
            f"{bar_ms // 60_000}-minute candles; {COARSE_FIX}"
        )
    return out


def har_columns(cfg: FeatureConfig) -> list[str]:
    """HAR's three regressors: log realized volatility over the horizon, a day and a week (scaled)."""
    return ["lrv_h", f"lrv_{label(cfg.day)}", f"lrv_{label(cfg.week)}"]


def range_windows(cfg: FeatureConfig) -> list[str]:
    return ["h", label(cfg.day), label(cfg.week)]


def scaled_names(cfg: FeatureConfig) -> list[str]:
    wins, rng = windows(cfg), range_windows(cfg)
    day = label(cfg.day)
    return [
        *(f"lrv_{w}" for w in wins),
        *(f"lpk_{w}" for w in rng),
        *(f"lgk_{w}" for w in rng),
        "lseas_h",
        "zret_1",
        "zret_h",
        "lvol_h",
        f"lvol_{day}",
        "tod_sin",
        "tod_cos",
        "tow_sin",
        "tow_cos",
    ]


def raw_columns(cfg: FeatureConfig) -> list[str]:
    """The unscaled columns :func:`add_raw_vol` adds (checked for bad values before scaling)."""
    wins, rng = windows(cfg), range_windows(cfg)
    return [
        *(f"_var_r_{w}" for w in wins),
        *(f"_var_pk_{w}" for w in rng),
        *(f"_var_gk_{w}" for w in rng),
        "_var_seas",
        "_r1",
        "_zr_h",
        "_vmean_h",
        f"_vmean_{label(cfg.day)}",
        f"_vmean_{label(cfg.week)}",
    ]


def lookback_bars(cfg: FeatureConfig, horizon: int, bar_ms: int) -> int:
    """Bars of history a row needs: the longest window, or the seasonal profile's days back."""
    bars = window_bars(cfg, horizon, bar_ms)
    return max(max(bars.values()), cfg.seasonal_days * (DAY_MS // bar_ms)) + 1


def _on_grid(df: DataFrame, bar_ms: int) -> DataFrame:
    """``df`` plus an empty row (``_real`` false, prices null) for every missing candle of a symbol."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("symbol").orderBy("open_time")
    nexts = df.select("symbol", "open_time", F.lead("open_time").over(w).alias("_next"))
    t, nxt = F.col("open_time"), F.col("_next")
    # CASE WHEN evaluates the sequence only where there is a gap (a reversed range would be an error).
    missing = F.when(nxt - t > bar_ms, F.sequence(t + bar_ms, nxt - bar_ms, F.lit(bar_ms).cast("long")))
    filler = nexts.select("symbol", F.explode(missing).alias("open_time")).withColumn("_real", F.lit(False))
    return df.withColumn("_real", F.lit(True)).unionByName(filler, allowMissingColumns=True)


def add_raw_vol(df: DataFrame, cfg: FeatureConfig, horizon: int, bar_ms: int) -> DataFrame:
    """Adds :func:`raw_columns`, the time of day/week features and ``_hist_ok`` to every real row."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    bars = window_bars(cfg, horizon, bar_ms)
    day_bars = DAY_MS // bar_ms
    g = _on_grid(df, bar_ms)
    w = Window.partitionBy("symbol").orderBy("open_time")
    cum = w.rowsBetween(Window.unboundedPreceding, 0)
    c, o, hi, lo = (F.col(x) for x in ("close", "open", "high", "low"))
    # A candle with an unusable value (serving sees unvalidated input) is a hole like a missing one:
    # one NaN must not poison every later cumulative sum of its symbol.
    usable = F.col("_real")
    for x in (c, o, hi, lo):
        usable = usable & x.isNotNull() & (x > 0) & ~F.isnan(x) & (x < math.inf)
    v = F.col("volume")
    usable = usable & v.isNotNull() & (v >= 0) & ~F.isnan(v) & (v < math.inf)
    g = g.withColumn("_ok", F.coalesce(usable, F.lit(False)))
    ok, prev_ok = F.col("_ok"), F.coalesce(F.lag("_ok", 1).over(w), F.lit(False))
    hl, co = F.log(hi / lo), F.log(c / o)
    g = g.select(
        "*",
        F.when(ok & prev_ok, F.log(c / F.lag(c, 1).over(w))).alias("_r1"),
        prev_ok.alias("_prev_ok"),
        F.when(ok, hl * hl / (4 * LN2)).alias("_pk"),
        F.when(ok, 0.5 * hl * hl - (2 * LN2 - 1) * co * co).alias("_gk"),
        F.when(ok, v).alias("_v"),
    )
    terms = {"r2": F.col("_r1") * F.col("_r1"), "r": F.col("_r1"), "pk": F.col("_pk"), "gk": F.col("_gk")}
    terms["v"] = F.col("_v")
    g = g.select(
        "*",
        *[F.sum(F.coalesce(x, F.lit(0.0))).over(cum).alias(f"_cs_{k}") for k, x in terms.items()],
        F.sum(F.col("_r1").isNotNull().cast("long")).over(cum).alias("_cn_r"),
        F.sum(F.col("_ok").cast("long")).over(cum).alias("_cn_bar"),
    )

    def back(name: str, n: int) -> Column:
        """The cumulative sum ``name`` n bars back; 0 before the symbol's first candle."""
        return F.col(name) if n == 0 else F.coalesce(F.lag(name, n).over(w), F.lit(0))

    def last(name: str, n: int) -> Column:
        return F.col(name) - back(name, n)

    def need(n: int) -> int:
        return max(1, math.ceil(cfg.min_fill * n - 1e-9))

    checks, out = [F.col("_ok"), F.col("_prev_ok")], []
    for lab, n in bars.items():
        checks.append(last("_cn_r", n) >= need(n))
        out.append((last("_cs_r2", n) / last("_cn_r", n)).alias(f"_var_r_{lab}"))
    for lab in range_windows(cfg):
        n = bars[lab]
        checks.append(last("_cn_bar", n) >= need(n))
        for k in ("pk", "gk"):
            out.append((last(f"_cs_{k}", n) / last("_cn_bar", n)).alias(f"_var_{k}_{lab}"))
    for lab in ("h", label(cfg.day), label(cfg.week)):
        out.append((last("_cs_v", bars[lab]) / last("_cn_bar", bars[lab])).alias(f"_vmean_{lab}"))
    # Same time of day on each of the previous days, over the bars the label will look at (t+1..t+h
    # shifted back d days): bars t-dD+1 .. t-dD+h, all in the past since dD >= 2h.
    seas_sum, seas_n = F.lit(0.0), F.lit(0)
    for d in range(1, cfg.seasonal_days + 1):
        a, b = d * day_bars - horizon, d * day_bars
        seas_sum = seas_sum + back("_cs_r2", a) - back("_cs_r2", b)
        seas_n = seas_n + back("_cn_r", a) - back("_cn_r", b)
    checks.append(seas_n >= need(cfg.seasonal_days * horizon))
    out.append((seas_sum / seas_n).alias("_var_seas"))
    out.append((last("_cs_r", horizon) / F.sqrt(last("_cn_r", horizon))).alias("_zr_h"))
    hist = checks[0]
    for check in checks[1:]:
        hist = hist & check
    tod = (F.col("open_time") % DAY_MS) / DAY_MS * (2 * math.pi)
    tow = (F.col("open_time") % WEEK_MS) / WEEK_MS * (2 * math.pi)
    g = g.select(
        "*",
        *out,
        hist.alias("_hist_ok"),
        (~F.col("_ok")).alias("_bad_bar"),
        F.sin(tod).alias("tod_sin"),
        F.cos(tod).alias("tod_cos"),
        F.sin(tow).alias("tow_sin"),
        F.cos(tow).alias("tow_cos"),
    )
    helpers = [c for c in g.columns if c.startswith(("_cs_", "_cn_"))] + [
        "_pk",
        "_gk",
        "_v",
        "_prev_ok",
        "_ok",
        "_real",
    ]
    return g.where(F.col("_real")).drop(*helpers)


def scale_vol(df: DataFrame, cfg: FeatureConfig) -> DataFrame:
    """Adds the scaled features (and repair flags) from the raw columns and ``_scale`` per row."""
    from pyspark.sql import functions as F

    s2 = F.col(SCALE_COL) * F.col(SCALE_COL)
    floor = F.lit(VAR_FLOOR) * s2

    def lvol(var: str) -> Column:
        return 0.5 * F.log(F.greatest(F.col(var), floor) / s2)

    wins, rng, day, week = windows(cfg), range_windows(cfg), label(cfg.day), label(cfg.week)
    variances = [f"_var_r_{w}" for w in wins] + [f"_var_{k}_{w}" for k in ("pk", "gk") for w in rng] + ["_var_seas"]
    floored = F.lit(False)
    for var in variances:
        floored = floored | (F.col(var) < floor)
    vweek = F.col(f"_vmean_{week}")

    def lvolume(var: str) -> Column:
        # 1% of the weekly mean added to both sides keeps a run of zero-volume candles finite.
        pad = 0.01 * vweek
        return F.when(vweek > 0, F.log((F.col(var) + pad) / (vweek + pad))).otherwise(F.lit(0.0))

    return df.select(
        "*",
        *[lvol(f"_var_r_{w}").alias(f"lrv_{w}") for w in wins],
        *[lvol(f"_var_{k}_{w}").alias(f"l{k}_{w}") for k in ("pk", "gk") for w in rng],
        lvol("_var_seas").alias("lseas_h"),
        (F.col("_r1") / F.col(SCALE_COL)).alias("zret_1"),
        (F.col("_zr_h") / F.col(SCALE_COL)).alias("zret_h"),
        lvolume("_vmean_h").alias("lvol_h"),
        lvolume(f"_vmean_{day}").alias(f"lvol_{day}"),
        floored.alias("repair_vol_floor"),
        (vweek <= 0).alias("repair_flat_volume_week"),
    )
