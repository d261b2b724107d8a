"""Features on real Spark on Ray against an independent pandas reference, symbol by symbol."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rstack.config import FeatureConfig
from rstack.data.discover import discover, read_klines
from rstack.data.synth import write_synthetic
from rstack.features.windows import add_features, feature_names

HORIZON = 5
# The extended set's row-window features; the scaled set has its own test (test_volfeatures.py).
CFG = FeatureConfig(feature_set="extended")
COMPARED = [*feature_names(CFG), "trail_rv", "fwd_rv", "label_end_time"]


HOUR_MS = 3_600_000


def spark_features(spark: Any, state: dict, data_dir: str, cfg: FeatureConfig, horizon: int) -> pd.DataFrame:
    df = add_features(read_klines(spark, discover(Path(data_dir))), cfg, horizon, HOUR_MS, with_vol=False)
    return df.toPandas().sort_values(["symbol", "open_time"]).reset_index(drop=True)


def reference_with_gaps(one: pd.DataFrame, max_gap_bars: int = 1) -> pd.DataFrame:
    """The reference applied to each gap-free run of one symbol separately."""
    one = one.sort_values("open_time").reset_index(drop=True)
    run = (one["open_time"].diff() > max_gap_bars * HOUR_MS).cumsum()
    return pd.concat(reference(g.reset_index(drop=True)) for _, g in one.groupby(run)).reset_index(drop=True)


def reference(one: pd.DataFrame, horizon: int = HORIZON) -> pd.DataFrame:
    """The feature definitions written again in pandas, for one symbol sorted by time."""
    c, v, h, lo = one["close"], one["volume"], one["high"], one["low"]
    out = pd.DataFrame({"symbol": one["symbol"], "open_time": one["open_time"]})
    for k in (1, 2, 3):
        out[f"lag{k}_close"] = c.shift(k)
    out["return_1"] = c / c.shift(1) - 1
    out["return_2"] = c / c.shift(2) - 1
    out["hl_spread"] = (h - lo) / c
    out["std_5"] = c.rolling(5).std()
    out["std_10"] = c.rolling(10).std()
    out["lag1_volume"] = v.shift(1)
    prev = v.shift(1)
    out["volume_change"] = np.where(prev > 0, v / prev - 1, np.where(prev.isna(), np.nan, 0.0))
    out["mean_5"] = c.rolling(5).mean()
    out["price_ma_ratio"] = c / out["mean_5"]
    lr = np.log(c / c.shift(1))
    out["log_return_1"] = lr
    for w in CFG.rv_windows:
        out[f"rv_{w}"] = np.sqrt((lr**2).rolling(w).mean())
    short, long = out["rv_5"], out["rv_50"]
    out["rv_ratio_5_50"] = np.where(long > 0, short / long, np.where(long.isna(), np.nan, 1.0))
    out["log_hl"] = np.log(h / lo)
    out["log_hl_ma_10"] = out["log_hl"].rolling(10).mean()
    mean = v.shift(1).rolling(20).mean()
    std = v.shift(1).rolling(20).std()
    out["volume_z_20"] = np.where(std > 0, (v - mean) / std, np.where(std.isna(), np.nan, 0.0))
    out["trail_rv"] = np.sqrt((lr**2).rolling(horizon).mean())
    out["fwd_rv"] = out["trail_rv"].shift(-horizon)
    out["label_end_time"] = one["open_time"].shift(-horizon)
    return out


def assert_frames_close(got: pd.DataFrame, want: pd.DataFrame, cols: list[str]) -> None:
    for col in cols:
        g = got[col].to_numpy(dtype=float)
        w = want[col].to_numpy(dtype=float)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"null pattern of {col}")
        np.testing.assert_allclose(g, w, rtol=1e-7, atol=1e-12, equal_nan=True, err_msg=col)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("feat")
    # Several symbols so that a window leaking across symbols would show; symbol 1 has zero volumes.
    write_synthetic(out, symbols=3, rows=160, seed=3)
    return out


def test_every_feature_matches_pandas_reference(small: Path, on_host: Callable[..., Any]) -> None:
    got = on_host(spark_features, str(small), CFG, HORIZON)
    raw = pd.concat(pd.read_parquet(p) for p in sorted(small.glob("*.parquet")))
    want = (
        pd.concat(reference(g.sort_values("open_time").reset_index(drop=True)) for _, g in raw.groupby("symbol"))
        .sort_values(["symbol", "open_time"])
        .reset_index(drop=True)
    )
    assert list(got["symbol"]) == list(want["symbol"])
    assert_frames_close(got, want, COMPARED)
    # The zero-volume repair path was exercised and counted, not left as inf.
    assert got["repair_zero_prev_volume"].fillna(False).sum() > 0
    finite = got.dropna(subset=feature_names(CFG))
    assert np.isfinite(finite[feature_names(CFG)].to_numpy(dtype=float)).all()


def test_no_cross_symbol_leakage_and_no_look_ahead(tmp_path: Path, small: Path, on_host: Callable[..., Any]) -> None:
    base = on_host(spark_features, str(small), CFG, HORIZON)
    cols = [*feature_names(CFG), "trail_rv"]

    # (1) Change symbol B's rows entirely: A's and C's features must not move.
    other = tmp_path / "other"
    other.mkdir()
    for p in sorted(small.glob("*.parquet")):
        df = pd.read_parquet(p)
        if p.stem == "SYN001USDT":
            df[["open", "high", "low", "close"]] *= 3.7
            df["volume"] = df["volume"][::-1].to_numpy()
            df = df.iloc[7:]
        df.to_parquet(other / p.name)
    changed = on_host(spark_features, str(other), CFG, HORIZON)
    keep = base["symbol"] != "SYN001USDT"
    pd.testing.assert_frame_equal(
        base.loc[keep, cols].reset_index(drop=True),
        changed.loc[changed["symbol"] != "SYN001USDT", cols].reset_index(drop=True),
    )

    # (2) Change every row after time t: features at or before t must not move.
    t = int(base["open_time"].quantile(0.6))
    future = tmp_path / "future"
    future.mkdir()
    rng = np.random.default_rng(0)
    for p in sorted(small.glob("*.parquet")):
        df = pd.read_parquet(p)
        late = df["open_time"] > t
        scale = np.exp(rng.normal(0, 0.2, late.sum()))
        for col in ("open", "high", "low", "close"):
            df.loc[late, col] = df.loc[late, col] * scale
        df.loc[late, "volume"] = df.loc[late, "volume"] * 10
        df.to_parquet(future / p.name)
    moved = on_host(spark_features, str(future), CFG, HORIZON)
    early = base["open_time"] <= t
    pd.testing.assert_frame_equal(
        base.loc[early, cols].reset_index(drop=True), moved.loc[moved["open_time"] <= t, cols].reset_index(drop=True)
    )
    # The label is the one thing allowed to look ahead, so it must differ somewhere before t.
    assert not np.allclose(base.loc[early, "fwd_rv"].fillna(0), moved.loc[early, "fwd_rv"].fillna(0))


def test_open_time_units_are_normalized(tmp_path: Path, small: Path, on_host: Callable[..., Any]) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, p in enumerate(sorted(small.glob("*.parquet"))):
        df = pd.read_parquet(p)
        if i == 1:
            df["open_time"] = df["open_time"] * 1000  # microseconds, as Binance spot since 2025
        elif i == 2:
            # A zoned timestamp: the instant counts, not the wall clock.
            df["open_time"] = pd.to_datetime(df["open_time"], unit="ms", utc=True).dt.tz_convert("America/New_York")
        df.to_parquet(mixed / p.name)
    base = on_host(spark_features, str(small), CFG, HORIZON)
    got = on_host(spark_features, str(mixed), CFG, HORIZON)
    pd.testing.assert_frame_equal(base[["symbol", "open_time", *COMPARED]], got[["symbol", "open_time", *COMPARED]])


def test_windows_restart_after_a_gap(tmp_path: Path, small: Path, on_host: Callable[..., Any]) -> None:
    gapped = tmp_path / "gapped"
    gapped.mkdir()
    for p in sorted(small.glob("*.parquet")):
        df = pd.read_parquet(p)
        if p.stem == "SYN002USDT":
            df = df.drop(index=range(90, 93))  # three missing candles
        df.to_parquet(gapped / p.name)
    got = on_host(spark_features, str(gapped), CFG, HORIZON)
    one = got[got["symbol"] == "SYN002USDT"].reset_index(drop=True)
    want = reference_with_gaps(pd.read_parquet(gapped / "SYN002USDT.parquet"))
    assert_frames_close(one, want, COMPARED)
    # No lag, window or label reaches across the gap: right after it everything restarts.
    after = one[one["open_time"] > one["open_time"].iloc[89]]
    assert after["lag1_close"].isna().sum() == 1 and after["rv_50"].isna().sum() == 50
    assert one.loc[89, "label_end_time"] != one.loc[89, "label_end_time"]  # NaN: label would span the gap
    # With a tolerance of 4 bars the gap is bridged and features stay defined.
    wide = on_host(spark_features, str(gapped), FeatureConfig(feature_set="extended", max_gap_bars=4), HORIZON)
    assert wide[wide["symbol"] == "SYN002USDT"]["rv_50"].isna().sum() == 50
