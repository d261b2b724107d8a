"""The synthetic klines have what real Binance klines have (see docs/synth.md for the measured values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rstack.data.synth import INTERVALS_MS, synth_symbol, write_synthetic

DAY_MS = 86_400_000


def _load(out: Path) -> list[pd.DataFrame]:
    return [pd.read_parquet(p) for p in sorted(out.glob("*.parquet"))]


def _returns(df: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(df["close"].to_numpy()))


def _pooled_normalized(frames: list[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """Squared returns over their symbol's mean (so symbols weigh alike), with each return's open_time."""
    sq, times = [], []
    for df in frames:
        r2 = _returns(df) ** 2
        sq.append(r2 / r2.mean())
        times.append(df["open_time"].to_numpy()[1:])
    return np.concatenate(sq), np.concatenate(times)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[pd.DataFrame]:
    out = tmp_path_factory.mktemp("demo")
    write_synthetic(out)  # the demo's set: 12 symbols x 3000 hourly rows, seed 7
    return _load(out)


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> list[pd.DataFrame]:
    out = tmp_path_factory.mktemp("year")
    write_synthetic(out, symbols=12, rows=24 * 365, seed=5)
    return _load(out)


@pytest.mark.parametrize(("interval", "rows"), [("1h", 3000), ("1m", 2000), ("4h", 500)])
def test_valid_klines_and_deterministic(tmp_path: Path, interval: str, rows: int) -> None:
    a, b, c = (tmp_path / k for k in "abc")
    paths = write_synthetic(a, symbols=8, rows=rows, seed=3, interval=interval)
    write_synthetic(b, symbols=8, rows=rows, seed=3, interval=interval)
    write_synthetic(c, symbols=8, rows=rows, seed=4, interval=interval)
    assert [p.name for p in paths] == [f"SYN{i:03d}USDT.parquet" for i in range(8)]
    for fa, fb, fc in zip(_load(a), _load(b), _load(c), strict=True):
        pd.testing.assert_frame_equal(fa, fb)
        assert not np.allclose(fa["close"], fc["close"])
        assert len(fa) == rows and (np.diff(fa["open_time"]) == INTERVALS_MS[interval]).all()
        num = fa[["open", "high", "low", "close", "volume"]].to_numpy()
        assert np.isfinite(num).all()
        o, h, lo, cl, v = num.T
        assert (lo > 0).all() and (v >= 0).all()
        assert (h >= np.maximum(o, cl)).all() and (lo <= np.minimum(o, cl)).all()


def test_intraday_profile(year: list[pd.DataFrame], tmp_path: Path) -> None:
    sq, t = _pooled_normalized(year)
    by_hour = pd.Series(sq).groupby((t % DAY_MS) // 3_600_000).mean()
    assert by_hour.max() / by_hour.min() > 1.7  # measured: 2.7 (1h), 2.4 (5m), pooled over symbols
    typical = pd.Series(sq).groupby((t % DAY_MS) // 3_600_000).median()  # where: medians, a cluster can move a mean
    assert 12 <= typical.idxmax() <= 18 and 2 <= typical.idxmin() <= 8  # measured: peak ~14-16, trough ~4-6 UTC
    # The profile comes from the time of day, so it is there at 5m too (medians: 60 days of fat tails are noisy).
    write_synthetic(tmp_path, symbols=4, rows=288 * 60, seed=2, interval="5m")
    sq, t = _pooled_normalized(_load(tmp_path))
    by_hour = pd.Series(sq).groupby((t % DAY_MS) // 3_600_000).median()
    assert by_hour.max() / by_hour.min() > 1.5


def test_no_intraday_profile_at_daily_bars() -> None:
    from rstack.data.synth import seasonal_variance

    for interval in ("1m", "5m", "1h", "4h"):
        step = INTERVALS_MS[interval]
        week = seasonal_variance(1704067200000 + step * np.arange(7 * DAY_MS // step), step)
        assert week.mean() == pytest.approx(1.0) and week.max() / week.min() > 1.5
    daily = seasonal_variance(1704067200000 + DAY_MS * np.arange(14), DAY_MS)
    assert len(set(daily.round(12))) == 2  # only weekday / weekend is left
    assert daily.mean() == pytest.approx(1.0)


def test_weekend_is_calmer(year: list[pd.DataFrame]) -> None:
    sq, t = _pooled_normalized(year)
    weekend = (t // DAY_MS + 3) % 7 >= 5  # 1970-01-01 was a Thursday
    assert sq[weekend].mean() / sq[~weekend].mean() < 0.8  # measured: 0.62 (5m), 0.64 (1h)


def test_volatility_clusters(demo: list[pd.DataFrame]) -> None:
    acf1 = []
    for df in demo:
        r2 = _returns(df) ** 2
        hour = (df["open_time"].to_numpy()[1:] % DAY_MS) // 3_600_000
        x = r2 / pd.Series(r2).groupby(hour).transform("mean").to_numpy() - 1  # deseasonalized
        acf1.append((x[1:] * x[:-1]).mean() / (x * x).mean())
    assert np.median(acf1) > 0.05 and min(acf1) > 0  # measured at 1h: median 0.21, min 0.16


def test_fat_tails(demo: list[pd.DataFrame]) -> None:
    kurt = [pd.Series(_returns(df)).kurt() for df in demo]
    assert np.median(kurt) > 1  # measured at 1h: 7.7 .. 72


def test_volatility_levels_span_the_measured_range(demo: list[pd.DataFrame]) -> None:
    std = np.array([_returns(df).std() for df in demo])
    # measured 1h std 0.0035 .. 0.0205 (factor 5.9); 12 stratified draws cover at least 5.9 ** (10 / 12)
    assert std.max() / std.min() > 4
    assert std.min() > 0.0035 / 2 and std.max() < 0.0205 * 2
    prices = np.array([df["close"].median() for df in demo])
    assert prices.max() / prices.min() > 1e4  # prices span many orders of magnitude too


@pytest.mark.parametrize(("symbols", "rows", "seed"), [(12, 3000, 7), (3, 160, 3)])
def test_zero_volume_candles_on_one_symbol_in_four(tmp_path: Path, symbols: int, rows: int, seed: int) -> None:
    write_synthetic(tmp_path, symbols=symbols, rows=rows, seed=seed)
    for i, df in enumerate(_load(tmp_path)):
        zero = df["volume"].to_numpy() == 0
        assert zero.any() == (i % 4 == 1), df["symbol"].iloc[0]
        flat = df[zero]
        assert (flat[["open", "high", "low"]].to_numpy() == flat[["close"]].to_numpy()).all()
        assert (flat["open"].to_numpy() == df["close"].shift().to_numpy()[zero]).all()  # at the previous close


def test_volume_rises_with_abs_return_and_follows_the_day(year: list[pd.DataFrame]) -> None:
    corr = []
    for df in year:
        v = df["volume"].to_numpy()[1:]
        ok = v > 0
        corr.append(np.corrcoef(np.log(v[ok]), np.abs(_returns(df))[ok])[0, 1])
    assert np.median(corr) > 0.3  # measured: 0.54 (1h), 0.47 (5m)
    vol = pd.concat([df["volume"] / df["volume"].mean() for df in year])
    hour = pd.concat([(df["open_time"] % DAY_MS) // 3_600_000 for df in year])
    by_hour = vol.groupby(hour).mean()
    assert by_hour.max() / by_hour.min() > 1.3  # measured: 2.0 pooled over symbols


def test_synth_symbol_keeps_its_signature() -> None:
    rng = np.random.default_rng(0)
    df = synth_symbol("XUSDT", 50, rng, 1704067200000, INTERVALS_MS["1h"], zero_volume_rate=0.0)
    assert list(df.columns) == ["symbol", "open_time", "open", "high", "low", "close", "volume"]
    assert len(df) == 50 and (df["volume"] > 0).all()
