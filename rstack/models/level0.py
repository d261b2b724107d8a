"""Level 0: one forest (``level0.learner``) per batch of symbols, fitted on that batch's L0-train rows only.

A plain function over a Spark DataFrame, so it can be tested without Ray; ``training/host.py`` runs it as a
Spark job in the host, dispatched by the driver as a named Ray actor task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rstack._io import parquet_rows, write_spark_dir
from rstack.config import Level0Config
from rstack.errors import TrainingError
from rstack.models.estimators import feature_importances, level0_model, with_probability

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class BatchSpec:
    batch_id: int
    symbols: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"batch_{self.batch_id:03d}"

    @property
    def column(self) -> str:
        return f"l0_{self.name}"


def probability_of_one(model: PipelineModel, df: DataFrame, alias: str) -> DataFrame:
    """(symbol, open_time, probability of class 1) for every row of ``df``."""
    return with_probability(model, df, alias).select("symbol", "open_time", alias)


def fit_level0_batch(
    table: DataFrame,
    batch: BatchSpec,
    feature_cols: list[str],
    cfg: Level0Config,
    model_path: str,
    predictions_path: str,
) -> dict[str, Any]:
    """Fit, save, and score the L1-fit, L2-fit and test rows of every symbol (with ``cfg.refit`` the test
    rows by a second model fitted on everything before test, which is the one saved).

    The predictions (symbol, open_time, probability) are written by the executors as a Parquet folder at
    ``predictions_path``, never collected; returns the batch's metadata.
    """
    from pyspark.sql import functions as F

    started = time.time()
    estimator = level0_model(feature_cols, cfg)  # a missing optional learner fails here, before any Spark job
    mine = F.col("symbol").isin(list(batch.symbols))
    train = table.where((F.col("segment") == 0) & mine)
    classes = sorted(r["label"] for r in train.select("label").distinct().collect())
    if classes != [0.0, 1.0]:
        raise TrainingError(
            f"level0 {batch.name} ({', '.join(batch.symbols)}): L0-train labels are {classes}, one class only; "
            "use other symbols in the batch, a larger level0.batch_size, or a label_quantile nearer 0.5"
        )
    model = estimator.fit(train)
    fit_seconds = time.time() - started
    if cfg.refit:
        # The meta levels learn from the L0-train model's predictions on L1-fit and L2-fit, rows it never
        # saw; test rows (and serving) are scored by the model refitted on all history before test.
        meta_rows = probability_of_one(model, table.where(F.col("segment").isin(1, 2)), batch.column)
        t = time.time()
        model = level0_model(feature_cols, cfg).fit(table.where((F.col("segment") <= 2) & mine))
        fit_seconds += time.time() - t
        scored = meta_rows.unionByName(probability_of_one(model, table.where(F.col("segment") == 3), batch.column))
    else:
        scored = probability_of_one(model, table.where(F.col("segment") > 0), batch.column)
    model.write().overwrite().save(model_path)
    write_spark_dir(scored, predictions_path)
    meta: dict[str, Any] = {
        "batch_id": batch.batch_id,
        "name": batch.name,
        "symbols": list(batch.symbols),
        "feature_importances": feature_importances(model, feature_cols),
        "scored_rows": parquet_rows(predictions_path),
        "started": started,
        "fit_seconds": fit_seconds,
        "ended": time.time(),
    }
    meta["seconds"] = meta["ended"] - started
    return meta
