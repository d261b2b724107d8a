"""Levels 1 and 2 and the test-segment evaluation.

Meta-features are strictly out of sample: Level-0 models saw only L0-train rows and score the later
segments; Level 1 is fitted on L1-fit and scores L2-fit and test; Level 2 is fitted on L2-fit.
The test segment is touched only to evaluate.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
import pyarrow as pa

from rstack._io import KEY
from rstack.config import Config
from rstack.errors import TrainingError
from rstack.features.segments import SEGMENTS
from rstack.features.table import BASELINE_COL
from rstack.models.convert import to_spark
from rstack.models.estimators import logistic, random_forest
from rstack.models.level0 import probability_of_one
from rstack.models.metrics import evaluate

if TYPE_CHECKING:
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegressionModel, RandomForestClassificationModel
    from pyspark.sql import DataFrame, SparkSession

L1_COL, L2_COL, PRIOR_COL = "l1", "l2", "baseline_prior"


def gather_meta_features(base: pd.DataFrame, l0_tables: list[pa.Table]) -> pd.DataFrame:
    """Join every Level-0 prediction table onto the (symbol, open_time, segment, label) rows."""
    out = base
    for table in l0_tables:
        preds = table.to_pandas()
        col = [c for c in preds.columns if c not in KEY][0]
        out = out.merge(preds, on=list(KEY), how="left", validate="one_to_one")
        missing = int(out[col].isna().sum())
        if missing:
            raise TrainingError(
                f"Level-0 model {col} returned no prediction for {missing} rows; "
                "the batch output is incomplete, rerun the training"
            )
    return out.sort_values(list(KEY), kind="mergesort").reset_index(drop=True)


def _fit(
    spark: SparkSession, frame: pd.DataFrame, segment: int, inputs: list[str], pipeline: Pipeline
) -> PipelineModel:
    rows = frame.loc[frame["segment"] == segment, [*KEY, "label", *inputs]]
    classes = sorted(float(c) for c in rows["label"].unique())
    if classes != [0.0, 1.0]:
        raise TrainingError(
            f"the {SEGMENTS[segment]} segment has labels {classes} in {len(rows)} rows, so a meta-learner "
            "cannot be fitted; give more history or change split.fractions"
        )
    return pipeline.fit(to_spark(spark, rows))


def score(spark: SparkSession, model: PipelineModel, frame: pd.DataFrame, alias: str) -> pd.Series:
    """Model probabilities for ``frame``'s rows, aligned to its index."""
    scored = probability_of_one(model, to_spark(spark, frame), alias).toPandas()
    merged = frame[list(KEY)].merge(scored, on=list(KEY), how="left", validate="one_to_one")
    missing = int(merged[alias].isna().sum())
    if missing:
        raise TrainingError(f"{alias}: no probability for {missing} of {len(frame)} rows; rerun the training")
    return pd.Series(merged[alias].to_numpy(), index=frame.index)


