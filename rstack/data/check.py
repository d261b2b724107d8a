"""``rstack data check``: per-symbol health of a kline folder, without Spark and without training.

It applies training's row rules (``rules.py``), so a folder it calls clean trains without a row
error; the interval is training's too: the most common step over the whole folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rstack.data.discover import discover
from rstack.data.rules import REQUIRED, bad_value_flags, interval_of, numpy_nonfinite, to_ms_arrow

# Problems that make a symbol unusable as it is; the rest are facts to know about.
BAD_KEYS = (
    "nonfinite_price",
    "nonpositive_price",
    "inconsistent_ohlc",
    "negative_volume",
    "conflicting_duplicates",
    "off_grid_steps",
)


def _open_time_ms(table: pa.Table) -> np.ndarray:
    t = table["open_time"]
    if pa.types.is_timestamp(t.type):
        # Truncated to whole ms, as training's Spark cast does (a safe cast refuses µs and ns).
        return t.cast(pa.timestamp("ms", tz=t.type.tz), safe=False).cast(pa.int64()).to_numpy()
    return to_ms_arrow(t.cast(pa.int64()))[0].to_numpy()


def _steps(frame: pd.DataFrame) -> np.ndarray:
    return np.diff(np.unique(frame["open_time"].to_numpy()))


def symbol_health(frame: pd.DataFrame, interval: int) -> dict[str, Any]:
    """The symbol's counts, judged against the folder's ``interval`` (ms)."""
    t = frame["open_time"].to_numpy()
    unsorted = int((np.diff(t) < 0).sum()) if len(t) > 1 else 0
    frame = frame.sort_values("open_time", kind="mergesort")
    uniq = np.unique(frame["open_time"].to_numpy())
    diffs = np.diff(uniq)
    exact_dups = int(frame.duplicated(keep="first").sum())
    dup_rows = int(frame["open_time"].duplicated(keep="first").sum())
    flags = bad_value_flags({c: frame[c].to_numpy(dtype=float) for c in REQUIRED[2:]}, numpy_nonfinite)
    with np.errstate(invalid="ignore"):
        counts = {kind: int(np.asarray(mask).sum()) for kind, mask in flags.items()}
        zero_volume = int((frame["volume"].to_numpy(dtype=float) == 0).sum())
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
        "duplicate_times": int(frame["open_time"].duplicated(keep=False).sum()),
        "unsorted_steps": unsorted,
        "zero_volume": zero_volume,
        **counts,
    }


def check_dir(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Stats per symbol; schema problems raise InputError (naming file, column and fix) first."""
    dataset = discover(Path(data_dir))
    frames: dict[str, list[pd.DataFrame]] = {}
    files_of: dict[str, list[str]] = {}
    for f in dataset.files:
        table = pq.read_table(f.path, columns=list(REQUIRED))
        df = table.drop_columns(["open_time"]).to_pandas()
        df.insert(1, "open_time", _open_time_ms(table))
        for sym, part in df.groupby("symbol", sort=True):
            frames.setdefault(str(sym), []).append(part)
            files_of.setdefault(str(sym), []).append(Path(f.path).name)
    merged = {sym: pd.concat(parts, ignore_index=True) for sym, parts in frames.items()}
    histogram: dict[int, int] = {}
    for frame in merged.values():
        for dt, n in zip(*np.unique(_steps(frame), return_counts=True), strict=True):
            histogram[int(dt)] = histogram.get(int(dt), 0) + int(n)
    interval = interval_of(histogram) if histogram else 0
    out = {}
    for sym in sorted(merged):
        stats = symbol_health(merged[sym], interval)
        stats["files"] = files_of[sym]
        stats["bad"] = sum(stats[k] for k in BAD_KEYS)
        out[sym] = stats
    return out
