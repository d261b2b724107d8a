"""Levels 1 and 2 and the test-segment evaluation, as Spark jobs over distributed data.

Meta-features are strictly out of sample: Level-0 models saw only L0-train rows and score the later
segments; Level 1 is fitted on L1-fit and scores L2-fit and test; Level 2 is fitted on L2-fit.
The test segment is touched only to evaluate. Every step is a Spark DataFrame operation (the join
of the Level-0 predictions, both fits, the scoring and the metrics), so no process holds the
holdout rows of all symbols.
"""

from __future__ import annotations

import time
from functools import reduce
from typing import TYPE_CHECKING, Any, cast

from rstack._io import KEY
from rstack.config import Config
from rstack.errors import TrainingError
from rstack.features.segments import SEGMENTS
from rstack.features.table import BASELINE_COL
from rstack.models.estimators import logistic, random_forest, with_probability
from rstack.models.spark_metrics import evaluate_frame

if TYPE_CHECKING:
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegressionModel, RandomForestClassificationModel
    from pyspark.sql import DataFrame

L1_COL, L2_COL, PRIOR_COL = "l1", "l2", "baseline_prior"


def score_column(df: DataFrame) -> str:
    """The one column of a predictions table that is not the key."""
    return next(c for c in df.columns if c not in KEY)


def _require_complete(
    df: DataFrame, cols: list[str], what: str, *, rows: int | None = None, values: int | None = None
) -> None:
    """Every row has a value in each of ``cols``: a missing prediction is an error, never a silent drop.

    With ``rows`` and ``values`` (the rows ``df`` should have, the values its ``cols`` should hold in
    all), a joined table whose inputs repeat a (symbol, open_time) or hold keys it does not is an
    error too: one pass over ``df`` checks all three."""
    from pyspark.sql import functions as F

    if not cols:
        return
    got = df.select(
        F.count(F.lit(1)).alias("_rows"),
        *[F.sum(F.col(c).isNull().cast("long")).alias(c) for c in cols],
        *[F.count(c).alias(f"_n_{c}") for c in cols],
    ).first()
    assert got is not None  # an aggregate without grouping always returns one row
    for col in cols:
        if got[col]:
            raise TrainingError(f"{col} returned no prediction for {got[col]} {what} rows; rerun the training")
    if rows is not None and got["_rows"] != rows:
        raise TrainingError(
            f"the {what} table has {got['_rows']} rows after joining {', '.join(cols)}, not {rows}: a prediction "
            "table repeats a (symbol, open_time); delete the run's checkpoints and train again"
        )
    held = sum(got[f"_n_{c}"] for c in cols)
    if values is not None and held != values:
        raise TrainingError(
            f"the {what} table holds {held} of the {values} predictions in {', '.join(cols)}: some repeat a "
            "(symbol, open_time) or name rows the run does not have; delete the run's checkpoints and train again"
        )


