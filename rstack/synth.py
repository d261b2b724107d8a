"""Synthetic klines with volatility clustering, in rstack's input layout (one Parquet per symbol).

Returns follow GARCH(1,1) with Student-t innovations, so volatility clusters and tails are fat,
which is what makes "will the next bars be more volatile" learnable at all. Prices span many
orders of magnitude across symbols, like real spot pairs, and one symbol in four gets Binance-style
zero-volume candles (open = high = low = close, volume 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rstack.errors import ConfigError

INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000}


def synth_symbol(
    symbol: str,
    rows: int,
    rng: np.random.Generator,
    start_ms: int,
    interval_ms: int,
    zero_volume_rate: float = 0.0,
) -> pd.DataFrame:
    # GARCH(1,1): sigma2_t = omega + alpha * r_{t-1}^2 + beta * sigma2_{t-1}
    base_vol = rng.uniform(0.002, 0.02)
    # alpha + beta < 1 keeps the process stationary (omega > 0); at most 0.97 here.
    alpha, beta = rng.uniform(0.05, 0.1), rng.uniform(0.82, 0.87)
    omega = base_vol**2 * (1 - alpha - beta)
    dof = 4.0
    shocks = rng.standard_t(dof, size=rows) / np.sqrt(dof / (dof - 2))
    returns = np.empty(rows)
    sigma = np.empty(rows)
    s2 = base_vol**2
    prev = 0.0
    for i in range(rows):
        s2 = omega + alpha * prev**2 + beta * s2
        sigma[i] = np.sqrt(s2)
        prev = sigma[i] * shocks[i]
        returns[i] = prev
    price0 = 10 ** rng.uniform(-4, 4.7)
    close = price0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[price0], close[:-1]])
    wick = sigma * np.abs(rng.normal(0, 0.6, size=(2, rows)))
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    # Volume rises with volatility, as in real markets.
    volume = np.exp(rng.normal(np.log(1e4 / price0 + 1.0), 0.5, rows)) * (1 + 40 * np.abs(returns))
    if zero_volume_rate > 0:
        flat = rng.random(rows) < zero_volume_rate
        flat[0] = False
        flat_price = open_[flat]
        open_[flat] = high[flat] = low[flat] = close[flat] = flat_price
        volume[flat] = 0.0
        # Keep the next bar opening where the flat bar closed.
        nxt = np.flatnonzero(flat) + 1
        nxt = nxt[nxt < rows]
        open_[nxt] = close[nxt - 1]
        high[nxt] = np.maximum(high[nxt], open_[nxt])
        low[nxt] = np.minimum(low[nxt], open_[nxt])
    return pd.DataFrame(
        {
            "symbol": symbol,
            "open_time": start_ms + interval_ms * np.arange(rows, dtype=np.int64),
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
    paths = []
    for i in range(symbols):
        name = f"SYN{i:03d}USDT"
        df = synth_symbol(
            name, rows, rng, start_ms, INTERVALS_MS[interval], zero_volume_rate=0.02 if i % 4 == 1 else 0.0
        )
        path = out_dir / f"{name}.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
        paths.append(path)
    return paths
