"""The estimators of each level, always saved as a PipelineModel that includes its assembler."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rstack.config import XGBOOST_INSTALL, Level0Config, Level1Config, Level2Config
from rstack.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.ml import Estimator, Pipeline, PipelineModel
    from pyspark.sql import DataFrame


def assembled(inputs: list[str], estimator: Estimator) -> Pipeline:
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler

    return Pipeline(stages=[VectorAssembler(inputCols=inputs, outputCol="features"), estimator])


def random_forest(inputs: list[str], cfg: Level0Config | Level1Config, *, cache_node_ids: bool = True) -> Pipeline:
    """Spark's RandomForestClassifier. ``cache_node_ids`` keeps each row's node per tree in a cached RDD
    instead of walking every tree from its root on every level's pass: the same trees (same seed, same
    splits), about half the fit time at depth 10 (scripts/bench_forest.py). Spark's default is off; the
    seed reference keeps it off to stay the seed as written."""
    from pyspark.ml.classification import RandomForestClassifier

    rf = RandomForestClassifier(
        labelCol="label",
        featuresCol="features",
        numTrees=cfg.num_trees,
        maxDepth=cfg.max_depth,
        minInstancesPerNode=cfg.min_instances_per_node,
        featureSubsetStrategy=cfg.feature_subset_strategy,
        seed=cfg.seed,
        cacheNodeIds=cache_node_ids,
    )
    return assembled(inputs, rf)


def xgboost_rf(inputs: list[str], cfg: Level0Config) -> Pipeline:
    """xgboost's PySpark estimator grown as one random forest that mirrors ``random_forest``: one round of
    ``num_trees`` parallel trees (learning rate 1), each on a 63.2% row sample (a bootstrap's expected
    share of distinct rows), as many candidate features per split as Spark's forest draws for
    ``feature_subset_strategy`` (ceil(sqrt(n)) for auto), 32 histogram bins (Spark's maxBins), and
    children of at least ``min_instances_per_node`` rows: in its one round every row's logistic hessian is
    b(1 - b) <= 1/4 at the fitted base rate b, so a child weight of n/4 keeps n rows or more (exactly n
    at a balanced label). xgboost's own minimum weight, 1 (about 4 rows), stays the floor, so a run with
    the default of 1 row grows the forest it grew before the key existed. Trained as one barrier task;
    xgboost.spark runs it on ``spark.task.cpus`` threads and does not let ``nthread`` be set."""
    try:
        from xgboost.spark import SparkXGBClassifier
    except ImportError as exc:
        raise ConfigError(
            f"level0.learner = 'xgboost_rf' needs xgboost and scikit-learn ({exc}); {XGBOOST_INSTALL} "
            "or use level0.learner = random_forest"
        ) from exc

    xgb = SparkXGBClassifier(
        features_col="features",
        label_col="label",
        num_workers=1,
        n_estimators=1,
        num_parallel_tree=cfg.num_trees,
        max_depth=cfg.max_depth,
        learning_rate=1.0,
        subsample=0.632,
        colsample_bynode=feature_share(len(inputs), cfg.num_trees, cfg.feature_subset_strategy),
        min_child_weight=max(1.0, cfg.min_instances_per_node / 4),
        tree_method="hist",
        max_bin=32,
        random_state=cfg.seed,
    )
    return assembled(inputs, xgb)


def features_per_split(n_features: int, num_trees: int, strategy: str) -> int:
    """How many features Spark's forest draws per split for ``featureSubsetStrategy`` (its rules, as in
    Spark's RandomForest: auto is sqrt for a forest and all for a single tree)."""
    if strategy == "auto":
        strategy = "all" if num_trees == 1 else "sqrt"
    counts = {
        "all": n_features,
        "sqrt": math.ceil(math.sqrt(n_features)),
        "log2": max(1, math.ceil(math.log2(max(n_features, 1)))),
        "onethird": math.ceil(n_features / 3),
    }
    if strategy in counts:
        return counts[strategy]
    try:
        return min(int(strategy), n_features)
    except ValueError:
        return math.ceil(float(strategy) * n_features)


def feature_share(n_features: int, num_trees: int, strategy: str = "auto") -> float:
    """colsample_bynode that makes xgboost draw as many features per split as Spark's forest does. xgboost
    takes floor(share * n) (in float32), so the share aims half a feature above the count."""
    count = features_per_split(n_features, num_trees, strategy)
    if count >= n_features or n_features <= 1:
        return 1.0
    return min(1.0, (count + 0.5) / n_features)


def level0_model(inputs: list[str], cfg: Level0Config) -> Pipeline:
    """The Level-0 pipeline of ``cfg.learner``."""
    if cfg.learner == "xgboost_rf":
        return xgboost_rf(inputs, cfg)
    return random_forest(inputs, cfg)


def feature_importances(model: PipelineModel, inputs: list[str]) -> dict[str, float]:
    """{input: importance}, summing to 1 (all 0 if the model never split), for a fitted tree pipeline:
    Spark's featureImportances, or an xgboost model's total gain per feature (0 for a feature never split on)."""
    last: Any = model.stages[-1]
    if hasattr(last, "featureImportances"):
        return dict(zip(inputs, last.featureImportances.toArray().tolist(), strict=True))
    scores = last.get_booster().get_score(importance_type="total_gain")
    # Vector input: the booster names features f0..fN in the assembler's order.
    names = {f"f{i}": name for i, name in enumerate(inputs)}
    gains = dict.fromkeys(inputs, 0.0)
    for key, value in scores.items():
        name = names.get(key, key)
        if name in gains:
            gains[name] += float(value)
    total = sum(gains.values())
    return {name: (g / total if total > 0 else 0.0) for name, g in gains.items()}


def gradient_boosted(inputs: list[str], seed: int) -> Pipeline:
    from pyspark.ml.classification import GBTClassifier

    # Spark's defaults (20 rounds, depth 5, step 0.1): a plain, untuned reference, not a contender tuned on test.
    return assembled(inputs, GBTClassifier(labelCol="label", featuresCol="features", seed=seed))


def har_logit(inputs: list[str]) -> Pipeline:
    """Unpenalized logistic regression on HAR's regressors: the baseline a volatility forecaster tries first."""
    from pyspark.ml.classification import LogisticRegression

    return assembled(inputs, LogisticRegression(labelCol="label", featuresCol="features", maxIter=100, regParam=0.0))


def logistic(inputs: list[str], cfg: Level2Config) -> Pipeline:
    from pyspark.ml.classification import LogisticRegression

    lr = LogisticRegression(
        labelCol="label",
        featuresCol="features",
        maxIter=cfg.max_iter,
        regParam=cfg.reg_param,
        elasticNetParam=cfg.elastic_net_param,
    )
    return assembled(inputs, lr)


def with_probability(model: PipelineModel, df: DataFrame, alias: str) -> DataFrame:
    """``df`` with one more column: the model's probability of class 1. Training, rescoring,
    ``predict`` and ``stream`` all score through this one function."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    return model.transform(df).select(*df.columns, vector_to_array(F.col("probability"))[1].alias(alias))
