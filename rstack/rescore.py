"""Re-score a saved run from disk: rebuild its training table, load every level with Spark's own
``PipelineModel.load``, and recompute the test metrics. Training and this path must agree exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack.config import build_config
from rstack.data import Dataset
from rstack.errors import InputError
from rstack.prepare import build_training_table
from rstack.runs import load_manifest
from rstack.stack import KEY, L1_COL, L2_COL, PRIOR_COL, base_rows, evaluate_test, score

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def rescore_run(spark: SparkSession, state: dict[str, Any], run_dir: str, dataset: Dataset) -> dict[str, Any]:
    """Test metrics of the saved models in ``run_dir`` on ``dataset`` (the host-function signature)."""
    from pyspark.ml import PipelineModel

    manifest = load_manifest(Path(run_dir))
    if dataset.fingerprint()["sha256"] != manifest["data"]["sha256"]:
        # Cutoffs, thresholds and the test segment are all derived from the data; other data
        # would silently evaluate something else.
        raise InputError(
            f"{dataset.root} is not the data run {manifest['run_id']} was trained on (fingerprint differs "
            f"from {manifest['data']['root']}); rescore with the training data"
        )
    cfg = build_config(manifest["config"])
    table, _ = build_training_table(spark, dataset, cfg)
    try:
        rows = base_rows(table)
        later = rows[rows["segment"] >= 2].copy()
        features = table.where("segment >= 2").select(*KEY, *manifest["features"]).toPandas()
        later = later.merge(features, on=KEY, how="left", validate="one_to_one")
        l0_cols = []
        for name, rel in sorted(manifest["models"]["level0"].items()):
            model = PipelineModel.load(str(Path(run_dir, rel)))
            col = f"l0_{name}"
            later[col] = score(spark, model, later[[*KEY, *manifest["features"]]], col)
            l0_cols.append(col)
        level1 = PipelineModel.load(str(Path(run_dir, manifest["models"]["level1"])))
        later[L1_COL] = score(spark, level1, later[[*KEY, *l0_cols]], L1_COL)
        test = later[later["segment"] == 3].copy()
        level2 = PipelineModel.load(str(Path(run_dir, manifest["models"]["level2"])))
        test[L2_COL] = score(spark, level2, test[[*KEY, L1_COL]], L2_COL)
        test[PRIOR_COL] = manifest["positive_rate_by_segment"]["l0_train"]
        return evaluate_test(test, l0_cols, cfg.eval.threshold)
    finally:
        table.unpersist()
