"""``rstack stream``: Structured Streaming over a folder of new kline files, scored by a saved run.

Each micro-batch is scored together with a per-symbol lookback buffer (the last ``lookback`` rows
seen), so lags and rolling windows are the same as in a batch ``rstack predict`` over all the data.
Exactly-once output, crash included: Spark's checkpoint records which files each batch id read, the
output file is named by batch id and written by rename, and the buffer a batch starts from is the
one saved by the batch before it, kept until the next batch starts, so a batch replayed after a
crash recomputes the same file instead of adding another.

Every micro-batch passes training's row rules (``screen``, then ``featurize.to_features``); what
training would refuse is skipped and counted per file and reason, and the stream goes on.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack._io import KEY, write_parquet_atomic
from rstack.data.rules import PRICE_COLUMNS, REQUIRED, bad_value_flags, numpy_nonfinite, to_ms_spark
from rstack.errors import RstackError
from rstack.faults import crash_point
from rstack.features.featurize import UNKNOWN_SYMBOL
from rstack.models.bundle import Bundle
from rstack.models.convert import to_spark

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

STREAM_SCHEMA = "symbol string, open_time long, open double, high double, low double, close double, volume double"


def screen(new: pd.DataFrame, last_seen: pd.Series, bar_ms: int) -> tuple[pd.DataFrame, pd.Series, int]:
    """Training's row rules (``rules.py``) applied to one micro-batch: (rows to score, the reason per
    skipped row, exact duplicates removed). A long-running stream skips and counts what training
    would refuse, instead of stopping for it; a skipped candle is a gap in its symbol's windows."""
    import numpy as np
    import pandas as pd

    reason = pd.Series(None, index=new.index, dtype=object)
    reason[new["symbol"].isna() | new["open_time"].isna()] = "null_key"
    # Candles not newer than what a symbol already had would rewrite history the lookback was
    # built on.
    seen = new["symbol"].map(last_seen).astype(float).fillna(-np.inf)
    reason[reason.isna() & (new["open_time"].astype(float) <= seen)] = "late"
    # Bad values first, as in training: a broken row is no evidence of a duplicate or a conflict.
    flags = bad_value_flags({c: new[c].to_numpy(dtype=float) for c in PRICE_COLUMNS}, numpy_nonfinite)
    with np.errstate(invalid="ignore"):
        bad = functools.reduce(np.logical_or, flags.values())
    reason[reason.isna() & bad] = "bad_value"
    live = reason.isna()
    exact = live & new.duplicated(list(REQUIRED), keep="first")
    live &= ~exact
    # Same (symbol, open_time), other values: no rule can say which is right, so neither is scored.
    reason[live & new[live].duplicated(list(KEY), keep=False).reindex(new.index, fill_value=False)] = "conflicting"
    live = reason.isna() & ~exact
    # On the symbol's candle grid: the phase of its last buffered candle, else its most common phase.
    t = new["open_time"].where(live).astype(float)
    phase = (t % bar_ms).where(live)
    anchor = (last_seen % bar_ms).astype(float)
    common = phase.groupby(new["symbol"]).agg(lambda p: p.mode().iloc[0] if p.notna().any() else np.nan)
    want = new["symbol"].map(anchor).fillna(new["symbol"].map(common))
    reason[live & (phase != want)] = "off_grid"
    kept = new[reason.isna() & ~exact]
    return kept, reason.dropna(), int(exact.sum())


def _batch_of(path: Path) -> int:
    return int(path.stem.split("-")[1])


def _buffer_before(state_dir: Path, batch_id: int) -> Path | None:
    """The newest buffer saved by a batch before ``batch_id`` (by number: ids outgrow their 6 digits)."""
    found = sorted((p for p in state_dir.glob("buffer-*.parquet") if _batch_of(p) < batch_id), key=_batch_of)
    return found[-1] if found else None


