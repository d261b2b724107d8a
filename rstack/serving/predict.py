"""``rstack predict``: a saved run scores a folder of klines, through the bundle's scoring path."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack._io import write_spark_parquet
from rstack.data.discover import Dataset, read_klines
from rstack.features.windows import repair_columns
from rstack.models.bundle import Bundle

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def predict_dir(
    spark: SparkSession, state: dict[str, Any], run_dir: str, dataset: Dataset, out: str, threshold: float | None
) -> dict[str, Any]:
    """Write predictions for every row of ``dataset`` whose features are defined to ``out`` (one
    Parquet file, written atomically); return counts per symbol, warm-up and invalid rows included.

    The rows pass training's checks first (``featurize.to_features``): exact duplicates are removed
    and counted, bad values, conflicting duplicates and another interval than the run's are errors."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    t0 = time.time()
    bundle = Bundle.open(run_dir)
    cached: list[DataFrame] = []
    try:
        featurized = bundle.checked_features(read_klines(spark, dataset), dataset, cached=cached)
        feats = featurized.frame.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(feats)
        flags = [f for group in repair_columns(bundle.config.features, bundle.with_vol) for f in group]
        ok = F.col("_status") == "ok"
        # Training's counted repairs, on the rows scored.
        counts = (
            feats.groupBy("symbol", "_status")
            .agg(F.count("*").alias("count"), *[F.sum((ok & F.col(f)).cast("long")).alias(f) for f in flags])
            .collect()
        )
        # Persisted: the sorted write's range sampling and the write itself would each score the rows.
        preds = bundle.score_features(feats.where(F.col("_status") == "ok"), threshold)
        preds = preds.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(preds)
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Sorted by (symbol, open_time) and written by the executors: no process holds all predictions.
        rows_written = write_spark_parquet(preds, target)
    finally:
        for df in cached:
            with contextlib.suppress(Exception):  # the session may be gone; the error on its way out matters
                df.unpersist()
    per_symbol: dict[str, dict[str, int]] = {}
    repairs: dict[str, dict[str, int]] = {}
    for r in counts:
        statuses = {"ok": 0, "warmup": 0, "invalid": 0, "unknown_symbol": 0}
        per_symbol.setdefault(r["symbol"], statuses)[r["_status"]] = r["count"]
        own = repairs.setdefault(r["symbol"], {f.removeprefix("repair_"): 0 for f in flags})
        for f in flags:
            own[f.removeprefix("repair_")] += int(r[f] or 0)
    known = set(bundle.manifest["symbols"])
    checks = featurized.checks
    return {
        "run_id": bundle.manifest["run_id"],
        "out": str(target),
        "rows_written": rows_written,
        "per_symbol": per_symbol,
        "unknown_symbols": sorted(s for s in per_symbol if s not in known),
        "warmup_rows": sum(v["warmup"] for v in per_symbol.values()),
        "invalid_rows": sum(v["invalid"] for v in per_symbol.values()),
        # Rows of symbols without a training scale (scaled features): counted, not scored.
        "unknown_symbol_rows": sum(v["unknown_symbol"] for v in per_symbol.values()),
        # Training's repairs and facts, per symbol and in total.
        "checks": checks,
        "repairs": repairs,
        "duplicate_rows_removed": sum(c["duplicate_rows_removed"] for c in checks.values()),
        "gaps": sum(c["gaps"] for c in checks.values()),
        "missing_candles": sum(c["missing_candles"] for c in checks.values()),
        "seconds": time.time() - t0,
    }
