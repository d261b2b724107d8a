"""The seed's design, kept as the yardstick for ``scripts/bench.py``: plain PySpark, no Ray.

One local-mode SparkSession; the feature table is a DataFrame defined once and used lazily (nothing
persisted, Spark's default partition counts); Level-0 batches are fitted one after another, and
each fitted model scores the L1-fit, L2-fit and test rows in three separate passes. That is the
seed's structure. What it computes is rstack's, so the comparison is about design only:
the same validation, features (``rstack.features.windows``), label thresholds, global purged segments
(``rstack.features.segments``), estimators (``rstack.models.estimators``), Levels 1 and 2 and evaluation
(``rstack.models.meta``) -- the test ROC-AUCs of both must agree up to RandomForest's bootstrap, which
depends on how rows fall into partitions. The forests keep Spark's default ``cacheNodeIds=False``
unless ``--cache-node-ids`` is given (bench variant e), so the same flag can be credited apart.

    python scripts/seed_reference.py DATA_DIR --config configs/laptop.yaml --batch-size 4 \
        --cores 2 --out result.json

Writes per-stage wall times, row counts and test metrics as JSON; prints a one-line summary.
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

import pyarrow as pa

from rstack.cluster.spark_host import JAVA_OPENS
from rstack.config import Config, load_config
from rstack.data.discover import discover, make_batches, read_klines
from rstack.data.validate import in_time_order, validate_klines
from rstack.features.segments import compute_cutoffs, segment_column
from rstack.features.table import fit_on_train, labelled
from rstack.features.windows import add_features, feature_names, row_in_run, undefined, warmup_rows
from rstack.models.estimators import random_forest
from rstack.models.level0 import BatchSpec, probability_of_one
from rstack.models.meta import base_rows, fit_levels_1_2


def start_spark(cores: int, driver_memory: str) -> Any:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Only what JDK 17 and a fair comparison need; every other setting is Spark's default.
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("rstack-seed-reference")
        .config("spark.driver.memory", driver_memory)
        .config("spark.driver.extraJavaOptions", JAVA_OPENS)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def feature_table(spark: Any, data_dir: Path, cfg: Config) -> tuple[Any, list[str], list[str], dict[str, Any]]:
    """The labelled, segmented table as a lazy DataFrame, plus the symbols kept and the features."""
    from pyspark.sql import functions as F

    dataset = discover(data_dir)
    horizon = cfg.label.horizon
    feats = feature_names(cfg.features)
    raw, bar_ms, _ = validate_klines(in_time_order(read_klines(spark, dataset)), dataset)
    table = add_features(raw, cfg.features, horizon, bar_ms)
    # Window values cannot sit in a WHERE clause: the position in the run becomes a column first.
    usable = (
        table.withColumn("_pos", row_in_run())
        .where(
            (F.col("_pos") > warmup_rows(cfg.features, horizon))
            & ~undefined([*feats, "trail_rv"])
            & F.col("label_end_time").isNotNull()
            & ~undefined(["fwd_rv"])
        )
        .drop("_pos")
    )
    span = usable.agg(F.min("open_time").alias("lo"), F.max("open_time").alias("hi")).first()
    cut = compute_cutoffs(span["lo"], span["hi"], bar_ms, cfg.split.fractions)
    seg = usable.withColumn("segment", segment_column(cut, horizon, cfg.split.embargo)).where(F.col("segment") >= 0)
    fitted = [
        r for r in fit_on_train(seg, cfg.label.label_quantile).collect() if r["train_rows"] >= cfg.split.min_train_rows
    ]
    symbols = sorted(r["symbol"] for r in fitted)
    out = labelled(
        spark,
        seg,
        {r["symbol"]: float(r["threshold"]) for r in fitted},
        {r["symbol"]: float(r["baseline_median"]) for r in fitted},
        feats,
    )
    positives = out.where(F.col("segment") == 0).agg(F.avg("label")).first()[0]
    return out, symbols, feats, {"cutoffs": cut.to_dict(), "prior": float(positives)}


def run(data_dir: Path, cfg: Config, cores: int, models_dir: Path, cache_node_ids: bool = False) -> dict[str, Any]:
    from pyspark.sql import functions as F

    timings: dict[str, float] = {}
    t_start = t = time.time()
    spark = start_spark(cores, cfg.runtime.driver_memory)
    timings["startup"] = time.time() - t

    t = time.time()
    table, symbols, feats, info = feature_table(spark, data_dir, cfg)
    timings["features"] = time.time() - t

    t = time.time()
    l0_tables = []
    for i, syms in enumerate(make_batches(symbols, cfg.level0.batch_size)):
        batch = BatchSpec(i, tuple(syms))
        train = table.where((F.col("segment") == 0) & F.col("symbol").isin(list(syms)))
        model = random_forest(feats, cfg.level0, cache_node_ids=cache_node_ids).fit(train)
        model.write().overwrite().save(str(models_dir / "level0" / batch.name))
        parts = [
            probability_of_one(model, table.where(F.col("segment") == s), batch.column).toPandas() for s in (1, 2, 3)
        ]
        l0_tables.append(pa.concat_tables([pa.Table.from_pandas(p, preserve_index=False) for p in parts]))
        print(f"seed-reference: {batch.name} ({', '.join(syms)}) done at {time.time() - t:.1f}s", flush=True)
    timings["level0"] = time.time() - t

    t = time.time()
    result, test = fit_levels_1_2(
        spark,
        base_rows(table),
        l0_tables,
        cfg,
        str(models_dir / "level1"),
        str(models_dir / "level2"),
        info["prior"],
        cache_node_ids=cache_node_ids,
    )
    inner = result["timings"]
    timings["level1_level2"] = time.time() - t - inner["evaluate"] - inner["save_meta"]
    timings["evaluate"] = inner["evaluate"]
    timings["save"] = inner["save_meta"]
    spark.stop()
    timings["total"] = time.time() - t_start
    return {
        "design": "seed-reference",
        "timings": timings,
        "rows": int(len(test)),
        "input_rows": sum(f.rows for f in discover(data_dir).files),
        "symbols": symbols,
        "batches": len(l0_tables),
        "cutoffs": info["cutoffs"],
        "metrics": result["metrics"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--config", type=Path, default=None, help="rstack YAML config (default: configs/laptop.yaml)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--cores", type=int, default=2, help="local[N]: the cores Spark may use")
    parser.add_argument("--models", type=Path, default=None, help="where models go (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    parser.add_argument(
        "--cache-node-ids",
        action="store_true",
        help="give the forests rstack's cacheNodeIds (off: Spark's default, the seed as written)",
    )
    args = parser.parse_args()
    cfg = load_config(args.config, overrides={"level0.batch_size": args.batch_size})
    with tempfile.TemporaryDirectory(prefix="rstack-seed-") as tmp:
        result = run(args.data_dir, cfg, args.cores, args.models or Path(tmp), args.cache_node_ids)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    tm = result["timings"]
    print(
        f"seed-reference: total {tm['total']:.1f}s (startup {tm['startup']:.1f}, features {tm['features']:.1f}, "
        f"level0 {tm['level0']:.1f}, level1+2 {tm['level1_level2']:.1f}); "
        f"test ROC-AUC L2 {result['metrics']['level2']['roc_auc']:.4f}"
    )


if __name__ == "__main__":
    main()
