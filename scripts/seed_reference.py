"""The seed's design as a competent engineer would write it: the frozen yardstick of ``scripts/bench.py``.

FROZEN: this file must not change when rstack changes. It imports nothing from rstack; it follows
the seed's design document (``../shared/seed/``) and nothing else, so its times answer "how long
would the seed's design make me wait for this job on these cores?" whatever rstack becomes.

What it does, as the seed describes:
- one local SparkSession (``local[CORES]``, adaptive query execution on), no Ray;
- its own loader: every ``*.parquet`` in the folder, unioned (symbol, open_time, OHLCV);
- the seed's twelve features with its own Window code, ``Window.partitionBy("symbol").orderBy("open_time")``:
  lag1..3_close, return_1, return_2, hl_spread, std_5, std_10, lag1_volume, volume_change, mean_5,
  price_ma_ratio;
- its own forward-volatility label: the standard deviation of the next ``horizon`` log returns above
  the symbol's median of it over the training rows;
- the seed's time split: the first 90 % of the time range trains Level 0, the last 10 % is the
  holdout on which Levels 1 and 2 are fitted and evaluated (in-sample for them, as in the seed);
- batches one after another: each batch's RandomForest (100 trees, depth 10, seed 42) is fitted
  on its symbols' training rows and scores every symbol's holdout rows in one pass;
- Level 1, RandomForest (50 trees, depth 8) over the Level-0 probabilities; Level 2, elastic-net
  LogisticRegression (maxIter 100, regParam 0.01, elasticNetParam 0.5) on Level 1's probability;
- models saved in the seed's layout: ``level0_batch_{i}``, ``level1_model``, ``level2_model``.

A competent engineer's choices where the seed is silent: the feature table is computed once and
cached, so each batch's fit and scoring reuse it; Level-0 predictions stay in Spark and are joined
on (symbol, open_time); nothing is recomputed that the seed does not imply.

    python scripts/seed_reference.py DATA_DIR --batch-size 10 --cores 2 --out result.json

Writes per-stage wall times, row counts and Level 2's ROC-AUC on the holdout (in-sample, not
comparable to rstack's test figure: accuracy is compared separately) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

# JDK 17 closes these packages; Spark's and Arrow's reflection needs them open.
JAVA_OPENS = " ".join(
    f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
    for pkg in (
        "java.lang",
        "java.lang.invoke",
        "java.lang.reflect",
        "java.io",
        "java.net",
        "java.nio",
        "java.util",
        "java.util.concurrent",
        "java.util.concurrent.atomic",
        "sun.nio.ch",
        "sun.nio.cs",
        "sun.security.action",
        "sun.util.calendar",
    )
)
FEATURES = [
    "lag1_close",
    "lag2_close",
    "lag3_close",
    "return_1",
    "return_2",
    "hl_spread",
    "std_5",
    "std_10",
    "lag1_volume",
    "volume_change",
    "mean_5",
    "price_ma_ratio",
]
TRAIN_RATIO = 0.9


def start_spark(cores: int, driver_memory: str) -> Any:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("seed-reference")
        .config("spark.driver.memory", driver_memory)
        .config("spark.driver.extraJavaOptions", JAVA_OPENS)
        .config("spark.sql.adaptive.enabled", "true")
        # Spark's 200 shuffle partitions are sized for clusters; on local[N] every forest pass would run
        # 200 tiny tasks (60 s instead of 3 s for a small batch). Two per core, as anyone tuning it would.
        .config("spark.sql.shuffle.partitions", str(2 * cores))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def load(spark: Any, data_dir: Path) -> Any:
    """The seed's loader: every Parquet file of the folder, sorted by name, in one DataFrame."""
    from pyspark.sql import functions as F

    files = sorted(str(p) for p in Path(data_dir).glob("*.parquet"))
    if not files:
        raise SystemExit(f"no .parquet files in {data_dir}")
    df = spark.read.parquet(*files)
    return df.select(
        "symbol",
        F.col("open_time").cast("long").alias("open_time"),
        *[F.col(c).cast("double").alias(c) for c in ("open", "high", "low", "close", "volume")],
    )


