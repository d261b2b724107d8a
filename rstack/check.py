"""``rstack data check``: per-symbol health of a kline folder, without Spark and without training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from rstack.data import MICROS_THRESHOLD, REQUIRED, discover

# Problems that make a symbol unusable as it is; the rest are facts to know about.
BAD_KEYS = ("nonfinite_price", "nonpositive_price", "inconsistent_ohlc", "negative_volume", "conflicting_duplicates")


def _to_ms(col: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        if col.dt.tz is not None:
            col = col.dt.tz_convert("UTC").dt.tz_localize(None)
        return col.astype("datetime64[ms]").astype("int64")
    col = col.astype("int64")
    return col.where(col < MICROS_THRESHOLD, col // 1000)


def check_symbol(frame: pd.DataFrame) -> dict[str, Any]:
    t = frame["open_time"].to_numpy()
    unsorted = int((np.diff(t) < 0).sum()) if len(t) > 1 else 0
    frame = frame.sort_values("open_time", kind="mergesort")
    times = frame["open_time"].to_numpy()
    dup_times = frame["open_time"].duplicated(keep=False)
    exact_dups = int(frame.duplicated(keep="first").sum())
    dup_rows = int(frame["open_time"].duplicated(keep="first").sum())
    uniq = np.unique(times)
    diffs = np.diff(uniq)
    interval = int(pd.Series(diffs).mode().iloc[0]) if len(diffs) else 0
    prices = frame[["open", "high", "low", "close"]].to_numpy(dtype=float)
    finite = np.isfinite(prices).all(axis=1)
    o, h, lo, c = (frame[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    with np.errstate(invalid="ignore"):
        inconsistent = (h < lo) | (o < lo) | (o > h) | (c < lo) | (c > h)
        vol = frame["volume"].to_numpy(dtype=float)
        return {
            "rows": len(frame),
            "first_ms": int(uniq[0]) if len(uniq) else None,
            "last_ms": int(uniq[-1]) if len(uniq) else None,
            "interval_ms": interval,
            "gaps": int((diffs > interval).sum()) if interval else 0,
            "missing_candles": int(((diffs[diffs > interval] // interval) - 1).sum()) if interval else 0,
            "off_grid_steps": int((diffs % interval != 0).sum()) if interval else 0,
            "duplicate_rows": exact_dups,
            "conflicting_duplicates": dup_rows - exact_dups,
            "duplicate_times": int(dup_times.sum()),
            "unsorted_steps": unsorted,
            "zero_volume": int((vol == 0).sum()),
            "nonfinite_price": int((~finite).sum()) + int((~np.isfinite(vol)).sum()),
            "nonpositive_price": int((finite & (prices <= 0).any(axis=1)).sum()),
            "inconsistent_ohlc": int((finite & inconsistent).sum()),
            "negative_volume": int((vol < 0).sum()),
        }


def check_dir(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Stats per symbol; schema problems raise InputError (naming file, column and fix) first."""
    dataset = discover(Path(data_dir))
    frames: dict[str, list[pd.DataFrame]] = {}
    files_of: dict[str, list[str]] = {}
    for f in dataset.files:
        df = pq.read_table(f.path, columns=list(REQUIRED)).to_pandas()
        df["open_time"] = _to_ms(df["open_time"])
        for sym, part in df.groupby("symbol", sort=True):
            frames.setdefault(str(sym), []).append(part)
            files_of.setdefault(str(sym), []).append(Path(f.path).name)
    out = {}
    for sym in sorted(frames):
        stats = check_symbol(pd.concat(frames[sym], ignore_index=True))
        stats["files"] = files_of[sym]
        stats["bad"] = sum(stats[k] for k in BAD_KEYS)
        out[sym] = stats
    return out
