"""Row-level checks of the klines before any feature is computed.

Decisions (the README's bad-input table lists them all):
- exact duplicate rows are removed and counted; rows sharing (symbol, open_time) with different
  values are an error, since no rule can say which is right;
- non-finite or non-positive prices, high < low, open/close outside [low, high] and negative volume
  are errors naming the symbol, the first row and the files: they mean a broken source;
- a symbol whose candle spacing is not a multiple of the dataset's interval (mixed intervals) is an
  error; missing candles (gaps) are kept and counted, and features never span a gap wider than
  ``features.max_gap_bars`` (windows restart after it).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from rstack.data import Dataset
from rstack.errors import InputError
from rstack.segments import iso

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

BAD_VALUE_KINDS = ("nonfinite_price", "nonpositive_price", "inconsistent_ohlc", "negative_volume")


def _bad_value_flags() -> dict[str, Any]:
    import math

    from pyspark.sql import functions as F

    prices = [F.col(c) for c in ("open", "high", "low", "close")]
    nonfinite = F.lit(False)
    for c in [*prices, F.col("volume")]:
        nonfinite = nonfinite | c.isNull() | F.isnan(c) | c.isin(math.inf, -math.inf)
    o, h, lo, c = prices
    return {
        "nonfinite_price": nonfinite,
        "nonpositive_price": ~nonfinite & ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)),
        "inconsistent_ohlc": ~nonfinite & ((h < lo) | (o < lo) | (o > h) | (c < lo) | (c > h)),
        "negative_volume": ~nonfinite & (F.col("volume") < 0),
    }


def validate_klines(raw: DataFrame, dataset: Dataset) -> tuple[DataFrame, int, dict[str, dict[str, int]]]:
    """(deduplicated klines, bar interval in ms, per-symbol counts); raises InputError on bad data."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    flags = _bad_value_flags()
    cols = raw.columns
    stats = (
        raw.groupBy("symbol")
        .agg(
            F.count("*").alias("rows"),
            F.countDistinct(*cols).alias("distinct_rows"),
            F.countDistinct("open_time").alias("distinct_times"),
            *[F.sum(flag.cast("long")).alias(kind) for kind, flag in flags.items()],
            F.sum(functools.reduce(lambda a, b: a | b, flags.values()).cast("long")).alias("bad_rows"),
            *[F.min(F.when(flag, F.col("open_time"))).alias(f"first_{kind}") for kind, flag in flags.items()],
        )
        .collect()
    )
    counts: dict[str, dict[str, int]] = {}
    for r in sorted(stats, key=lambda r: r["symbol"]):
        sym = r["symbol"]
        files = ", ".join(dataset.files_of(sym))
        # Bad values first: a null price also hides its row from the duplicate counts.
        bad = {k: r[k] for k in BAD_VALUE_KINDS if r[k]}
        if bad:
            kind = min(bad, key=lambda k: r[f"first_{k}"])
            raise InputError(
                f"symbol {sym} ({files}): bad values in {r['bad_rows']} rows ("
                + ", ".join(f"{k} {v}" for k, v in bad.items())
                + f"), first {kind} at open_time {r[f'first_{kind}']} ({iso(r[f'first_{kind}'])}); "
                "fix or drop those rows in the source (`rstack data check` lists them per symbol)"
            )
        conflicting = r["distinct_rows"] - r["distinct_times"]
        if conflicting:
            raise InputError(
                f"symbol {sym} ({files}): {conflicting} open_time value(s) appear in rows with different values; "
                "keep one row per (symbol, open_time) (`rstack data check` counts them)"
            )
        counts[sym] = {"duplicate_rows_removed": r["rows"] - r["distinct_rows"]}
    if any(c["duplicate_rows_removed"] for c in counts.values()):
        raw = raw.dropDuplicates()

    w = Window.partitionBy("symbol").orderBy("open_time")
    steps = raw.select("symbol", (F.col("open_time") - F.lag("open_time").over(w)).alias("dt")).where(
        F.col("dt").isNotNull()
    )
    hist = steps.groupBy("symbol", "dt").count().collect()
    if not hist:
        raise InputError("every symbol has a single candle; rstack needs a time series per symbol")
    totals: dict[int, int] = {}
    for r in hist:
        totals[r["dt"]] = totals.get(r["dt"], 0) + r["count"]
    bar_ms = max(totals, key=lambda dt: (totals[dt], -dt))
    for sym in counts:
        own = {r["dt"]: r["count"] for r in hist if r["symbol"] == sym}
        off_grid = {dt: n for dt, n in own.items() if dt % bar_ms}
        if off_grid:
            example = min(off_grid)
            raise InputError(
                f"symbol {sym} ({', '.join(dataset.files_of(sym))}): {sum(off_grid.values())} candle steps are not a "
                f"multiple of the dataset's interval {bar_ms} ms (e.g. {example} ms); mixed intervals in one "
                "symbol, keep one interval per dataset"
            )
        counts[sym]["gaps"] = sum(n for dt, n in own.items() if dt > bar_ms)
        counts[sym]["missing_candles"] = sum(n * (dt // bar_ms - 1) for dt, n in own.items() if dt > bar_ms)
    return raw, bar_ms, counts