def fit_levels_1_2(
    spark: SparkSession,
    base: pd.DataFrame,
    l0_tables: list[pa.Table],
    cfg: Config,
    level1_path: str,
    level2_path: str,
    prior: float,
    baseline_tables: list[pa.Table] | None = None,
    *,
    cache_node_ids: bool = True,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit and save Levels 1 and 2; return (metrics and timings, test-segment predictions).

    ``baseline_tables`` hold other models' test-segment probabilities (one ``baseline_*`` column
    each); they are evaluated next to the stack and never feed it. ``cache_node_ids`` goes to Level 1's
    forest (see ``random_forest``)."""
    t0 = time.time()
    frame = gather_meta_features(base, l0_tables)
    l0_cols = sorted(c for c in frame.columns if c.startswith("l0_"))
    l1_inputs, l2_inputs = meta_inputs(l0_cols, cfg)
    l1 = _fit(spark, frame, 1, l1_inputs, random_forest(l1_inputs, cfg.level1, cache_node_ids=cache_node_ids))
    later = frame[frame["segment"] >= 2].copy()
    later[L1_COL] = score(spark, l1, later[[*KEY, *l1_inputs]], L1_COL)
    t1 = time.time()
    l2 = _fit(spark, later, 2, l2_inputs, logistic(l2_inputs, cfg.level2))
    # L2's own (in-sample) scores on L2-fit: the report picks its F1 threshold there, never on test.
    later[L2_COL] = score(spark, l2, later[[*KEY, *l2_inputs]], L2_COL)
    later[PRIOR_COL] = prior
    test = later[later["segment"] == 3].copy()
    l2_fit = later[later["segment"] == 2].copy()
    extra_cols = []
    for table in baseline_tables or []:
        preds = table.to_pandas()
        col = [c for c in preds.columns if c not in KEY][0]
        test = test.merge(preds, on=list(KEY), how="left", validate="one_to_one")
        if test[col].isna().any():
            raise TrainingError(f"{col} has no prediction for {int(test[col].isna().sum())} test rows; rerun")
        extra_cols.append(col)
    t2 = time.time()
    metrics = evaluate_test(test, l0_cols, cfg.eval.threshold, extra_cols)
    # Validation figures for choices about Levels 0 and 1 (never Level 2, which is fitted on these rows).
    metrics_l2_fit = evaluate_test(l2_fit, l0_cols, cfg.eval.threshold)
    metrics_l2_fit.pop("level2")
    metrics_l2_fit.pop("baseline_prior")
    t3 = time.time()
    l1.write().overwrite().save(level1_path)
    l2.write().overwrite().save(level2_path)
    timings = {"level1_fit": t1 - t0, "level2_fit": t2 - t1, "evaluate": t3 - t2, "save_meta": time.time() - t3}
    columns = [*KEY, "label", *l0_cols, L1_COL, L2_COL, BASELINE_COL, PRIOR_COL]
    # The pipelines end in the estimators built above: a forest (Level 1), a logistic regression (Level 2).
    forest = cast("RandomForestClassificationModel", l1.stages[-1])
    lr = cast("LogisticRegressionModel", l2.stages[-1])
    test_columns = [*columns, *extra_cols]
    result = {
        "metrics": metrics,
        "metrics_l2_fit": metrics_l2_fit,
        "timings": timings,
        "level1": {
            "inputs": l1_inputs,
            "feature_importances": dict(zip(l1_inputs, forest.featureImportances.toArray().tolist(), strict=True)),
        },
        "level2": {
            "inputs": l2_inputs,
            "coefficients": lr.coefficients.toArray().tolist(),
            "intercept": float(lr.intercept),
        },
        "l2_fit_predictions": l2_fit[columns].reset_index(drop=True),
    }
    return result, test[test_columns].reset_index(drop=True)


def meta_inputs(l0_cols: list[str], cfg: Config) -> tuple[list[str], list[str]]:
    """Level 1's inputs (every Level-0 probability, then ``level1.context``) and Level 2's (Level 1's
    probability, then the Level-0 ones when ``level2.skip``)."""
    return [*l0_cols, *cfg.level1.context], [L1_COL, *(l0_cols if cfg.level2.skip else [])]


def evaluate_test(
    test: pd.DataFrame, l0_cols: list[str], threshold: float, extra_cols: list[str] | None = None
) -> dict[str, Any]:
    if test.empty:
        raise TrainingError("the test segment is empty; give more history or enlarge split.fractions[3]")
    y = test["label"].to_numpy()
    scores = {
        "level2": L2_COL,
        "level1": L1_COL,
        **{c.removeprefix("l0_"): c for c in l0_cols},
        "baseline_trailing_vol": BASELINE_COL,
        "baseline_prior": PRIOR_COL,
        **{c: c for c in extra_cols or []},
    }
    return {name: evaluate(y, test[col].to_numpy(), threshold) for name, col in scores.items()}


def base_rows(table: DataFrame, context: tuple[str, ...] = ()) -> pd.DataFrame:
    """The rows meta-learners and evaluation use: every segment after L0-train, with Level 1's context."""
    from pyspark.sql import functions as F

    return table.where(F.col("segment") > 0).select(*KEY, "segment", "label", BASELINE_COL, *context).toPandas()
