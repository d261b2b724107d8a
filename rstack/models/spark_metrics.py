"""``metrics.evaluate``'s figures computed by Spark aggregates, so that no process holds all the rows.

Training, rescoring and ``rstack evaluate`` judge millions of rows per model; here every model's
scores are stacked into one long (model, score, label) table and reduced on the executors. Only
one small table reaches the driver: per model and range partition, the count of positives and
negatives, from which each partition's cumulative offsets are computed. ``metrics.py`` stays the
definition for rows already in memory (the report's curves); tests/test_spark_metrics.py checks
the two agree to 1e-9.
"""

from __future__ import annotations

from itertools import groupby
from typing import TYPE_CHECKING, Any

from rstack.errors import TrainingError
from rstack.models.metrics import EPS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def _long(df: DataFrame, scores: dict[str, str], label: str) -> DataFrame:
    """One row per (input row, model): ``name``, score ``s``, label ``y``."""
    from pyspark.sql import functions as F

    models = F.array(*[F.struct(F.lit(n).alias("name"), F.col(c).cast("double").alias("s")) for n, c in scores.items()])
    return df.select(F.col(label).cast("double").alias("y"), F.explode(models).alias("m")).select("m.name", "m.s", "y")


def _pointwise(stacked: DataFrame, threshold: float) -> dict[str, dict[str, Any]]:
    """Counts, log loss, Brier score and the confusion counts, one aggregate per model."""
    from pyspark.sql import functions as F

    y, s = F.col("y"), F.col("s")
    p = F.least(F.greatest(s, F.lit(EPS)), F.lit(1 - EPS))
    pred = s >= F.lit(threshold)
    pos, neg = y == 1, y != 1

    def count(cond: Any) -> Any:
        return F.sum(F.when(cond, 1).otherwise(0)).cast("long")

    rows = stacked.groupBy("name").agg(
        F.count("*").alias("rows"),
        count(s.isNull() | F.isnan(s)).alias("missing"),
        F.sum(y).alias("positives"),
        F.sum(-(y * F.log(p) + (1 - y) * F.log(1 - p))).alias("log_loss_sum"),
        F.sum((s - y) * (s - y)).alias("squares"),
        count(pred & pos).alias("tp"),
        count(pred & neg).alias("fp"),
        count(~pred & neg).alias("tn"),
        count(~pred & pos).alias("fn"),
    )
    out = {}
    for r in rows.collect():
        n = r["rows"]
        if r["missing"]:
            # Spark's sums would skip a null and carry a NaN through: neither is a figure to report.
            raise TrainingError(
                f"the scores of {r['name']} have {r['missing']} missing (null or NaN) values in {n} rows, so "
                "no metric of it is defined; a model or its input is damaged: check the data "
                "(rstack data check) and train again"
            )
        out[r["name"]] = {
            "log_loss": r["log_loss_sum"] / n,
            "brier": r["squares"] / n,
            "confusion": {k: int(r[k]) for k in ("tp", "fp", "tn", "fn")},
            "rows": int(n),
            "positive_rate": r["positives"] / n,
        }
    return out


def _ranking(stacked: DataFrame) -> dict[str, tuple[float, float]]:
    """(ROC-AUC, average precision) per model, exact: ties count one half, as scikit-learn's do.

    Distinct scores are range-partitioned by (model, score descending), so that a model's partitions
    follow each other in score order; the driver turns the per-partition totals into offsets and a
    window within each partition completes the cumulative true and false positives. With them,
    ROC-AUC is the Mann-Whitney sum over distinct scores, neg * (positives above + pos / 2) / (P * N),
    and average precision the step sum pos / P * precision (scikit-learn's definitions)."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = stacked.sparkSession
    parts = int(spark.conf.get("spark.sql.shuffle.partitions") or 4)
    distinct = (
        stacked.groupBy("name", "s")
        .agg(F.sum("y").alias("pos"), (F.count("*") - F.sum("y")).alias("neg"))
        .repartitionByRange(parts, "name", F.col("s").desc())
        .withColumn("pid", F.spark_partition_id())
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        totals = sorted(
            (r["name"], r["pid"], r["pos"], r["neg"])
            for r in distinct.groupBy("name", "pid").agg(F.sum("pos").alias("pos"), F.sum("neg").alias("neg")).collect()
        )
        offsets, whole = [], {}
        for name, group in groupby(totals, key=lambda t: t[0]):
            before_pos = before_neg = 0.0
            for _, pid, pos, neg in group:
                offsets.append((name, pid, before_pos, before_neg))
                before_pos, before_neg = before_pos + pos, before_neg + neg
            whole[name] = (before_pos, before_neg)
        offset_df = spark.createDataFrame(offsets, "name string, pid int, off_pos double, off_neg double")
        w = Window.partitionBy("name", "pid").orderBy(F.col("s").desc()).rowsBetween(Window.unboundedPreceding, 0)
        cumulative = (
            distinct.join(F.broadcast(offset_df), ["name", "pid"])
            .withColumn("tp", F.col("off_pos") + F.sum("pos").over(w))
            .withColumn("fp", F.col("off_neg") + F.sum("neg").over(w))
        )
        sums = cumulative.groupBy("name").agg(
            F.sum(F.col("neg") * (F.col("tp") - F.col("pos") / 2)).alias("auc_sum"),
            F.sum(F.when(F.col("pos") > 0, F.col("pos") * F.col("tp") / (F.col("tp") + F.col("fp")))).alias("ap_sum"),
        )
        out = {}
        for r in sums.collect():
            p, n = whole[r["name"]]
            auc = r["auc_sum"] / (p * n) if p > 0 and n > 0 else float("nan")
            ap = r["ap_sum"] / p if p > 0 else float("nan")
            out[r["name"]] = (auc, ap)
        return out
    finally:
        distinct.unpersist()


def evaluate_frame(df: DataFrame, scores: dict[str, str], threshold: float, label: str = "label") -> dict[str, Any]:
    """``{name: metrics.evaluate(label, df[column], threshold)}`` for every ``name: column`` of ``scores``;
    a null or NaN score is an error (``TrainingError``), as it is for scikit-learn's metrics."""
    stacked = _long(df, scores, label)
    pointwise = _pointwise(stacked, threshold)
    ranking = _ranking(stacked)
    out = {}
    for name in scores:
        if name not in pointwise:
            out[name] = {"roc_auc": float("nan"), "pr_auc": float("nan"), "log_loss": float("nan"),
                         "brier": float("nan"), "confusion": {"tp": 0, "fp": 0, "tn": 0, "fn": 0},
                         "rows": 0, "positive_rate": float("nan")}  # fmt: skip
            continue
        auc, ap = ranking[name]
        out[name] = {"roc_auc": auc, "pr_auc": ap, **pointwise[name]}
    return out