def gather_meta_features(base: DataFrame, l0: list[DataFrame]) -> DataFrame:
    """Every Level-0 prediction table joined onto the (symbol, open_time, segment, label) rows,
    persisted (the caller unpersists it) and checked: one prediction per row and model, no more.

    The tables are stacked long and pivoted wide in one shuffle, then joined once, rather than one
    join per batch: a thousand symbols make a hundred batches."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    cols = [score_column(df) for df in l0]
    long = [
        df.select(*KEY, F.lit(c).alias("_model"), F.col(c).cast("double").alias("_p"))
        for df, c in zip(l0, cols, strict=True)
    ]
    stacked = reduce(lambda a, b: a.unionByName(b), long)
    wide = stacked.groupBy(*KEY).pivot("_model", list[bool | float | int | str](cols)).agg(F.first("_p"))
    out = base.join(wide, on=list(KEY), how="left").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # A repeated key would be hidden by first() and a key outside ``base`` by the left join:
        # both show as fewer values held than predictions read.
        _require_complete(out, cols, "meta", values=stacked.count())
    except BaseException:
        out.unpersist()
        raise
    return out


def _fit(frame: DataFrame, segment: int, pipeline: Pipeline) -> PipelineModel:
    from pyspark.sql import functions as F

    rows = frame.where(F.col("segment") == segment)
    counts = {float(r["label"]): r["count"] for r in rows.groupBy("label").count().collect()}
    if sorted(counts) != [0.0, 1.0]:
        raise TrainingError(
            f"the {SEGMENTS[segment]} segment has labels {sorted(counts)} in {sum(counts.values())} rows, so a "
            "meta-learner cannot be fitted; give more history or change split.fractions"
        )
    return pipeline.fit(rows)


def fit_levels_1_2(
    base: DataFrame,
    l0: list[DataFrame],
    cfg: Config,
    level1_path: str,
    level2_path: str,
    prior: float,
    baselines: list[DataFrame] | None = None,
    *,
    cache_node_ids: bool = True,
) -> tuple[dict[str, Any], DataFrame, DataFrame]:
    """Fit and save Levels 1 and 2; return (metrics and timings, test rows, L2-fit rows), the rows as
    persisted DataFrames the caller writes and unpersists.

    ``baselines`` hold other models' test-segment probabilities (one ``baseline_*`` column each);
    they are evaluated next to the stack and never feed it. ``cache_node_ids`` goes to Level 1's
    forest (see ``random_forest``)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    t0 = time.time()
    frame = gather_meta_features(base, l0)
    persisted: list[DataFrame] = []  # the returned rows, released here only when this fails
    try:
        l0_cols = sorted(c for c in frame.columns if c.startswith("l0_"))
        l1_inputs, l2_inputs = meta_inputs(l0_cols, cfg)
        l1 = _fit(frame, 1, random_forest(l1_inputs, cfg.level1, cache_node_ids=cache_node_ids))
        t1 = time.time()
        later = with_probability(l1, frame.where(F.col("segment") >= 2), L1_COL)
        l2 = _fit(later, 2, logistic(l2_inputs, cfg.level2))
        # L2's own (in-sample) scores on L2-fit: the report picks its F1 threshold there, never on test.
        columns = [*KEY, "label", *l0_cols, L1_COL, L2_COL, BASELINE_COL, PRIOR_COL]
        scored = with_probability(l2, later, L2_COL).withColumn(PRIOR_COL, F.lit(float(prior)))
        l2_fit = scored.where(F.col("segment") == 2).select(*columns)
        test = scored.where(F.col("segment") == 3).select(*columns)
        extra_cols, extra_values = [], 0
        for df in baselines or []:
            col = score_column(df)
            test = test.join(df.select(*KEY, col), on=list(KEY), how="left")
            extra_cols.append(col)
            extra_values += df.count()
        test_rows = frame.where(F.col("segment") == 3).count() if extra_cols else None
        test = test.persist(StorageLevel.MEMORY_AND_DISK)
        l2_fit = l2_fit.persist(StorageLevel.MEMORY_AND_DISK)
        persisted += [test, l2_fit]
        _require_complete(test, extra_cols, "test", rows=test_rows, values=extra_values)
        t2 = time.time()
        metrics = evaluate_test(test, l0_cols, cfg.eval.threshold, extra_cols)
        # Validation figures for choices about Levels 0 and 1 (never Level 2, which is fitted on these rows).
        metrics_l2_fit = evaluate_test(l2_fit, l0_cols, cfg.eval.threshold)
        metrics_l2_fit.pop("level2")
        metrics_l2_fit.pop("baseline_prior")
        t3 = time.time()
        l1.write().overwrite().save(level1_path)
        l2.write().overwrite().save(level2_path)
    except BaseException:
        for df in persisted:
            df.unpersist()
        raise
    finally:
        frame.unpersist()
    timings = {"level1_fit": t1 - t0, "level2_fit": t2 - t1, "evaluate": t3 - t2, "save_meta": time.time() - t3}
    # The pipelines end in the estimators built above: a forest (Level 1), a logistic regression (Level 2).
    forest = cast("RandomForestClassificationModel", l1.stages[-1])
    lr = cast("LogisticRegressionModel", l2.stages[-1])
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
    }
    return result, test, l2_fit


def meta_inputs(l0_cols: list[str], cfg: Config) -> tuple[list[str], list[str]]:
    """Level 1's inputs (every Level-0 probability, then ``level1.context``) and Level 2's (Level 1's
    probability, then the Level-0 ones when ``level2.skip``)."""
    return [*l0_cols, *cfg.level1.context], [L1_COL, *(l0_cols if cfg.level2.skip else [])]


def evaluate_test(
    test: DataFrame, l0_cols: list[str], threshold: float, extra_cols: list[str] | None = None
) -> dict[str, Any]:
    """Every level's, Level-0 model's and baseline's metrics on ``test``'s rows, by Spark aggregates."""
    if test.isEmpty():
        raise TrainingError("the test segment is empty; give more history or enlarge split.fractions[3]")
    scores = {
        "level2": L2_COL,
        "level1": L1_COL,
        **{c.removeprefix("l0_"): c for c in l0_cols},
        "baseline_trailing_vol": BASELINE_COL,
        "baseline_prior": PRIOR_COL,
        **{c: c for c in extra_cols or []},
    }
    return evaluate_frame(test, scores, threshold)


def base_rows(table: DataFrame, context: tuple[str, ...] = ()) -> DataFrame:
    """The rows meta-learners and evaluation use: every segment after L0-train, with Level 1's context."""
    from pyspark.sql import functions as F

    return table.where(F.col("segment") > 0).select(*KEY, "segment", "label", BASELINE_COL, *context)
