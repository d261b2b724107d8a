"""The distributed metrics equal the in-memory ones (``metrics.evaluate``) to 1e-9 and refuse missing
scores, the bounded Parquet writer keeps every row in key order, and the meta-feature join takes
exactly one prediction per row and Level-0 model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rstack._io import part_number, write_spark_parquet
from rstack.errors import TrainingError
from rstack.models.convert import to_spark
from rstack.models.meta import _require_complete, gather_meta_features
from rstack.models.metrics import evaluate
from rstack.models.spark_metrics import evaluate_frame

N = 3000
RNG = np.random.default_rng(11)
LABEL = RNG.integers(0, 2, N).astype(float)
# Scores whose ties, ranges and classes exercise each branch: continuous, coarse (many ties, like a
# small forest's), constant, exact 0 and 1 (log loss clipping), anti-correlated, and the threshold itself.
SCORES = {
    "continuous": np.clip(0.5 + 0.25 * (LABEL - 0.5) + RNG.normal(0, 0.2, N), 0.001, 0.999),
    "coarse": np.round(RNG.random(N), 1),
    "constant": np.full(N, 0.3),
    "zero_one": (RNG.random(N) < 0.5).astype(float),
    "inverted": 1 - LABEL * 0.8 - RNG.random(N) * 0.1,
    "at_threshold": np.where(RNG.random(N) < 0.5, 0.5, 0.25),
}


def _evaluate(spark: Any, state: dict, frame: pd.DataFrame, threshold: float) -> dict[str, Any]:
    return evaluate_frame(to_spark(spark, frame), {c: c for c in frame.columns if c != "label"}, threshold)


@pytest.mark.parametrize(
    "label",
    [
        pytest.param(LABEL, id="both-classes"),
        pytest.param(np.zeros(N), id="no-positive"),
        pytest.param(np.ones(N), id="no-negative"),
    ],
)
def test_distributed_metrics_equal_the_in_memory_ones(on_host: Callable[..., Any], label: np.ndarray) -> None:
    frame = pd.DataFrame({"label": label, **SCORES})
    got = on_host(_evaluate, frame, 0.5)
    assert list(got) == list(SCORES)
    for name, p in SCORES.items():
        want = evaluate(label, p, 0.5)
        assert got[name]["confusion"] == want["confusion"], name
        assert got[name]["rows"] == want["rows"] == N, name
        for metric in ("roc_auc", "pr_auc", "log_loss", "brier", "positive_rate"):
            if np.isnan(want[metric]):
                assert np.isnan(got[name][metric]), (name, metric)
            else:
                assert abs(got[name][metric] - want[metric]) <= 1e-9, (name, metric, got[name][metric], want[metric])


def _write(spark: Any, state: dict, frame: pd.DataFrame, path: str) -> int:
    # Shuffled over many partitions, so that the file's order can only come from the writer's sort.
    return write_spark_parquet(to_spark(spark, frame).repartition(7), path)


def test_bounded_writer_keeps_every_row_in_key_order(tmp_path: Path, on_host: Callable[..., Any]) -> None:
    frame = pd.DataFrame(
        {"symbol": RNG.choice(["AUSDT", "BUSDT", "CUSDT"], N), "open_time": RNG.permutation(N).astype(np.int64)}
    ).assign(p=RNG.random(N))
    out = tmp_path / "preds.parquet"
    assert on_host(_write, frame, str(out)) == N
    back = pq.read_table(out).to_pandas()
    want = frame.sort_values(["symbol", "open_time"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, want, check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.parquet"]  # no parts or temporary file left


def _evaluate_with(spark: Any, state: dict, frame: pd.DataFrame, bad: str) -> dict[str, Any]:
    """Row 7's score made null or NaN in Spark (pandas' NaN arrives in Spark as null, not NaN)."""
    from pyspark.sql import functions as F

    df = to_spark(spark, frame.reset_index(names="i"))
    value = F.lit(float("nan")) if bad == "nan" else F.lit(None).cast("double")
    df = df.withColumn("p", F.when(F.col("i") == 7, value).otherwise(F.col("p")))
    return evaluate_frame(df, {"p": "p"}, 0.5)


@pytest.mark.parametrize("bad", ["nan", "null"])
def test_a_missing_score_is_an_error_not_a_figure(on_host: Callable[..., Any], bad: str) -> None:
    frame = pd.DataFrame({"label": LABEL[:50], "p": SCORES["continuous"][:50]})
    with pytest.raises(TrainingError, match=r"scores of p have 1 missing \(null or NaN\) values in 50 rows"):
        on_host(_evaluate_with, frame, bad)


def test_part_files_sort_by_number_past_five_digits() -> None:
    names = ["part-100000-a.snappy.parquet", "part-99999-a.snappy.parquet", "part-00002-a.snappy.parquet"]
    got = [p.name for p in sorted((Path(n) for n in names), key=part_number)]
    assert got == [names[2], names[1], names[0]]


BASE = pd.DataFrame({"symbol": ["A"] * 4, "open_time": [1, 2, 3, 4], "segment": [1, 1, 2, 3], "label": [0, 1, 0, 1]})


def _gather(spark: Any, state: dict, l0: list[pd.DataFrame]) -> int:
    out = gather_meta_features(to_spark(spark, BASE), [to_spark(spark, df) for df in l0])
    try:
        return out.count()
    finally:
        out.unpersist()


def _preds(times: list[int], col: str = "l0_b0") -> pd.DataFrame:
    return pd.DataFrame({"symbol": ["A"] * len(times), "open_time": times, col: np.linspace(0.1, 0.9, len(times))})


@pytest.mark.parametrize(
    ("l0", "match"),
    [
        pytest.param([_preds([1, 2, 3])], r"l0_b0 returned no prediction for 1 meta rows", id="missing-row"),
        pytest.param([_preds([1, 2, 3, 4, 4])], r"holds 4 of the 5 predictions in l0_b0: some repeat", id="repeated"),
        pytest.param([_preds([1, 2, 3, 4, 9])], r"holds 4 of the 5 predictions", id="foreign-key"),
        pytest.param(
            [_preds([1, 2, 3, 4]), _preds([1, 2, 2, 3, 4], "l0_b1")], r"holds 8 of the 9 predictions", id="second-batch"
        ),
    ],
)
def test_meta_features_refuse_incomplete_or_repeated_predictions(
    on_host: Callable[..., Any], l0: list[pd.DataFrame], match: str
) -> None:
    with pytest.raises(TrainingError, match=match):
        on_host(_gather, l0)


def test_meta_features_join_one_prediction_per_row_and_model(on_host: Callable[..., Any]) -> None:
    assert on_host(_gather, [_preds([1, 2, 3, 4]), _preds([1, 2, 3, 4], "l0_b1")]) == len(BASE)


def _joined(spark: Any, state: dict, rows: int, values: int) -> None:
    """A test table whose baseline repeats one key: the left join makes 4 rows of 3."""
    test = to_spark(spark, BASE.iloc[:3])
    baseline = to_spark(spark, _preds([1, 2, 2, 3], "baseline_x"))
    _require_complete(test.join(baseline, on=["symbol", "open_time"], how="left"), ["baseline_x"], "test",
                      rows=rows, values=values)  # fmt: skip


def test_a_repeated_baseline_key_is_refused_by_the_row_count(on_host: Callable[..., Any]) -> None:
    with pytest.raises(TrainingError, match=r"the test table has 4 rows after joining baseline_x, not 3"):
        on_host(_joined, 3, 4)
