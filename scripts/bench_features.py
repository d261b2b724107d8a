"""The features stage alone: ``build_training_table`` timed per Spark action, in one local[CORES] session.

    .venv/bin/python scripts/bench_features.py [--data DIR] [--cores 2] [--repeats 3]

Without --data it runs on synthetic klines (``rstack data synth``, 14 symbols x 70,000 5-minute
rows, about binance-5m's size). Each repeat builds the persisted training table from scratch and
prints how long each of its Spark actions took (validation, the windows, counts, thresholds, the
final table), then the medians. The first repeat includes the JVM's warm-up; compare medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

from seed_reference import start_spark  # scripts/ is on sys.path when this script runs

from rstack.config import Config
from rstack.data.discover import Dataset, discover
from rstack.data.synth import write_synthetic
from rstack.features.table import build_training_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a klines folder (default: synthetic, binance-5m sized)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rstack-bench-features-") as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "klines"
            write_synthetic(data, symbols=14, rows=70_000, interval="5m", seed=7)
        run(discover(data), args.cores, args.repeats)


def run(dataset: Dataset, cores: int, repeats: int) -> None:
    from pyspark.sql import DataFrame

    spark = start_spark(cores, "6g")
    # rstack's own setting (runtime.shuffle_partitions); the seed reference keeps Spark's 200.
    spark.conf.set("spark.sql.shuffle.partitions", str(2 * cores))
    actions: list[tuple[str, float]] = []
    collect = DataFrame.collect

    def timed(self: DataFrame) -> list:
        started = time.perf_counter()
        out = collect(self)
        seconds = time.perf_counter() - started
        caller = traceback.extract_stack()[-2]
        actions.append((f"{Path(caller.filename).name}:{caller.lineno} ({caller.name})", seconds))
        return out

    DataFrame.collect = timed  # type: ignore[method-assign]
    totals: list[float] = []
    per_action: dict[str, list[float]] = defaultdict(list)
    try:
        for i in range(repeats):
            actions.clear()
            started = time.perf_counter()
            table, summary = build_training_table(spark, dataset, Config())
            totals.append(time.perf_counter() - started)
            table.unpersist()
            print(f"repeat {i + 1}: {totals[-1]:.1f} s, {sum(summary['rows_by_segment'].values()):,} rows", flush=True)
            for name, seconds in actions:
                per_action[name].append(seconds)
                print(f"  {seconds:6.1f} s  {name}", flush=True)
    finally:
        DataFrame.collect = collect  # type: ignore[method-assign]
        spark.stop()
    print(f"median over {repeats}: {statistics.median(totals):.1f} s")
    for name, values in per_action.items():
        print(f"  {statistics.median(values):6.1f} s  {name}")


if __name__ == "__main__":
    main()
