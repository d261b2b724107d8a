"""Level-0 RandomForest fit time with Spark's node-id cache off (Spark's default) and on (rstack's).

    .venv/bin/python scripts/bench_forest.py [--rows 170000] [--features 20] [--trees 100] [--depth 10]
        [--cores 2] [--repeats 3]

One local[CORES] SparkSession, a synthetic cached training set about the size of one binance-5m
Level-0 batch (4 symbols' training rows), and ``rstack.models.random_forest`` fitted alternately
with ``cache_node_ids`` False and True. Prints each fit, the medians and their ratio, and checks that
both settings grow the same forest: same node count and the same probabilities on 5,000 rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import pandas as pd
from seed_reference import start_spark  # scripts/ is on sys.path when this script runs

from rstack.config import Level0Config
from rstack.models.estimators import random_forest, with_probability


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=170_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    spark = start_spark(args.cores, "4g")
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(args.features)]
    x = rng.normal(size=(args.rows, args.features))
    # A label with a main effect, an interaction and noise, so trees grow to full depth.
    y = (0.5 * x[:, 0] + 0.3 * x[:, 1] * x[:, 2] + rng.normal(size=args.rows)) > 0.8
    frame = pd.DataFrame(x, columns=names).assign(label=y.astype(float), row=np.arange(args.rows))
    train = spark.createDataFrame(frame).repartition(args.cores).cache()
    train.count()
    probe = train.where(f"row < {min(5000, args.rows)}")
    cfg = Level0Config(num_trees=args.trees, max_depth=args.depth)

    seconds: dict[bool, list[float]] = {False: [], True: []}
    probs: dict[bool, np.ndarray] = {}
    nodes: dict[bool, int] = {}
    for i in range(args.repeats):
        for cached in (False, True):
            started = time.perf_counter()
            model = random_forest(names, cfg, cache_node_ids=cached).fit(train)
            seconds[cached].append(time.perf_counter() - started)
            print(f"repeat {i + 1} cacheNodeIds={cached}: fit {seconds[cached][-1]:.1f} s", flush=True)
            probs[cached] = with_probability(model, probe, "p").toPandas().sort_values("row")["p"].to_numpy()
            nodes[cached] = model.stages[-1].totalNumNodes
    spark.stop()

    off, on = statistics.median(seconds[False]), statistics.median(seconds[True])
    shape = f"{args.rows:,} rows x {args.features} features, {args.trees} trees, depth {args.depth}"
    print(f"\n{shape}, local[{args.cores}]")
    print(f"median fit: cacheNodeIds off {off:.1f} s, on {on:.1f} s; on/off = {on / off:.2f}")
    diff = float(np.abs(probs[True] - probs[False]).max())
    print(f"same forest: nodes {nodes[False]:,} vs {nodes[True]:,}; max |p_on - p_off| = {diff:g}", end="")
    print(f" on {len(probs[True]):,} rows")
    if nodes[False] != nodes[True] or diff > 1e-12:
        sys.exit("the node-id cache changed the forest")


if __name__ == "__main__":
    main()
