"""Synthetic klines shaped like real Binance spot klines, in rstack's input layout (one Parquet per symbol).

What is reproduced, and the statistic each parameter was set from. Measured on log close-to-close
returns of 16 USDT pairs, 2024-01..2024-09, ``/work/shared/data/binance-1h`` and ``binance-5m``;
"median" is over the 15 symbols other than the near-stablecoin EURIUSDT (see docs/synth.md):

* Volatility level: the symbols' 1h std are evenly spaced in log over [0.0035, 0.0205], the measured 1h
  range (TRXUSDT .. WIFUSDT, factor 5.9; median 0.0096; EURIUSDT 0.0008 left out), in random order.
  Other intervals scale it by sqrt(interval / 1h): measured 5m std * sqrt(12) / 1h std has median 1.05.
* Intraday profile: sigma^2 is multiplied by exp(4-harmonic Fourier series in UTC time of day), fitted
  to the log of mean squared 5m return per 5-minute bin (pooled; peak ~14-15 UTC, trough ~4-6 UTC,
  hourly peak/trough 2.1), averaged over each bar, so it works at 1m..4h and is 1 for bars of a day or more.
* Weekly effect: Sat/Sun (UTC) variance is 0.62 times weekday variance (5m median 0.62, 1h 0.64).
* Clustering: GARCH(1,1) on the deseasonalized returns, variance-targeted (unconditional mean 1).
* Fat tails: Student-t shocks. GARCH-t MLE per symbol, medians: 1h alpha 0.096, alpha+beta 0.971,
  dof 4.24; 5m alpha 0.102, alpha+beta 0.988, dof 5.54. Stationary: alpha + beta < 1.
* Wicks: mean(high-low) / mean(|close-open|) is 2.11 (1h) and 1.90 (5m); each wick is
  sigma_t * k * |N(0, 1)|, with k set so that ratio holds in expectation.
* Volume: log volume = level + a * log sqrt(seasonal) + b * log sqrt(garch) + c * log(1 + |shock|)
  + s * N(0, 1), the coefficients of that least-squares regression on the real data (seasonal, garch and
  shock from the fits above; medians a, b, c, s: 1h 0.97, 1.49, 0.87, 0.58; 5m 1.31, 1.54, 0.81, 0.73).
  It gives corr(log volume, |return|) 0.51 / 0.48 and std(log volume) 0.80 / 1.01 (measured 0.54 / 0.47,
  0.82 / 1.01). Median quote volume per hour is log-uniform in the measured [2.5e4, 6.3e7] USDT.
* Zero-volume candles: one symbol in four gets Binance-style flat, zero-volume candles (open = high =
  low = close = previous close); measured 2.4% and 1.1% of 5m candles for 2 of 16 pairs (none at 1h).

Per-bar dynamics (GARCH, dof, wicks, volume) are interpolated in log(interval) between the 5m and the
1h measurements and held constant outside them. Prices span 1e-4 .. 5e4 across symbols.
"""

from __future__ import annotations

from itertools import accumulate
from math import exp, lgamma, log, pi, sqrt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rstack.errors import ConfigError

INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000}
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000

VOL_RANGE_1H = (0.0035, 0.0205)  # std of 1h log returns, min and max over the 15 non-stablecoin pairs
QUOTE_VOLUME_RANGE_1H = (2.5e4, 6.3e7)  # median hourly quote volume (USDT), min and max
WEEKEND_VARIANCE = 0.62  # Sat/Sun mean squared return / weekday, 5m median
ZERO_VOLUME_RATE = 0.02  # share of flat zero-volume candles in an affected symbol (5m: 1.1%, 2.4%)
# (cos, sin) coefficients of harmonics 1..4 of the log variance profile in UTC time of day (5m data).
INTRADAY_HARMONICS = ((-0.043, -0.255), (-0.006, 0.086), (0.028, 0.004), (-0.068, 0.128))
# Per-bar dynamics measured at 5m and at 1h (medians over symbols); see the module docstring.
BAR_PARAMS: dict[int, dict[str, float]] = {
    300_000: {
        "alpha": 0.102,
        "persistence": 0.988,
        "dof": 5.54,
        "range_over_body": 1.90,
        "vol_season": 1.31,
        "vol_garch": 1.54,
        "vol_shock": 0.81,
        "vol_noise": 0.73,
    },
    3_600_000: {
        "alpha": 0.096,
        "persistence": 0.971,
        "dof": 4.24,
        "range_over_body": 2.11,
        "vol_season": 0.97,
        "vol_garch": 1.49,
        "vol_shock": 0.87,
        "vol_noise": 0.58,
    },
}


def bar_params(interval_ms: int) -> dict[str, float]:
    """The per-bar parameters for ``interval_ms``: interpolated in log(interval) between 5m and 1h, clamped."""
    (lo_ms, lo), (hi_ms, hi) = sorted(BAR_PARAMS.items())
    w = min(max(log(interval_ms / lo_ms) / log(hi_ms / lo_ms), 0.0), 1.0)
    return {k: (1 - w) * lo[k] + w * hi[k] for k in lo}


