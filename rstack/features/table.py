"""The shared training table: features, per-symbol label thresholds, global segments, all counted.

Runs once per training run on the Spark session; the result is persisted and every Level-0 batch
reads only its own symbols from it.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from rstack._io import utc_text
from rstack.config import Config
from rstack.data.discover import Dataset, read_klines
from rstack.errors import InputError
from rstack.features.featurize import apply_scales, to_features
from rstack.features.segments import PURGED, SEGMENTS, compute_cutoffs, segment_column
from rstack.features.windows import feature_names, needs_vol, repair_columns, table_columns

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

BASELINE_COL = "baseline_p"


def fit_on_train(seg: DataFrame, label_quantile: float) -> DataFrame:
    """Per symbol, from L0-train rows only: their count, the label threshold and the trailing-volatility median."""
    from pyspark.sql import functions as F

    return (
        seg.where(F.col("segment") == 0)
        .groupBy("symbol")
        .agg(
            F.count("*").alias("train_rows"),
            F.expr(f"percentile(fwd_rv, {label_quantile})").alias("threshold"),
            F.expr("percentile(trail_rv, 0.5)").alias("baseline_median"),
        )
    )


def labelled(
    spark: SparkSession,
    seg: DataFrame,
    thresholds: dict[str, float],
    medians: dict[str, float],
    feats: list[str],
    cfg: Config,
) -> DataFrame:
    """The rows of the symbols in ``thresholds`` as (symbol, open_time, segment, label, baseline, features,
    scale repair flags). The time-based volatility columns are scaled by each symbol's threshold."""
    from pyspark.sql import functions as F

    fit_df = spark.createDataFrame(
        [(s, thresholds[s], medians[s]) for s in thresholds], "symbol string, threshold double, med double"
    )
    joined = seg.join(F.broadcast(fit_df), "symbol")
    with_vol = needs_vol(cfg.features, cfg.level1.context, cfg.eval.baselines)
    # Each symbol's scale is its label threshold, the same rule serving applies from the bundle.
    scaled = apply_scales(joined, thresholds, cfg) if with_vol else joined
    return scaled.select(
        "symbol",
        "open_time",
        "segment",
        (F.col("fwd_rv") > F.col("threshold")).cast("double").alias("label"),
        # Naive baseline: trailing volatility against the symbol's own training median,
        # t / (t + m) is 0.5 at the median and monotone in t.
        F.when(F.col("trail_rv") + F.col("med") > 0, F.col("trail_rv") / (F.col("trail_rv") + F.col("med")))
        .otherwise(F.lit(0.5))
        .alias(BASELINE_COL),
        *feats,
        *repair_columns(cfg.features, with_vol)[1],
    )


def build_training_table(spark: SparkSession, dataset: Dataset, cfg: Config) -> tuple[DataFrame, dict[str, Any]]:
    """Returns the persisted table (segment >= 0 rows of usable symbols) and a summary for the manifest."""
    t0 = time.time()
    # Everything `_build` persists is listed here, so an input error half-way leaves nothing cached on
    # the host (which a resumed or reused run would keep); only the returned table stays.
    cached: list[DataFrame] = []
    table: DataFrame | None = None
    try:
        table, summary = _build(spark, dataset, cfg, cached)
    finally:
        for frame in cached:
            if frame is not table:
                # Best effort: a failing cleanup (the session gone) must not replace the error on its way out.
                with contextlib.suppress(Exception):
                    frame.unpersist()
    summary["seconds"] = time.time() - t0
    return table, summary


def fold_cut(klines: DataFrame, until: float) -> int | None:
    """A walk-forward fold's cut (epoch ms) at fraction ``until`` of the data's time span; reads only
    the open_time column, so no candle's values past the cut are read."""
    from pyspark.sql import functions as F

    if until >= 1.0:
        return None
    span = klines.agg(F.min("open_time").alias("lo"), F.max("open_time").alias("hi")).first()
    if span is None or span["lo"] is None:
        return None  # no candles: nothing to cut
    return int(span["lo"] + until * (span["hi"] - span["lo"]))


