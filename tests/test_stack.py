"""Levels 1 and 2 learn only from their own segments; the test segment only evaluates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rstack.errors import TrainingError
from rstack.models.convert import to_spark
from rstack.models.meta import fit_levels_1_2
from tests.conftest import light_config

ROWS_PER_SEGMENT = 300


def frames(seed: int = 0) -> tuple[pd.DataFrame, list[pa.Table]]:
    rng = np.random.default_rng(seed)
    n = 3 * ROWS_PER_SEGMENT
    base = pd.DataFrame(
        {
            "symbol": np.where(np.arange(n) % 2 == 0, "AUSDT", "BUSDT"),
            "open_time": np.arange(n, dtype=np.int64) * 60_000,
            "segment": np.repeat([1, 2, 3], ROWS_PER_SEGMENT),
            "label": rng.integers(0, 2, n).astype(float),
            "baseline_p": rng.random(n),
        }
    )
    # Level 1's default context features ride in the base rows, as base_rows puts them there.
    for col in light_config().level1.context:
        base[col] = rng.normal(0, 1, n)
    tables = []
    for name in ("l0_batch_000", "l0_batch_001"):
        p = np.clip(0.5 + 0.3 * (base["label"] - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
        tables.append(pa.table({"symbol": base["symbol"], "open_time": base["open_time"], name: p}))
    return base, tables


def fit(spark: Any, state: dict, base: pd.DataFrame, tables: list[pa.Table], out: str) -> pd.DataFrame:
    l0 = [to_spark(spark, t.to_pandas()) for t in tables]
    _, test, l2_fit = fit_levels_1_2(to_spark(spark, base), l0, light_config(), f"{out}/l1", f"{out}/l2", prior=0.5)
    try:
        return test.toPandas().sort_values(["symbol", "open_time"]).reset_index(drop=True)
    finally:
        test.unpersist()
        l2_fit.unpersist()


def relabel(base: pd.DataFrame, segment: int, seed: int) -> pd.DataFrame:
    out = base.copy()
    rows = out["segment"] == segment
    out.loc[rows, "label"] = np.random.default_rng(seed).integers(0, 2, rows.sum()).astype(float)
    return out


def test_meta_learners_see_only_their_segment(tmp_path: Path, on_host: Callable[..., Any]) -> None:
    base, tables = frames()
    ref = on_host(fit, base, tables, str(tmp_path / "a"))
    new_test = on_host(fit, relabel(base, 3, 1), tables, str(tmp_path / "b"))
    new_l2fit = on_host(fit, relabel(base, 2, 2), tables, str(tmp_path / "c"))
    new_l1fit = on_host(fit, relabel(base, 1, 3), tables, str(tmp_path / "d"))
    # Test labels changed: neither level moves. (Level 2's optimizer sums partial gradients in
    # task-completion order, so its last bits may differ between fits; 1e-9 is far below any effect.)
    np.testing.assert_array_equal(ref["l1"], new_test["l1"])
    np.testing.assert_allclose(ref["l2"], new_test["l2"], rtol=0, atol=1e-9)
    # L2-fit labels changed: Level 1 stays, Level 2 moves.
    np.testing.assert_array_equal(ref["l1"], new_l2fit["l1"])
    assert not np.allclose(ref["l2"], new_l2fit["l2"])
    # L1-fit labels changed: Level 1 moves.
    assert not np.allclose(ref["l1"], new_l1fit["l1"])
    assert len(ref) == ROWS_PER_SEGMENT and (tmp_path / "a" / "l2" / "metadata").is_dir()


def _inputs(spark: Any, state: dict, base: pd.DataFrame, tables: list[pa.Table], out: str) -> tuple[list, list]:
    from pyspark.ml import PipelineModel

    fit(spark, state, base, tables, out)
    l1, l2 = PipelineModel.load(f"{out}/l1"), PipelineModel.load(f"{out}/l2")
    return l1.stages[0].getInputCols(), l2.stages[0].getInputCols()


def test_level1_sees_context_and_level2_skips_to_level0(tmp_path: Path, on_host: Callable[..., Any]) -> None:
    base, tables = frames()
    l1_inputs, l2_inputs = on_host(_inputs, base, tables, str(tmp_path / "m"))
    assert l1_inputs == ["l0_batch_000", "l0_batch_001", *light_config().level1.context]
    assert l2_inputs == ["l1", "l0_batch_000", "l0_batch_001"]


def test_one_class_segment_is_a_clear_error(tmp_path: Path, on_host: Callable[..., Any]) -> None:
    base, tables = frames()
    base.loc[base["segment"] == 1, "label"] = 0.0
    with pytest.raises(TrainingError, match=r"the l1_fit segment has labels \[0.0\] in 300 rows"):
        on_host(fit, base, tables, str(tmp_path / "x"))


def _convert(spark: Any, state: dict, parts: list[pd.DataFrame]) -> tuple[list[str], list[tuple]]:
    import warnings

    frame = pd.concat(parts)  # here: pickling to the host would join the chunks again
    # The case under test: text that reaches Arrow in several chunks.
    assert isinstance(pa.Array.from_pandas(frame["symbol"]), pa.ChunkedArray)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = to_spark(spark, frame).orderBy("open_time").collect()
    return [str(w.message) for w in caught], [tuple(r) for r in rows]


def test_text_in_several_arrow_chunks_reaches_spark_through_arrow(on_host: Callable[..., Any]) -> None:
    # pandas keeps text in Arrow-backed columns (pandas 3 by default); after a concat such a column
    # is in several chunks, which PySpark 3.5's Arrow converter rejects: it only warns and pickles the
    # rows instead, several times slower. The stream's lookback buffer + new rows is such a concat.
    part = pd.DataFrame({"symbol": ["AUSDT", "BUSDT"] * 3, "open_time": np.arange(6), "p": np.linspace(0, 1, 6)})
    part = part.astype({"symbol": pd.StringDtype("pyarrow")})
    messages, rows = on_host(_convert, [part[:3], part[3:]])
    assert not [m for m in messages if "Arrow optimization" in m]
    assert rows == [(s, t, p) for s, t, p in zip(part["symbol"], part["open_time"], part["p"], strict=True)]
