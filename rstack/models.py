"""The estimators of each level, always saved as a PipelineModel that includes its assembler."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rstack.config import Level0Config, Level1Config, Level2Config

if TYPE_CHECKING:
    from pyspark.ml import Estimator, Pipeline, PipelineModel
    from pyspark.sql import DataFrame


def assembled(inputs: list[str], estimator: Estimator) -> Pipeline:
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler

    return Pipeline(stages=[VectorAssembler(inputCols=inputs, outputCol="features"), estimator])


def random_forest(inputs: list[str], cfg: Level0Config | Level1Config) -> Pipeline:
    from pyspark.ml.classification import RandomForestClassifier

    rf = RandomForestClassifier(
        labelCol="label", featuresCol="features", numTrees=cfg.num_trees, maxDepth=cfg.max_depth, seed=cfg.seed
    )
    return assembled(inputs, rf)


def gradient_boosted(inputs: list[str], seed: int) -> Pipeline:
    from pyspark.ml.classification import GBTClassifier

    # Spark's defaults (20 rounds, depth 5, step 0.1): a plain, untuned reference, not a contender tuned on test.
    return assembled(inputs, GBTClassifier(labelCol="label", featuresCol="features", seed=seed))


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