def _build(
    spark: SparkSession, dataset: Dataset, cfg: Config, cached: list[DataFrame]
) -> tuple[DataFrame, dict[str, Any]]:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    horizon = cfg.label.horizon
    with_vol = needs_vol(cfg.features, cfg.level1.context, cfg.eval.baselines)
    feats = table_columns(cfg.features, with_vol)
    _, vol_flags = repair_columns(cfg.features, with_vol)
    klines = read_klines(spark, dataset)
    # Cut first: the checks, the interval, the features and the labels see only candles before it.
    until_ms = fold_cut(klines, cfg.split.until)
    featurized = to_features(klines, dataset, cfg, with_vol, labelled=True, until_ms=until_ms, cached=cached)
    bar_ms, validation = featurized.bar_ms, featurized.checks
    # Persisted with its status: the counts, segments, thresholds and final table all read it.
    table = featurized.frame.persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(table)
    repair_flags, _ = repair_columns(cfg.features, with_vol)
    usable = F.col("_status") == "ok"
    per_symbol = (
        table.groupBy("symbol")
        .agg(
            F.count("*").alias("rows"),
            F.min("open_time").alias("first_ms"),
            F.max("open_time").alias("last_ms"),
            *[F.sum((F.col("_status") == s).cast("long")).alias(s) for s in ("warmup", "no_label", "invalid")],
            F.sum(usable.cast("long")).alias("usable"),
            *[F.sum((usable & F.col(f)).cast("long")).alias(f) for f in repair_flags],
            F.min(F.when(usable, F.col("open_time"))).alias("usable_first_ms"),
            F.max(F.when(usable, F.col("open_time"))).alias("usable_last_ms"),
        )
        .orderBy("symbol")
        .collect()
    )
    for frame in cached[:-1]:
        frame.unpersist()  # `table` holds everything later steps read

    starts = [r["usable_first_ms"] for r in per_symbol if r["usable_first_ms"] is not None]
    if not starts:
        raise InputError(
            f"no symbol in {dataset.root} has enough rows for the feature windows plus the "
            f"{horizon}-bar label horizon; give each symbol more candles"
        )
    cut = compute_cutoffs(
        min(starts), max(r["usable_last_ms"] for r in per_symbol if r["usable_last_ms"]), bar_ms, cfg.split.fractions
    )

    emb = cfg.split.embargo * bar_ms
    boundary = sum((F.col("open_time") >= F.lit(c + emb)).cast("int") for c in cut.cutoffs_ms)
    seg = table.where(usable).withColumn("segment", segment_column(cut, horizon, cfg.split.embargo))
    seg = seg.withColumn("_boundary", F.when(F.col("segment") == PURGED, boundary))
    q = cfg.label.label_quantile
    seg_counts = seg.groupBy("symbol", "segment", "_boundary").count().collect()
    fitted = fit_on_train(seg, q).collect()
    fitted_by = {r["symbol"]: r for r in fitted}
    included, excluded = [], {}
    for r in per_symbol:
        sym = r["symbol"]
        n = fitted_by[sym]["train_rows"] if sym in fitted_by else 0
        thr = fitted_by[sym]["threshold"] if sym in fitted_by else None
        if n >= cfg.split.min_train_rows and thr is not None and thr <= 0:
            # The threshold is the symbol's volatility scale; zero means flat candles, no question to ask.
            excluded[sym] = (
                f"its L0-train forward volatility quantile (the label threshold) is {thr}: its candles are flat; "
                "drop the symbol or give it traded history"
            )
        elif n >= cfg.split.min_train_rows:
            included.append(sym)
        else:
            excluded[sym] = (
                f"{n} usable L0-train rows before the first cutoff {cut.to_dict()['cutoffs_utc'][0]} "
                f"(split.min_train_rows = {cfg.split.min_train_rows})"
            )
    if not included:
        raise InputError(
            f"no symbol in {dataset.root} has split.min_train_rows = {cfg.split.min_train_rows} "
            "training rows before the first cutoff; give more history or lower split.min_train_rows"
        )
    if until_ms is not None:
        # A symbol listed after a walk-forward fold's cut has no candle in this fold: say so.
        present = {r["symbol"] for r in per_symbol}
        for sym in sorted({s for f in dataset.files for s in f.symbols} - present):
            excluded[sym] = f"no candles before this fold's cut ({utc_text(until_ms)}, split.until = {cfg.split.until})"
    thresholds = {s: float(fitted_by[s]["threshold"]) for s in included}
    medians = {s: float(fitted_by[s]["baseline_median"]) for s in included}
    final = (
        labelled(spark, seg.where(F.col("segment") >= 0), thresholds, medians, feats, cfg)
        # A fixed row order inside each partition keeps RandomForest's bootstrap reproducible.
        .sortWithinPartitions("symbol", "open_time")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    cached.append(final)
    by_symbol_segment = (
        final.groupBy("symbol", "segment")
        .agg(
            F.count("*").alias("rows"),
            F.sum("label").alias("pos"),
            *[F.sum(F.col(f).cast("long")).alias(f) for f in vol_flags],
        )
        .collect()
    )
    table.unpersist()
    label_stats = []
    for segment in sorted({r["segment"] for r in by_symbol_segment}):
        rows = [r for r in by_symbol_segment if r["segment"] == segment]
        n = sum(r["rows"] for r in rows)
        label_stats.append({"segment": segment, "rows": n, "pos": sum(r["pos"] for r in rows) / n})
    # Repairs of the scaled volatility (made after the scale is known): counted on the rows kept.
    vol_repairs = {
        sym: {f.removeprefix("repair_"): sum(r[f] for r in by_symbol_segment if r["symbol"] == sym) for f in vol_flags}
        for sym in thresholds
    }

    rows_by_segment = {name: 0 for name in SEGMENTS}
    purged = {f"boundary_{i}": 0 for i in range(3)}
    segment_rows: dict[str, dict[str, int]] = {}
    for r in seg_counts:
        if r["symbol"] not in thresholds:
            continue  # excluded symbols are reported with their reason instead
        if r["segment"] == PURGED:
            purged[f"boundary_{r['_boundary']}"] += r["count"]
        else:
            segment_rows.setdefault(r["symbol"], {n: 0 for n in SEGMENTS})[SEGMENTS[r["segment"]]] += r["count"]
    for stat in label_stats:
        rows_by_segment[SEGMENTS[stat["segment"]]] = int(stat["rows"])
    summary: dict[str, Any] = {
        "symbols": included,
        "excluded_symbols": excluded,
        "feature_columns": feature_names(cfg.features),
        "table_columns": feats,
        "bar_ms": bar_ms,
        "cutoffs": cut.to_dict(),
        "until_ms": until_ms,
        "purged_rows": purged,
        "rows_by_segment": rows_by_segment,
        "positive_rate_by_segment": {SEGMENTS[r["segment"]]: float(r["pos"]) for r in label_stats},
        "label_thresholds": thresholds,
        "baseline_medians": medians,
        "per_symbol": {
            r["symbol"]: {
                "rows": r["rows"],
                "first_ms": r["first_ms"],
                "last_ms": r["last_ms"],
                "dropped_warmup": r["warmup"],
                "dropped_no_label": r["no_label"],
                "dropped_invalid": r["invalid"],
                "usable": r["usable"],
                "repairs": {f.removeprefix("repair_"): r[f] for f in repair_flags}
                | vol_repairs.get(r["symbol"], {f.removeprefix("repair_"): 0 for f in vol_flags})
                | {"duplicate_rows_removed": validation[r["symbol"]]["duplicate_rows_removed"]},
                "gaps": validation[r["symbol"]]["gaps"],
                "missing_candles": validation[r["symbol"]]["missing_candles"],
                "segments": segment_rows.get(r["symbol"], {n: 0 for n in SEGMENTS}),
            }
            for r in per_symbol
        },
    }
    totals: dict[str, Any] = {
        k: sum(s[k] for s in summary["per_symbol"].values())
        for k in ("rows", "dropped_warmup", "dropped_no_label", "dropped_invalid", "usable")
    }
    totals["repairs"] = {f.removeprefix("repair_"): sum(r[f] for r in per_symbol) for f in repair_flags}
    for f in vol_flags:
        totals["repairs"][f.removeprefix("repair_")] = sum(v[f.removeprefix("repair_")] for v in vol_repairs.values())
    totals["repairs"]["duplicate_rows_removed"] = sum(v["duplicate_rows_removed"] for v in validation.values())
    totals["gaps"] = sum(v["gaps"] for v in validation.values())
    totals["missing_candles"] = sum(v["missing_candles"] for v in validation.values())
    summary["totals"] = totals
    return final, summary
