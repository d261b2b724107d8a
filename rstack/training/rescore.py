"""Re-score a saved run from disk: rebuild its training table, score the test segment through the
verified bundle (Spark's own ``PipelineModel.load``, the serving path) and recompute the test
metrics. Training and this path must agree exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack._io import KEY
from rstack.data.discover import Dataset
from rstack.errors import InputError
from rstack.features.table import BASELINE_COL, build_training_table
from rstack.models.bundle import Bundle
from rstack.models.meta import PRIOR_COL, evaluate_test

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def rescore_run(spark: SparkSession, state: dict[str, Any], run_dir: str, dataset: Dataset) -> dict[str, Any]:
    """Test metrics of the saved models in ``run_dir`` on ``dataset`` (the host-function signature)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    bundle = Bundle.open(Path(run_dir))
    manifest = bundle.manifest
    if not dataset.matches(manifest["data"]):
        # Cutoffs, thresholds and the test segment are all derived from the data; other data
        # would silently evaluate something else.
        raise InputError(
            f"{dataset.root} is not the data run {manifest['run_id']} was trained on (fingerprint differs "
            f"from {manifest['data']['root']}); rescore with the training data"
        )
    table, _ = build_training_table(spark, dataset, bundle.config)
    cached = [table]
    try:
        rows = table.where(F.col("segment") == 3)
        truth = rows.select(*KEY, "label", BASELINE_COL)
        prior = F.lit(float(manifest["positive_rate_by_segment"]["l0_train"]))
        test = truth.join(bundle.score_features(rows), on=list(KEY), how="left").withColumn(PRIOR_COL, prior)
        # Persisted: each metric pass would otherwise score the rows again.
        cached.append(test.persist(StorageLevel.MEMORY_AND_DISK))
        l0_cols = [f"l0_{name}" for name in bundle.level0_names]
        return evaluate_test(test, l0_cols, bundle.config.eval.threshold)
    finally:
        for df in cached:
            df.unpersist()