def features_and_label(df: Any, horizon: int) -> Any:
    """The seed's twelve features and its forward-volatility measure, per symbol in time order."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("symbol").orderBy("open_time")
    close, volume = F.col("close"), F.col("volume")
    out = (
        df.withColumn("lag1_close", F.lag(close, 1).over(w))
        .withColumn("lag2_close", F.lag(close, 2).over(w))
        .withColumn("lag3_close", F.lag(close, 3).over(w))
        .withColumn("return_1", close / F.col("lag1_close") - 1)
        .withColumn("return_2", close / F.col("lag2_close") - 1)
        .withColumn("hl_spread", (F.col("high") - F.col("low")) / close)
        .withColumn("std_5", F.stddev(close).over(w.rowsBetween(-4, 0)))
        .withColumn("std_10", F.stddev(close).over(w.rowsBetween(-9, 0)))
        .withColumn("lag1_volume", F.lag(volume, 1).over(w))
        .withColumn("volume_change", volume / F.col("lag1_volume") - 1)
        .withColumn("mean_5", F.avg(close).over(w.rowsBetween(-4, 0)))
        .withColumn("price_ma_ratio", close / F.col("mean_5"))
        .withColumn("log_ret", F.log(close / F.col("lag1_close")))
    )
    ahead = w.rowsBetween(1, horizon)
    out = out.withColumn("fwd_vol", F.stddev("log_ret").over(ahead)).withColumn("fwd_n", F.count("log_ret").over(ahead))
    # Rows whose windows are not filled yet (the first ten) or whose horizon runs past the data.
    return out.where((F.col("fwd_n") == horizon) & F.col("std_10").isNotNull()).na.drop(subset=[*FEATURES, "fwd_vol"])


def labelled_table(spark: Any, data_dir: Path, horizon: int) -> tuple[Any, int, list[str]]:
    """The cached table with ``train`` (the seed's 90 % time split) and ``label``; the cut; the symbols."""
    from pyspark.sql import functions as F

    rows = features_and_label(load(spark, data_dir), horizon)
    span = rows.agg(F.min("open_time").alias("lo"), F.max("open_time").alias("hi")).first()
    cut = int(span["lo"] + TRAIN_RATIO * (span["hi"] - span["lo"]))
    rows = rows.withColumn("train", F.col("open_time") < cut)
    medians = rows.where("train").groupBy("symbol").agg(F.percentile_approx("fwd_vol", 0.5).alias("median_vol"))
    table = (
        rows.join(medians, "symbol")
        .withColumn("label", (F.col("fwd_vol") > F.col("median_vol")).cast("double"))
        .select("symbol", "open_time", "train", "label", *FEATURES)
        .cache()
    )
    table.count()  # computed once here, then reused by every batch's fit and scoring
    symbols = sorted(r["symbol"] for r in table.select("symbol").distinct().collect())
    return table, cut, symbols


def forest(inputs: list[str], trees: int, depth: int, cache_node_ids: bool) -> Any:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.ml.feature import VectorAssembler

    rf = RandomForestClassifier(numTrees=trees, maxDepth=depth, seed=42, cacheNodeIds=cache_node_ids)
    return Pipeline(stages=[VectorAssembler(inputCols=inputs, outputCol="features"), rf])


def p_one(model: Any, rows: Any, name: str) -> Any:
    from pyspark.ml.functions import vector_to_array

    return model.transform(rows).select("symbol", "open_time", vector_to_array("probability")[1].alias(name))


def run(
    data_dir: Path, batch_size: int, horizon: int, cores: int, models: Path, cache_node_ids: bool
) -> dict[str, Any]:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    timings: dict[str, float] = {}
    t_start = t = time.time()
    spark = start_spark(cores, "2g")
    timings["startup"] = time.time() - t

    t = time.time()
    table, cut, symbols = labelled_table(spark, data_dir, horizon)
    holdout = table.where(~F.col("train")).cache()
    holdout_rows = holdout.count()
    timings["features"] = time.time() - t

    t = time.time()
    meta = holdout.select("symbol", "open_time", "label")
    batches = [symbols[i : i + batch_size] for i in range(0, len(symbols), batch_size)]
    l0_cols = []
    for i, syms in enumerate(batches):
        model = forest(FEATURES, 100, 10, cache_node_ids).fit(table.where(F.col("train") & F.col("symbol").isin(syms)))
        model.stages[-1].write().overwrite().save(str(models / f"level0_batch_{i}"))
        preds = p_one(model, holdout, f"l0_{i}").cache()
        preds.count()
        meta = meta.join(preds, ["symbol", "open_time"])
        l0_cols.append(f"l0_{i}")
        print(f"seed-reference: batch {i} ({', '.join(syms)}) done at {time.time() - t:.1f}s", flush=True)
    meta = meta.cache()
    meta.count()
    timings["level0"] = time.time() - t

    t = time.time()
    l1 = forest(l0_cols, 50, 8, cache_node_ids).fit(meta)
    with_l1 = meta.join(p_one(l1, meta, "l1"), ["symbol", "open_time"]).cache()
    with_l1.count()
    lr = LogisticRegression(maxIter=100, regParam=0.01, elasticNetParam=0.5)
    l2 = Pipeline(stages=[VectorAssembler(inputCols=["l1"], outputCol="features"), lr]).fit(with_l1)
    final = l2.transform(with_l1).cache()
    final.count()
    timings["level1_level2"] = time.time() - t

    t = time.time()
    auc = BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="probability").evaluate(final)
    timings["evaluate"] = time.time() - t
    t = time.time()
    l1.stages[-1].write().overwrite().save(str(models / "level1_model"))
    l2.stages[-1].write().overwrite().save(str(models / "level2_model"))
    timings["save"] = time.time() - t
    spark.stop()
    timings["total"] = time.time() - t_start
    # From the files' footers, after the clock stops: a Spark count here would charge the yardstick a read.
    input_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in Path(data_dir).glob("*.parquet"))
    return {
        "design": "seed-reference (frozen)",
        "timings": timings,
        "rows": holdout_rows,
        "input_rows": input_rows,
        "symbols": symbols,
        "batches": len(batches),
        "cut_ms": cut,
        "metrics": {"level2": {"roc_auc": auc, "segment": "holdout, where Levels 1 and 2 are fitted (in-sample)"}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--batch-size", type=int, default=10, help="symbols per Level-0 model (the seed's 10)")
    parser.add_argument("--horizon", type=int, default=5, help="forward log returns in the label")
    parser.add_argument("--cores", type=int, default=2, help="local[N]: the cores Spark may use")
    parser.add_argument("--models", type=Path, default=None, help="where models go (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    parser.add_argument("--cache-node-ids", action="store_true", help="cacheNodeIds on the forests (Spark: off)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seed-reference-") as tmp:
        models = args.models or Path(tmp)
        result = run(args.data_dir, args.batch_size, args.horizon, args.cores, models, args.cache_node_ids)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    tm = result["timings"]
    print(
        f"seed-reference: total {tm['total']:.1f}s (startup {tm['startup']:.1f}, features {tm['features']:.1f}, "
        f"level0 {tm['level0']:.1f}, level1+2 {tm['level1_level2']:.1f}); "
        f"L2 holdout ROC-AUC (in-sample) {result['metrics']['level2']['roc_auc']:.4f}"
    )


if __name__ == "__main__":
    main()
