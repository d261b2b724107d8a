"""level0.learner: the config key, each learner's pipeline on a small local Spark, and a Level-0 batch fitted
with xgboost_rf. A plain local SparkSession (no Ray): these are estimator checks, not cluster checks."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rstack.config import LEARNERS, Config, Level0Config, load_config, result_config
from rstack.errors import ConfigError
from rstack.models.estimators import (
    feature_importances,
    feature_share,
    features_per_split,
    level0_model,
    random_forest,
    with_probability,
    xgboost_rf,
)
from rstack.models.level0 import BatchSpec, fit_level0_batch
from rstack.models.metrics import roc_auc

FEATURES = ["noise_a", "noise_b", "noise_c", "signal", "noise_d"]
HOUR_MS = 3_600_000
TRAIN_ROWS = 1500


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [("default", None), *(("cli", v) for v in LEARNERS), ("env", "xgboost_rf"), ("yaml", "xgboost_rf")],
)
def test_learner_is_accepted(tmp_path: Path, source: str, value: str | None) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"level0:\n  learner: {value}\n" if source == "yaml" else "")
    overrides = {"level0.learner": value} if source == "cli" else {}
    environ = {"RSTACK_LEVEL0__LEARNER": value} if source == "env" else {}
    cfg = load_config(path, overrides, environ=environ)
    assert cfg.level0.learner == (value or "random_forest")


@pytest.mark.parametrize("value", ["xgboost", "gbt", "RandomForest", ""])
def test_unknown_learner_is_rejected(value: str) -> None:
    rule = "use one of random_forest, xgboost_rf"
    with pytest.raises(ConfigError, match=rf"level0.learner = '{value}' is invalid: {rule}"):
        load_config(None, {"level0.learner": value}, environ={})


@pytest.mark.parametrize(
    ("absent", "named"),
    [({"xgboost"}, "xgboost"), ({"sklearn"}, "scikit-learn"), ({"xgboost", "sklearn"}, "xgboost and scikit-learn")],
)
def test_xgboost_rf_without_xgboost_names_the_fix(monkeypatch: pytest.MonkeyPatch, absent: set, named: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name in absent else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=rf"needs {named}, not installed here: pip install 'rstack\[xgboost\]'"):
        load_config(None, {"level0.learner": "xgboost_rf"}, environ={})
    # random_forest does not need it.
    assert load_config(None, {}, environ={}).level0.learner == "random_forest"


def test_xgboost_rf_pipeline_without_xgboost_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xgboost.spark", None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"pip install 'rstack\[xgboost\]'"):
        xgboost_rf(FEATURES, Level0Config(learner="xgboost_rf"))


def test_run_record_from_before_the_learner_key_still_matches() -> None:
    record = json.loads(json.dumps(Config().to_dict()))
    del record["level0"]["learner"]
    assert result_config(record) == result_config(Config())
    assert result_config(Config().replace({"level0.learner": "xgboost_rf"})) != result_config(record)


@pytest.mark.parametrize("n_features", [*range(1, 40), 100, 250])
def test_xgboost_draws_as_many_features_per_split_as_spark(n_features: int) -> None:
    # xgboost keeps max(1, int(float32(colsample_bynode) * n)); Spark's forest keeps ceil(sqrt(n)) for auto.
    for strategy in ("auto", "sqrt", "log2", "onethird", "all", "0.5", "0.25", "3", "1"):
        share = feature_share(n_features, 100, strategy)
        assert 0 < share <= 1
        drawn = max(1, int(np.float32(share) * n_features))
        assert drawn == features_per_split(n_features, 100, strategy), strategy
    assert features_per_split(n_features, 100, "auto") == int(np.ceil(np.sqrt(n_features)))
    assert feature_share(n_features, 1) == 1.0  # a single tree uses all features, as Spark's does


@pytest.mark.parametrize(
    ("strategy", "count"),
    # Spark's RandomForest rules for 25 features: sqrt 5, log2 5, onethird 9, a share is ceil(share * n),
    # a whole number is capped at n.
    [
        *[("auto", 5), ("sqrt", 5), ("log2", 5), ("onethird", 9), ("all", 25)],
        *[("0.5", 13), ("1.0", 25), ("7", 7), ("40", 25)],
    ],
)
def test_features_per_split_follows_sparks_rules(strategy: str, count: int) -> None:
    assert features_per_split(25, 100, strategy) == count


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("level0.min_instances_per_node", 0, r"level0.min_instances_per_node = 0 is invalid: .*>= 1"),
        ("level1.min_instances_per_node", "many", r"level1.min_instances_per_node: expected an integer, got 'many'"),
        ("level0.feature_subset_strategy", "half", r"level0.feature_subset_strategy = 'half' is invalid: use one of"),
        ("level0.feature_subset_strategy", "0", r"level0.feature_subset_strategy = '0' is invalid: .*in \(0, 1\]"),
        ("level1.feature_subset_strategy", "1.5", r"level1.feature_subset_strategy = '1.5' is invalid"),
        # Python's int() and float() read these; Spark's parsing refuses them at fit time, after Ray started.
        *[
            ("level0.feature_subset_strategy", v, r"is invalid: use one of")
            for v in ("1_0", " 7", "4294967296", "1e-1")
        ],
    ],
)
def test_bad_tree_options_name_key_value_and_fix(key: str, value: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(None, {key: value}, environ={})


def test_tree_options_read_from_yaml_and_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("level0:\n  feature_subset_strategy: 0.5\n  min_instances_per_node: 20\n")
    environ = {"RSTACK_LEVEL1__FEATURE_SUBSET_STRATEGY": "onethird", "RSTACK_LEVEL1__MIN_INSTANCES_PER_NODE": "5"}
    cfg = load_config(path, {}, environ=environ)
    assert (cfg.level0.feature_subset_strategy, cfg.level0.min_instances_per_node) == ("0.5", 20)
    assert (cfg.level1.feature_subset_strategy, cfg.level1.min_instances_per_node) == ("onethird", 5)
    # A run recorded before these keys existed used their defaults, and still matches (resumes).
    record = json.loads(json.dumps(Config().to_dict()))
    del record["level0"]["min_instances_per_node"], record["level1"]["feature_subset_strategy"]
    assert result_config(record) == result_config(Config())


# --- Spark ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    from rstack.cluster.spark_host import JAVA_OPENS

    # Python workers (pandas UDFs, xgboost's barrier task) must run this interpreter, as Runtime arranges.
    before = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("rstack-test-learner")
        .config("spark.driver.extraJavaOptions", JAVA_OPENS)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        if before is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = before


@pytest.fixture(scope="module")
def table(spark: Any) -> Any:
    """2,000 rows of two symbols; the label follows ``signal`` (plus noise), the other four are noise.
    Segment 0 (first 1,500 rows) trains, segments 1..3 are held out."""
    n = 2000
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, len(FEATURES)))
    signal = x[:, FEATURES.index("signal")]
    row = np.arange(n)
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["label"] = (signal + 0.5 * rng.normal(size=n) > 0).astype(float)
    frame["row"] = row
    frame["symbol"] = np.where(row % 2 == 0, "AAA", "BBB")
    frame["open_time"] = (row // 2).astype(np.int64) * HOUR_MS
    frame["segment"] = np.where(row < TRAIN_ROWS, 0, 1 + (row - TRAIN_ROWS) * 3 // (n - TRAIN_ROWS)).astype(np.int32)
    return spark.createDataFrame(frame).cache()


@pytest.mark.parametrize(
    ("learner", "stage", "params"),
    [
        (
            "random_forest",
            "RandomForestClassifier",
            {
                "numTrees": 20,
                "maxDepth": 5,
                "seed": 3,
                "cacheNodeIds": True,
                "minInstancesPerNode": 8,
                "featureSubsetStrategy": "onethird",
            },
        ),
        (
            "xgboost_rf",
            "SparkXGBClassifier",
            {
                "n_estimators": 1,
                "num_parallel_tree": 20,
                "max_depth": 5,
                "learning_rate": 1.0,
                "subsample": 0.632,
                "colsample_bynode": 0.5,  # onethird: ceil(5 / 3) = 2 of 5 features per split
                "min_child_weight": 2.0,  # 8 rows x a logistic hessian of at most 1/4
                "tree_method": "hist",
                "max_bin": 32,
                "random_state": 3,
                "num_workers": 1,
                "featuresCol": "features",
                "labelCol": "label",
            },
        ),
    ],
)
def test_level0_model_builds_the_configured_learner(spark: Any, learner: str, stage: str, params: dict) -> None:
    tree = {"min_instances_per_node": 8, "feature_subset_strategy": "onethird"}
    pipeline = level0_model(FEATURES, Level0Config(num_trees=20, max_depth=5, seed=3, learner=learner, **tree))
    assembler, estimator = pipeline.getStages()
    assert assembler.getInputCols() == FEATURES and assembler.getOutputCol() == "features"
    assert type(estimator).__name__ == stage
    assert {k: estimator.getOrDefault(k) for k in params} == params


@pytest.mark.parametrize(("rows", "weight"), [(1, 1.0), (4, 1.0), (20, 5.0)])
def test_xgboost_rf_minimum_child_weight(spark: Any, rows: int, weight: float) -> None:
    # xgboost's own 1 stays the floor: the default of 1 row grows the forest xgboost_rf grew before the key.
    cfg = Level0Config(learner="xgboost_rf", min_instances_per_node=rows)
    assert xgboost_rf(FEATURES, cfg).getStages()[1].getOrDefault("min_child_weight") == weight


@pytest.mark.parametrize("learner", LEARNERS)
def test_learner_fits_scores_and_reloads(spark: Any, table: Any, tmp_path: Path, learner: str) -> None:
    from pyspark.ml import PipelineModel

    cfg = Level0Config(num_trees=20, max_depth=5, learner=learner)
    held = table.where("segment > 0")
    started = time.perf_counter()
    model = level0_model(FEATURES, cfg).fit(table.where("segment = 0"))
    print(f"\n{learner}: fit {time.perf_counter() - started:.2f} s on {TRAIN_ROWS} rows x {len(FEATURES)} features")

    scored = with_probability(model, held, "p").toPandas().sort_values("row")
    p = scored["p"].to_numpy()
    assert len(p) == 500 and ((p >= 0) & (p <= 1)).all()
    assert roc_auc(scored["label"].to_numpy(), p) > 0.7

    importances = feature_importances(model, FEATURES)
    assert list(importances) == FEATURES
    assert all(isinstance(v, float) and v >= 0 for v in importances.values())
    assert sum(importances.values()) == pytest.approx(1.0)
    assert max(importances, key=importances.__getitem__) == "signal"

    for _ in range(2):  # a retried Level-0 batch saves over its earlier attempt
        model.write().overwrite().save(str(tmp_path / "model"))
    loaded = PipelineModel.load(str(tmp_path / "model"))
    assert type(loaded.stages[-1]) is type(model.stages[-1])
    again = with_probability(loaded, held, "p").toPandas().sort_values("row")
    np.testing.assert_array_equal(again["p"].to_numpy(), p)
    assert feature_importances(loaded, FEATURES) == pytest.approx(importances)


def test_node_id_cache_grows_the_same_forest(spark: Any, table: Any) -> None:
    """rstack turns on Spark's node-id cache for speed only: the forest must be the one Spark grows by
    default (the seed reference keeps the default, and the bench credits the setting apart)."""
    cfg = Level0Config(num_trees=20, max_depth=6, seed=11)
    train, held = table.where("segment = 0"), table.where("segment > 0")
    fitted = {cached: random_forest(FEATURES, cfg, cache_node_ids=cached).fit(train) for cached in (False, True)}
    assert [m.stages[-1].getOrDefault("cacheNodeIds") for m in fitted.values()] == [False, True]
    forests = [m.stages[-1] for m in fitted.values()]
    assert forests[0].totalNumNodes == forests[1].totalNumNodes > 20
    assert forests[0].toDebugString.split("\n", 1)[1] == forests[1].toDebugString.split("\n", 1)[1]
    p = [with_probability(m, held, "p").toPandas().sort_values("row")["p"].to_numpy() for m in fitted.values()]
    np.testing.assert_array_equal(p[0], p[1])


def test_fit_level0_batch_with_xgboost_rf(spark: Any, table: Any, tmp_path: Path) -> None:
    from pyspark.ml import PipelineModel

    cfg = Level0Config(num_trees=10, max_depth=4, learner="xgboost_rf")
    batch = BatchSpec(0, ("AAA", "BBB"))
    model_path = tmp_path / batch.name
    meta = fit_level0_batch(table, batch, FEATURES, cfg, str(model_path), str(tmp_path / "p.parquet"))
    predictions = pq.read_table(tmp_path / "p.parquet")

    importances = meta["feature_importances"]
    assert list(importances) == FEATURES
    assert sum(importances.values()) == pytest.approx(1.0)
    assert max(importances, key=importances.__getitem__) == "signal"
    json.dumps(meta)  # the manifest entry stays plain JSON
    assert predictions.column_names == ["symbol", "open_time", batch.column]
    assert predictions.num_rows == meta["scored_rows"] == 2000 - TRAIN_ROWS
    p = predictions.column(batch.column).to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    assert type(PipelineModel.load(str(model_path)).stages[-1]).__name__ == "SparkXGBClassifierModel"


def test_refit_scores_test_with_a_model_of_all_history_before_it(spark: Any, table: Any, tmp_path: Path) -> None:
    from pyspark.ml import PipelineModel
    from pyspark.sql import functions as F

    from rstack.models.level0 import probability_of_one

    cfg = Level0Config(num_trees=10, max_depth=4, seed=3)
    batch = BatchSpec(0, ("AAA",))  # one of the two symbols: each refit sees its own batch's rows only
    fit_level0_batch(table, batch, FEATURES, cfg, str(tmp_path / "plain"), str(tmp_path / "plain.parquet"))
    refit = replace(cfg, refit=True)
    fit_level0_batch(table, batch, FEATURES, refit, str(tmp_path / "refit"), str(tmp_path / "refit.parquet"))
    key = ["symbol", "open_time"]
    a = pd.read_parquet(tmp_path / "plain.parquet").sort_values(key).reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "refit.parquet").sort_values(key).reset_index(drop=True)
    segment = table.select(*key, "segment").toPandas().set_index(key)["segment"]
    seg = b.set_index(key).index.map(segment).to_numpy()
    assert len(a) == len(b) == 2000 - TRAIN_ROWS  # every symbol's later rows are scored
    # The meta levels' rows (L1-fit, L2-fit) come from the L0-train model, as without refit...
    meta = seg <= 2
    np.testing.assert_array_equal(a.loc[meta, batch.column], b.loc[meta, batch.column])
    # ...the test rows from a model fitted on segments 0-2, which is the one saved for serving.
    want = (
        probability_of_one(
            level0_model(FEATURES, cfg).fit(table.where((F.col("segment") <= 2) & (F.col("symbol") == "AAA"))),
            table.where(F.col("segment") == 3),
            "p",
        )
        .toPandas()
        .sort_values(key)
        .reset_index(drop=True)
    )
    np.testing.assert_allclose(b.loc[~meta, batch.column].to_numpy(), want["p"].to_numpy(), rtol=0, atol=1e-12)
    assert not np.allclose(a.loc[~meta, batch.column].to_numpy(), want["p"].to_numpy())
    saved = probability_of_one(PipelineModel.load(str(tmp_path / "refit")), table.where(F.col("segment") == 3), "p")
    np.testing.assert_allclose(saved.toPandas().sort_values(key)["p"].to_numpy(), want["p"].to_numpy(), atol=1e-12)
