"""``rstack evaluate RUN --data DIR``: a saved run judged on klines from after its training.

The klines go through training's own path (``featurize.to_features``, labelled), the labels and the
trailing-volatility baseline use the run's per-symbol thresholds and medians (fitted on its L0-train
rows), and the bundle scores them as ``predict`` does. The result is a folder shaped like a run
(``manifest.json`` with this period's metrics, ``predictions/test.parquet``), so ``report.html``
is written by the same code. Data that overlaps the rows the run was fitted on is refused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack._io import KEY, utc_text, write_manifest, write_spark_parquet
from rstack.data.discover import Dataset, read_klines
from rstack.errors import InputError
from rstack.features.featurize import UNKNOWN_SYMBOL, to_features
from rstack.features.table import BASELINE_COL, labelled
from rstack.features.windows import needs_vol, table_columns
from rstack.models.bundle import Bundle
from rstack.models.meta import PRIOR_COL, evaluate_test

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

EVALUATION = "evaluation"


def _refuse_overlap(klines: DataFrame, dataset: Dataset, manifest: dict[str, Any]) -> None:
    """No candle before the run's test cutoff: those rows (L0-train to L2-fit) are what it was fitted on."""
    from pyspark.sql import functions as F

    cut = int(manifest["cutoffs"]["cutoffs_ms"][2])
    row = klines.where(F.col("open_time") < cut).agg(
        F.count("*").alias("n"), F.min("open_time").alias("lo"), F.max("open_time").alias("hi")
    )
    hit = row.first()
    assert hit is not None  # a global aggregate always has its one row
    if hit["n"]:
        raise InputError(
            f"{dataset.root}: {hit['n']} candles from {utc_text(hit['lo'])} to {utc_text(hit['hi'])} "
            "overlap the rows run "
            f"{manifest['run_id']} was fitted on (L0-train to L2-fit, before its test cutoff {utc_text(cut)}); "
            f"evaluate it on klines from {utc_text(cut)} on"
        )


def evaluate_new_data(spark: SparkSession, state: dict[str, Any], run_dir: str, dataset: Dataset, out: str) -> dict:
    """Score ``dataset`` with the run in ``run_dir``, write the evaluation folder ``out``; return its summary."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    t0 = time.time()
    bundle = Bundle.open(run_dir)
    manifest, cfg = bundle.manifest, bundle.config
    target = Path(out)
    if target.exists():
        raise InputError(f"{target} exists; pass another --out or remove it")
    klines = read_klines(spark, dataset)
    _refuse_overlap(klines, dataset, manifest)
    # Training's rule for which columns the labelled table carries (its baselines' inputs included).
    with_vol = needs_vol(cfg.features, cfg.level1.context, cfg.eval.baselines)
    thresholds = {str(k): float(v) for k, v in manifest["label_thresholds"].items()}
    medians = {str(k): float(v) for k, v in manifest["baseline_medians"].items()}
    cached: list[DataFrame] = []
    try:
        featurized = to_features(klines, dataset, cfg, with_vol, labelled=True, interval=bundle.bar_ms, cached=cached)
        table = featurized.frame.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(table)
        known = F.col("symbol").isin(list(thresholds))
        status = F.when(known, F.col("_status")).otherwise(F.lit(UNKNOWN_SYMBOL))
        counts = table.groupBy("symbol", status.alias("_status")).count().collect()
        usable = table.where(known & (F.col("_status") == "ok")).withColumn("segment", F.lit(3))
        rows = labelled(spark, usable, thresholds, medians, table_columns(cfg.features, with_vol), cfg)
        scored = bundle.score_features(rows).drop("predicted", "known_symbol")
        prior = F.lit(float(manifest["positive_rate_by_segment"]["l0_train"]))
        test = rows.select(*KEY, "label", BASELINE_COL).join(scored, on=list(KEY)).withColumn(PRIOR_COL, prior)
        test = test.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(test)
        span = test.agg(F.count("*").alias("n"), F.min("open_time").alias("lo"), F.max("open_time").alias("hi"))
        first = span.first()
        assert first is not None  # a global aggregate always has its one row
        if not first["n"]:
            raise InputError(
                f"{dataset.root}: no row has both defined features and a label (every symbol needs more than "
                f"{bundle.lookback} candles plus the {cfg.label.horizon}-bar horizon); give more klines"
            )
        l0_cols = [f"l0_{name}" for name in bundle.level0_names]
        metrics = evaluate_test(test, l0_cols, cfg.eval.threshold)
        evaluation = {
            "run_id": manifest["run_id"],
            "run_dir": str(bundle.run_dir),
            "data": dataset.fingerprint(),
            "period_utc": [utc_text(int(first["lo"])), utc_text(int(first["hi"]))],
            "rows": int(first["n"]),
            "per_symbol": _per_symbol(counts),
            "checks": featurized.checks,
            "seconds": time.time() - t0,
        }
        _write(target, bundle, manifest, metrics, evaluation, test)
    finally:
        for df in cached:
            with contextlib.suppress(Exception):  # the session may be gone; the error on its way out matters
                df.unpersist()
    return {"out": str(target), "metrics": metrics, **evaluation}


def _per_symbol(counts: list[Any]) -> dict[str, dict[str, int]]:
    per_symbol: dict[str, dict[str, int]] = {}
    for r in counts:
        blank = {"ok": 0, "warmup": 0, "no_label": 0, "invalid": 0, UNKNOWN_SYMBOL: 0}
        per_symbol.setdefault(r["symbol"], blank)[r["_status"]] = r["count"]
    return per_symbol


def _write(
    target: Path, bundle: Bundle, manifest: dict[str, Any], metrics: dict, evaluation: dict, test: DataFrame
) -> None:
    """The evaluation folder, complete or not at all: built beside ``target`` and renamed into place."""
    work = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "predictions").mkdir(parents=True)
    try:
        write_spark_parquet(test, work / "predictions" / "test.parquet")
        l2_fit = bundle.run_dir / "predictions" / "l2_fit.parquet"
        if l2_fit.is_file():
            # The run's own L2-fit rows: where the report may choose a threshold (before this period).
            shutil.copy2(l2_fit, work / "predictions" / "l2_fit.parquet")
        kept = {k: v for k, v in manifest.items() if k not in ("walk_forward", "metrics_l2_fit", "checksums")}
        write_manifest(work, {**kept, "metrics": metrics, EVALUATION: evaluation})
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
