"""Functions that run inside the Spark host actor (``cluster/spark_host.py``), one per kind of Spark job.

The driver ships them with ``Runtime.call``; each gets the host's SparkSession and its per-run state
(the cached training table) first, then the driver's arguments. They do the Spark work; the driver
only moves object references and small metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack._io import write_spark_dir, write_spark_parquet
from rstack.config import Config, Level0Config
from rstack.data.discover import Dataset, TimeSpan, time_span
from rstack.faults import crash_point
from rstack.features.table import build_training_table
from rstack.features.vol import har_columns
from rstack.models.estimators import gradient_boosted, har_logit, random_forest
from rstack.models.level0 import BatchSpec, fit_level0_batch, probability_of_one
from rstack.models.meta import base_rows, fit_levels_1_2
from rstack.training.checkpoint import predictions_path, save_batch
from rstack.training.runs import writing_into

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def host_prepare(
    spark: SparkSession, state: dict[str, Any], run_key: str, dataset: Dataset, cfg: Config
) -> dict[str, Any]:
    table, summary = build_training_table(spark, dataset, cfg)
    state[run_key] = table
    return summary


def host_level0(
    spark: SparkSession,
    state: dict[str, Any],
    run_key: str,
    batch: BatchSpec,
    feature_cols: list[str],
    cfg: Level0Config,
    run_work: str,
) -> tuple[dict[str, Any], str]:
    """Returns (the batch's metadata, the folder its predictions were written to)."""
    model_rel = f"level0/{batch.name}"
    with writing_into(Path(run_work)):
        out = predictions_path(Path(run_work), batch.name)
        meta = fit_level0_batch(state[run_key], batch, feature_cols, cfg, f"{run_work}/{model_rel}", str(out))
        meta["checkpoint_seconds"] = save_batch(Path(run_work), batch.name, model_rel, meta)
    return meta, str(out)


def host_baseline(
    spark: SparkSession,
    state: dict[str, Any],
    run_key: str,
    kind: str,
    feature_cols: list[str],
    cfg: Config,
    run_work: str,
) -> str:
    """A single model of all symbols, as the stack's honest competitor; scores test rows only, into a
    Parquet folder under the run's work folder, whose path it returns."""
    with writing_into(Path(run_work)):
        return _fit_baseline(state[run_key], kind, feature_cols, cfg, Path(run_work))


def _fit_baseline(table: DataFrame, kind: str, feature_cols: list[str], cfg: Config, run_work: Path) -> str:
    from pyspark.sql import functions as F

    if kind == "single_rf":
        model = random_forest(feature_cols, cfg.level0).fit(table.where(F.col("segment") == 0))
    elif kind == "har_logit":
        # The domain's standard: HAR's three log realized volatilities, all history before test.
        model = har_logit(har_columns(cfg.features)).fit(table.where(F.col("segment") <= 2))
    else:
        # Everything before test: as much history as the whole stack sees across its three levels.
        model = gradient_boosted(feature_cols, cfg.level0.seed).fit(table.where(F.col("segment") <= 2))
    out = Path(run_work, "checkpoints", "baselines", f"{kind}.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_spark_dir(probability_of_one(model, table.where(F.col("segment") == 3), f"baseline_{kind}"), out)
    return str(out)


def host_meta(
    spark: SparkSession,
    state: dict[str, Any],
    run_key: str,
    cfg: Config,
    run_path: str,
    prior: float,
    l0: list[str],
    baselines: list[str],
) -> dict[str, Any]:
    """Levels 1 and 2 from the Level-0 and baseline predictions (Parquet folders the executors wrote,
    read back by Spark, never gathered); writes the run's prediction files."""
    crash_point("meta.start")
    base = base_rows(state[run_key], cfg.level1.context)
    l0_frames = [spark.read.parquet(path) for path in l0]
    baseline_frames = [spark.read.parquet(path) for path in baselines]
    result, test, l2_fit = fit_levels_1_2(
        base, l0_frames, cfg, f"{run_path}/level1", f"{run_path}/level2", prior, baseline_frames
    )
    try:
        Path(run_path, "predictions").mkdir(exist_ok=True)
        write_spark_parquet(test, Path(run_path, "predictions", "test.parquet"))
        write_spark_parquet(l2_fit, Path(run_path, "predictions", "l2_fit.parquet"))
    finally:
        test.unpersist()
        l2_fit.unpersist()
    return result


def host_release(spark: SparkSession, state: dict[str, Any], run_key: str) -> None:
    table = state.pop(run_key, None)
    if table is not None:
        table.unpersist()


def host_time_span(spark: SparkSession, state: dict[str, Any], dataset: Dataset, horizon: int) -> TimeSpan | None:
    """The data's time span (``data.discover.TimeSpan``), for walk-forward folds that end before test."""
    return time_span(spark, dataset, horizon)