def seasonal_variance(open_time: np.ndarray, interval_ms: int) -> np.ndarray:
    """Variance multiplier per bar (mean 1 over a week): intraday profile averaged over the bar, times weekend."""
    weekend = (open_time // DAY_MS + 3) % 7 >= 5  # 1970-01-01 was a Thursday (Monday = 0)
    mult = np.where(weekend, WEEKEND_VARIANCE, 1.0) / ((5 + 2 * WEEKEND_VARIANCE) / 7)
    if interval_ms >= DAY_MS:
        return mult
    phase = 2 * np.pi * (np.arange(1440) + 0.5) / 1440
    log_prof = sum(a * np.cos(k * phase) + b * np.sin(k * phase) for k, (a, b) in enumerate(INTRADAY_HARMONICS, 1))
    prof = np.exp(log_prof)
    cum = np.concatenate([[0.0], np.cumsum(np.tile(prof / prof.mean(), 2))])  # two days: bars may cross midnight
    first = (open_time % DAY_MS) // MINUTE_MS
    n = max(interval_ms // MINUTE_MS, 1)
    return mult * (cum[first + n] - cum[first]) / n


def _mean_abs_t(dof: float) -> float:
    """E|z| for a unit-variance Student-t with ``dof`` degrees of freedom."""
    return sqrt((dof - 2) / pi) * exp(lgamma((dof - 1) / 2) - lgamma(dof / 2))


def synth_symbol(
    symbol: str,
    rows: int,
    rng: np.random.Generator,
    start_ms: int,
    interval_ms: int,
    zero_volume_rate: float = 0.0,
    *,
    vol_level: float | None = None,
) -> pd.DataFrame:
    """``rows`` candles of one symbol; ``vol_level`` is its 1h return std (drawn from VOL_RANGE_1H if None)."""
    p = bar_params(interval_ms)
    if vol_level is None:
        vol_level = exp(rng.uniform(log(VOL_RANGE_1H[0]), log(VOL_RANGE_1H[1])))
    sigma_bar = vol_level * sqrt(interval_ms / HOUR_MS)
    open_time = start_ms + interval_ms * np.arange(rows, dtype=np.int64)
    dof = p["dof"]
    z = rng.standard_t(dof, size=rows) / sqrt(dof / (dof - 2))
    # GARCH(1,1) on deseasonalized returns e = sqrt(h) z: h_t = omega + alpha e_{t-1}^2 + beta h_{t-1}
    #   = omega + (alpha z_{t-1}^2 + beta) h_{t-1}, with omega = 1 - alpha - beta so that E[h] = 1.
    alpha, beta = p["alpha"], p["persistence"] - p["alpha"]
    omega = 1.0 - alpha - beta
    step = (alpha * z[:-1] ** 2 + beta).tolist()
    h = np.fromiter(accumulate(step, lambda prev, a: omega + a * prev, initial=1.0), dtype=float, count=rows)
    season = seasonal_variance(open_time, interval_ms)
    sigma = sigma_bar * np.sqrt(season * h)
    returns = sigma * z
    flat = rng.random(rows) < zero_volume_rate if zero_volume_rate > 0 else np.zeros(rows, dtype=bool)
    flat[0] = False
    returns[flat] = 0.0  # no trade, no move: the flat candle sits at the previous close
    price0 = 10 ** rng.uniform(-4, 4.7)
    close = price0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[price0], close[:-1]])
    mean_abs_z = _mean_abs_t(dof)
    k = (p["range_over_body"] - 1) / 2 * mean_abs_z / sqrt(2 / pi)
    wick = k * sigma * np.abs(rng.standard_normal((2, rows)))
    wick[:, flat] = 0.0
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    quote = exp(rng.uniform(log(QUOTE_VOLUME_RANGE_1H[0]), log(QUOTE_VOLUME_RANGE_1H[1])))
    response = (
        p["vol_season"] * 0.5 * np.log(season) + p["vol_garch"] * 0.5 * np.log(h) + p["vol_shock"] * np.log1p(np.abs(z))
    )
    noise = p["vol_noise"] * rng.standard_normal(rows)
    log_volume = log(quote * interval_ms / HOUR_MS / price0) + response - response.mean() + noise
    volume = np.where(flat, 0.0, np.exp(log_volume))
    return pd.DataFrame(
        {
            "symbol": symbol,
            "open_time": open_time,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )


def write_synthetic(
    out_dir: Path,
    symbols: int = 12,
    rows: int = 3000,
    seed: int = 7,
    interval: str = "1h",
    start: str = "2024-01-01",
) -> list[Path]:
    """Write ``symbols`` Parquet files of ``rows`` candles each; returns the paths written."""
    if symbols < 1 or rows < 1:
        raise ConfigError(f"synth needs symbols >= 1 and rows >= 1, got {symbols} and {rows}")
    if interval not in INTERVALS_MS:
        raise ConfigError(f"unknown interval {interval!r}; use one of {', '.join(INTERVALS_MS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    start_ms = int(pd.Timestamp(start, tz="UTC").value // 1_000_000)
    # Volatility levels evenly spaced in log over the measured range, in random order across symbols.
    lo, hi = log(VOL_RANGE_1H[0]), log(VOL_RANGE_1H[1])
    spread = rng.permutation(symbols) / (symbols - 1) if symbols > 1 else np.array([0.5])
    levels = np.exp(lo + spread * (hi - lo))
    paths = []
    for i in range(symbols):
        name = f"SYN{i:03d}USDT"
        rate = ZERO_VOLUME_RATE if i % 4 == 1 else 0.0
        df = synth_symbol(name, rows, rng, start_ms, INTERVALS_MS[interval], rate, vol_level=float(levels[i]))
        path = out_dir / f"{name}.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
        paths.append(path)
    return paths
