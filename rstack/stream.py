"""``rstack stream``: Structured Streaming over a folder of new kline files, scored by a saved run.

Each micro-batch is scored together with a per-symbol lookback buffer (the last ``lookback`` rows
seen), so lags and rolling windows are the same as in a batch ``rstack predict`` over all the data.
Exactly-once output: Spark's checkpoint records which files each batch id read, the output file is
named by batch id and written by rename, and the buffer a batch starts from is the one saved by the
batch before it, so a restarted batch recomputes the same file instead of adding another.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack.bundle import KEY, Bundle
from rstack.convert import to_spark
from rstack.data import MICROS_THRESHOLD, PRICE_COLUMNS
from rstack.errors import RstackError
from rstack.runs import write_parquet_atomic

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

STREAM_SCHEMA = "symbol string, open_time long, open double, high double, low double, close double, volume double"


def _buffer_before(state_dir: Path, batch_id: int) -> Path | None:
    """The newest buffer saved by a batch before ``batch_id``."""
    found = sorted(p for p in state_dir.glob("buffer-*.parquet") if int(p.stem.split("-")[1]) < batch_id)
    return found[-1] if found else None


def process_micro_batch(
    spark: SparkSession,
    bundle: Bundle,
    batch: DataFrame,
    batch_id: int,
    out_dir: Path,
    state_dir: Path,
    threshold: float | None,
) -> dict[str, Any]:
    import pandas as pd
    from pyspark.sql import functions as F

    t0 = time.time()
    raw = F.col("open_time")
    new = batch.select(
        "symbol",
        F.when(raw >= MICROS_THRESHOLD, F.floor(raw / 1000)).otherwise(raw).cast("long").alias("open_time"),
        *[F.col(c).cast("double") for c in PRICE_COLUMNS],
        F.input_file_name().alias("_file"),
    ).toPandas()
    # A row without a symbol or an open time has no place in any lookback; stopping a long-running
    # stream for it would be worse than skipping it, so it is counted, named by file and skipped.
    rows_in = len(new)
    unplaced = new["symbol"].isna() | new["open_time"].isna()
    null_key_rows = int(unplaced.sum())
    null_key_files = {str(k): int(v) for k, v in new.loc[unplaced, "_file"].value_counts().items()}
    if null_key_files:
        log.warning(
            "stream batch %d: skipped %d row(s) with a null symbol or open_time, per file: %s; "
            "fill them in and drop those rows in again as a new file",
            batch_id,
            null_key_rows,
            null_key_files,
        )
    new = new.loc[~unplaced].drop(columns="_file").astype({"open_time": "int64"}).reset_index(drop=True)
    previous = _buffer_before(state_dir, batch_id)
    buffer = pd.read_parquet(previous) if previous else new.iloc[0:0]
    last_seen = buffer.groupby("symbol")["open_time"].max()
    # Candles not newer than what a symbol already had would rewrite history the lookback was
    # built on; they are counted and left out, never merged silently.
    late = new["open_time"] <= new["symbol"].map(last_seen).fillna(-1)
    fresh = new[~late]
    combined = pd.concat([buffer.assign(_new=False), fresh.assign(_new=True)], ignore_index=True)
    stats: dict[str, Any] = {
        "batch_id": batch_id,
        "rows_in": rows_in,
        "late_rows_skipped": int(late.sum()),
        "null_key_rows_skipped": null_key_rows,
        "null_key_files": null_key_files,
    }
    if not combined.empty:
        df = to_spark(spark, combined)
        # Persisted: the status counts and the scoring both read it.
        fresh_feats = bundle.featurize(df).where(F.col("_new")).persist()  # featurize keeps the _new flag
        try:
            counts = {r["_status"]: r["count"] for r in fresh_feats.groupBy("_status").count().collect()}
            preds = bundle.score_features(fresh_feats.where(F.col("_status") == "ok"), threshold).toPandas()
        finally:
            fresh_feats.unpersist()
        preds = preds.sort_values(KEY, kind="mergesort").reset_index(drop=True)
        ordered = combined.drop(columns="_new").sort_values(KEY, kind="mergesort")
        next_buffer = ordered.groupby("symbol", sort=False).tail(bundle.lookback).reset_index(drop=True)
    else:
        counts, next_buffer = {}, buffer
        preds = pd.DataFrame()
    stats.update(
        {
            "scored": int(counts.get("ok", 0)),
            "warmup": int(counts.get("warmup", 0)),
            "invalid": int(counts.get("invalid", 0)),
            # Symbols without a training scale (scaled features) are counted per batch, never scored.
            "unknown_symbol": int(counts.get("unknown_symbol", 0)),
        }
    )
    if not preds.empty:
        write_parquet_atomic(preds, out_dir / f"batch-{batch_id:06d}.parquet")
    # The buffer is saved after the output: a crash in between re-runs this batch from the old buffer.
    write_parquet_atomic(next_buffer, state_dir / f"buffer-{batch_id:06d}.parquet")
    for old in state_dir.glob("buffer-*.parquet"):
        if int(old.stem.split("-")[1]) < batch_id:
            old.unlink(missing_ok=True)
    stats["seconds"] = time.time() - t0
    stats["written_at"] = time.time()
    (state_dir / f"stats-{batch_id:06d}.json").write_text(json.dumps(stats))
    return stats


def stream_dir(
    spark: SparkSession,
    state: dict[str, Any],
    run_dir: str,
    watch_dir: str,
    out_dir: str,
    checkpoint_dir: str,
    once: bool = False,
    files_per_trigger: int = 1,
    trigger_seconds: float = 1.0,
    threshold: float | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run the stream until stopped (or, with ``once``, until the files present are processed)."""
    bundle = Bundle.open(run_dir)
    out, ckpt = Path(out_dir), Path(checkpoint_dir)
    state_dir = ckpt / "lookback"
    for d in (out, state_dir):
        d.mkdir(parents=True, exist_ok=True)
    batches: list[dict[str, Any]] = []

    def handle(df: DataFrame, batch_id: int) -> None:
        stats = process_micro_batch(spark, bundle, df, batch_id, out, state_dir, threshold)
        batches.append(stats)
        log.info("stream batch %d: %s", batch_id, stats)

    source = spark.readStream.schema(STREAM_SCHEMA).option("maxFilesPerTrigger", files_per_trigger).parquet(watch_dir)
    writer = source.writeStream.foreachBatch(handle).option("checkpointLocation", str(ckpt / "spark"))
    writer = writer.trigger(availableNow=True) if once else writer.trigger(processingTime=f"{trigger_seconds} seconds")
    query = writer.queryName(f"rstack-stream-{bundle.manifest['run_id']}").start()
    state["stream_query"] = query
    try:
        query.awaitTermination(timeout)
    except Exception as exc:
        raise RstackError(f"the stream over {watch_dir} failed: {exc}; see the checkpoint {ckpt}") from exc
    finally:
        if query.isActive:
            query.stop()
        state.pop("stream_query", None)
    return {"run_id": bundle.manifest["run_id"], "batches": batches}
