"""Study, not a product path: would Level 0 gain from features scaled per symbol?

The label is per symbol (forward volatility above that symbol's own L0-train quantile), but the
features are in each symbol's own units (prices from 1e-5 to 7e4, volatilities that differ by
symbol), and a Level-0 forest trained on one batch of symbols scores every symbol. This script
builds rstack's training table in one local[CORES] SparkSession, then fits rstack's Level-0
RandomForest per batch twice: on the features as they are, and on each feature divided by its
symbol's median absolute value over that symbol's L0-train rows (Spark's approximate percentile; a
scaler fitted on the training segment only; a median of 0 leaves that feature unscaled). It prints
each model's ROC-AUC over all symbols' L2-fit rows, next to the trailing-volatility baseline's. The
test segment is not looked at.

    .venv/bin/python scripts/study_symbol_scale.py --data ../shared/data/binance-5m --batch-size 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from seed_reference import start_spark  # scripts/ is on sys.path when this script runs

from rstack.config import load_config
from rstack.data.discover import discover, make_batches
from rstack.features.table import build_training_table
from rstack.features.windows import feature_names
from rstack.models.estimators import random_forest, with_probability
from rstack.models.metrics import roc_auc

L0_TRAIN, L2_FIT = 0, 2
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "laptop.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--driver-memory", default="8g")
    args = parser.parse_args()

    from pyspark.sql import functions as F

    cfg = load_config(args.config, {}, environ={})
    spark = start_spark(args.cores, args.driver_memory)
    # rstack's own setting (runtime.shuffle_partitions), so the forests see the rows partitioned as in a run.
    spark.conf.set("spark.sql.shuffle.partitions", str(cfg.runtime.shuffle_partitions))
    full, summary = build_training_table(spark, discover(args.data), cfg)
    # The test segment is left out before anything is computed from the table.
    table = full.where(F.col("segment").isin(L0_TRAIN, L2_FIT))
    feats = feature_names(cfg.features)

    # One scale per symbol and feature, from L0-train rows only; a median of 0 leaves the feature as it is.
    medians = (
        table.where(F.col("segment") == L0_TRAIN)
        .groupBy("symbol")
        .agg(*[F.percentile_approx(F.abs(F.col(c)), 0.5).alias(f"_m_{c}") for c in feats])
    )
    scaled = table.join(F.broadcast(medians), "symbol").select(
        "symbol",
        "open_time",
        "segment",
        "label",
        "baseline_p",
        *[(F.col(c) / F.when(F.col(f"_m_{c}") != 0, F.col(f"_m_{c}")).otherwise(1.0)).alias(c) for c in feats],
    )
    scaled = scaled.persist()  # every batch's fit and scoring read it
    # Every symbol of the table has L0-train rows (build_training_table drops the others), so the join
    # keeps every row; checked, since a lost symbol would make the two arms score different rows.
    assert scaled.count() == table.count(), "the per-symbol scales lost rows"
    symbols = summary["symbols"]
    batches = make_batches(symbols, args.batch_size)  # the batches `rstack train` forms
    evaluation = table.where(F.col("segment") == L2_FIT).select("symbol", "open_time", "label", "baseline_p")
    base = evaluation.toPandas()
    print(f"{len(symbols)} symbols, {len(base)} L2-fit rows; features: {', '.join(feats)}")
    baseline = roc_auc(base["label"].to_numpy(), base["baseline_p"].to_numpy())
    print(f"baseline_trailing_vol ROC-AUC on L2-fit: {baseline:.4f}")

    found: dict[str, list[float]] = {"as is": [], "scaled per symbol": []}
    for name, frame in (("as is", table), ("scaled per symbol", scaled)):
        for batch in batches:
            t0 = time.time()
            train = frame.where((F.col("segment") == L0_TRAIN) & F.col("symbol").isin(batch))
            model = random_forest(feats, cfg.level0).fit(train)
            scored = with_probability(model, frame.where(F.col("segment") == L2_FIT), "p")
            got = scored.select("label", "p").toPandas()
            auc = roc_auc(got["label"].to_numpy(), got["p"].to_numpy())
            found[name].append(auc)
            took = time.time() - t0
            print(f"{name:>18}: batch {', '.join(batch)}: ROC-AUC on L2-fit {auc:.4f} ({took:.0f}s)", flush=True)
    for name, aucs in found.items():
        print(f"{name:>18}: median {np.median(aucs):.4f}, min {min(aucs):.4f}, max {max(aucs):.4f}")
    spark.stop()


if __name__ == "__main__":
    sys.exit(main())
