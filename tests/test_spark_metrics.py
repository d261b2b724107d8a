"""The distributed metrics equal the in-memory ones (``metrics.evaluate``) to 1e-9, and the bounded
Parquet writer keeps every row in key order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rstack._io import write_spark_parquet
from rstack.models.convert import to_spark
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