def _drop_buffers_before(state_dir: Path, keep: Path | None) -> None:
    """Buffers older than ``keep``: no batch from this one on can read them. ``keep`` itself stays
    until the next batch starts, since a crash before Spark commits this batch replays it from there."""
    if keep is None:
        return
    for old in state_dir.glob("buffer-*.parquet"):
        if _batch_of(old) < _batch_of(keep):
            old.unlink(missing_ok=True)


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
    new: pd.DataFrame = batch.select(
        "symbol",
        to_ms_spark(F.col("open_time")).alias("open_time"),
        *[F.col(c).cast("double") for c in PRICE_COLUMNS],
        F.input_file_name().alias("_file"),
    ).toPandas()
    previous = _buffer_before(state_dir, batch_id)
    # Spark starts batch N only after committing N - 1: older buffers than N's own are no longer needed.
    _drop_buffers_before(state_dir, previous)
    buffer = pd.read_parquet(previous) if previous else new.iloc[0:0].drop(columns="_file")
    last_seen = buffer.groupby("symbol")["open_time"].max()
    fresh, skipped, duplicates = screen(new, last_seen, bundle.bar_ms)
    by_file = (
        pd.DataFrame({"reason": skipped, "file": new.loc[skipped.index, "_file"]}).value_counts().sort_index()
        if len(skipped)
        else pd.Series(dtype=int)
    )
    skipped_files: dict[str, dict[str, int]] = {}
    for (why, file), n in by_file.items():
        skipped_files.setdefault(str(file), {})[str(why)] = int(n)
    counts_by_reason = {str(k): int(v) for k, v in skipped.value_counts().items()}
    if skipped_files:
        log.warning(
            "stream batch %d: skipped %d row(s) training would refuse, by file and reason: %s; "
            "fix those rows and drop them in again as a new file",
            batch_id,
            len(skipped),
            skipped_files,
        )
    fresh = fresh.drop(columns="_file").astype({"open_time": "int64"}).reset_index(drop=True)
    combined = pd.concat([buffer.assign(_new=False), fresh.assign(_new=True)], ignore_index=True)
    stats: dict[str, Any] = {
        "batch_id": batch_id,
        "rows_in": len(new),
        # Exact duplicates inside the batch: removed and counted, as training removes them.
        "duplicate_rows_removed": duplicates,
        "skipped_rows": counts_by_reason,
        "skipped_files": skipped_files,
        "late_rows_skipped": counts_by_reason.get("late", 0),
        "null_key_rows_skipped": counts_by_reason.get("null_key", 0),
        "null_key_files": {f: r["null_key"] for f, r in skipped_files.items() if "null_key" in r},
    }
    if not fresh.empty:
        cached: list[DataFrame] = []
        try:
            # Not cached before the checks: a micro-batch plus its lookback is small, and one Spark job
            # fewer per micro-batch is worth more than reading it twice.
            feats = bundle.checked_features(to_spark(spark, combined), extra=("_new",), grid_only=True)
            # Persisted: the status counts and the scoring both read it.
            fresh_feats = feats.frame.where(F.col("_new")).persist()
            cached.append(fresh_feats)
            counts = {r["_status"]: r["count"] for r in fresh_feats.groupBy("_status").count().collect()}
            ok = fresh_feats.where(F.col("_status") == "ok")
            preds: pd.DataFrame = bundle.score_features(ok, threshold).toPandas()
        finally:
            for df in cached:
                df.unpersist()
        preds = preds.sort_values(list(KEY), kind="mergesort").reset_index(drop=True)
        ordered = combined.drop(columns="_new").sort_values(list(KEY), kind="mergesort")
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
            "unknown_symbol": int(counts.get(UNKNOWN_SYMBOL, 0)),
        }
    )
    if not preds.empty:
        write_parquet_atomic(preds, out_dir / f"batch-{batch_id:06d}.parquet")
    # The buffer is saved after the output: a crash in between re-runs this batch from the old buffer.
    write_parquet_atomic(next_buffer, state_dir / f"buffer-{batch_id:06d}.parquet")
    stats["seconds"] = time.time() - t0
    stats["written_at"] = time.time()
    (state_dir / f"stats-{batch_id:06d}.json").write_text(json.dumps(stats))
    # Everything of this batch is written; Spark has not yet recorded it as done.
    crash_point("stream.before_commit")
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
        query.awaitTermination(timeout)  # type: ignore[arg-type]  # pyspark's stub says int; seconds may be fractional
    except Exception as exc:
        raise RstackError(f"the stream over {watch_dir} failed: {exc}; see the checkpoint {ckpt}") from exc
    finally:
        if query.isActive:
            query.stop()
        state.pop("stream_query", None)
    return {"run_id": bundle.manifest["run_id"], "batches": batches}
