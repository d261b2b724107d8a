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

from rstack._io import utc_text
from rstack.data.discover import Dataset
from rstack.data.rules import (
    BAD_VALUE_KINDS,
    PRICE_COLUMNS,
    REQUIRED,
    bad_value_flags,
    interval_name,
    interval_of,
    spark_nonfinite,
    wrong_interval,
)
from rstack.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def in_time_order(raw: DataFrame, extra: tuple[str, ...] = ()) -> DataFrame:
    """The klines hash-partitioned by symbol and sorted by every column, symbol and open_time first
    (``extra`` columns ride along, last).

    Every window in ``features/`` is per symbol in time order, so this is the run's only shuffle
    of the rows; sorting by the values too puts identical rows side by side for ``validate_klines``.
    """
    return raw.select(*REQUIRED, *extra).repartition("symbol").sortWithinPartitions(*REQUIRED)


def _files(dataset: Dataset | None, symbol: str) -> str:
    return ", ".join(dataset.files_of(symbol)) if dataset is not None else "the klines given"


def validate_klines(
    ordered: DataFrame,
    dataset: Dataset | None,
    interval: int | None = None,
    extra: tuple[str, ...] = (),
    grid_only: bool = False,
) -> tuple[DataFrame, int, dict[str, dict[str, int]]]:
    """(deduplicated klines, bar interval in ms, per-symbol counts) of ``in_time_order``'s output;
    raises InputError on bad data. The klines keep their partitioning and order.

    ``interval`` is a saved run's: the data's own interval (its most common step) must equal it
    (serving); without it the data's interval is inferred, as training does. With ``grid_only`` only
    the steps must be multiples of ``interval``: a stream's micro-batch is too short to have a
    reliable most common step."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    prices = {c: F.col(c) for c in PRICE_COLUMNS}
    flags = bad_value_flags(prices, spark_nonfinite)
    cols = list(REQUIRED)
    # Identical rows are side by side, so one lag tells an exact duplicate (all values equal to the row
    # before) from a conflicting one (same open_time, other values).
    w = Window.partitionBy("symbol").orderBy(*cols[1:])
    step = F.col("open_time") - F.lag("open_time").over(w)
    same = functools.reduce(lambda a, b: a & b, [F.col(c).eqNullSafe(F.lag(c).over(w)) for c in PRICE_COLUMNS])
    marked = ordered.select(*cols, *extra, step.alias("_dt"), same.alias("_same"))
    duplicate = (F.col("_dt") == 0) & F.col("_same")
    conflicting = (F.col("_dt") == 0) & ~F.col("_same")
    # Grouped by (symbol, step to the previous distinct candle): the counts and the step histogram in one
    # pass, with no shuffle since the rows are already partitioned by symbol.
    grouped = (
        marked.groupBy("symbol", F.when(F.col("_dt") > 0, F.col("_dt")).alias("_step"))
        .agg(
            F.count("*").alias("rows"),
            F.sum(duplicate.cast("long")).alias("duplicates"),
            F.sum(conflicting.cast("long")).alias("conflicting"),
            *[F.sum(flag.cast("long")).alias(kind) for kind, flag in flags.items()],
            F.sum(functools.reduce(lambda a, b: a | b, flags.values()).cast("long")).alias("bad_rows"),
            *[F.min(F.when(flag, F.col("open_time"))).alias(f"first_{kind}") for kind, flag in flags.items()],
        )
        .collect()
    )
    stats: dict[str, dict[str, Any]] = {}
    steps: dict[str, dict[int, int]] = {}
    for r in grouped:
        s = stats.setdefault(r["symbol"], {"rows": 0, "duplicates": 0, "conflicting": 0, "bad_rows": 0})
        for key in ("rows", "duplicates", "conflicting", "bad_rows", *BAD_VALUE_KINDS):
            s[key] = s.get(key, 0) + (r[key] or 0)
        for kind in BAD_VALUE_KINDS:
            first = r[f"first_{kind}"]
            if first is not None and (s.get(f"first_{kind}") is None or first < s[f"first_{kind}"]):
                s[f"first_{kind}"] = first
        if r["_step"] is not None:
            steps.setdefault(r["symbol"], {})[r["_step"]] = r["rows"]

    counts: dict[str, dict[str, int]] = {}
    for sym in sorted(stats):
        st = stats[sym]
        files = _files(dataset, sym)
        # Bad values first: a row with a broken price is no evidence of a conflict either way.
        bad = {k: st[k] for k in BAD_VALUE_KINDS if st[k]}
        if bad:
            kind = min(bad, key=lambda k: st[f"first_{k}"])
            raise InputError(
                f"symbol {sym} ({files}): bad values in {st['bad_rows']} rows ("
                + ", ".join(f"{k} {v}" for k, v in bad.items())
                + f"), first {kind} at open_time {st[f'first_{kind}']} ({utc_text(st[f'first_{kind}'])}); "
                "fix or drop those rows in the source (`rstack data check` lists them per symbol)"
            )
        if st["conflicting"]:
            raise InputError(
                f"symbol {sym} ({files}): {st['conflicting']} open_time value(s) appear in rows with different "
                "values; keep one row per (symbol, open_time) (`rstack data check` counts them)"
            )
        counts[sym] = {"duplicate_rows_removed": st["duplicates"]}
    totals: dict[int, int] = {}
    for own in steps.values():
        for dt, n in own.items():
            totals[dt] = totals.get(dt, 0) + n
    if not totals and interval is None:
        raise InputError("every symbol has a single candle; rstack needs a time series per symbol")
    # With no steps to measure (single candles), the caller's interval is the grid; one was given (else raised).
    bar_ms = interval if interval is not None and (grid_only or not totals) else interval_of(totals)
    if interval is not None and bar_ms != interval:
        raise wrong_interval(bar_ms, interval, dataset.root if dataset is not None else "the klines given")
    for sym in counts:
        own = steps.get(sym, {})
        off_grid = {dt: n for dt, n in own.items() if dt % bar_ms}
        if off_grid:
            example = min(off_grid)
            raise InputError(
                f"symbol {sym} ({_files(dataset, sym)}): {sum(off_grid.values())} candle steps are not a "
                f"multiple of the dataset's interval {bar_ms} ms ({interval_name(bar_ms)}; e.g. {example} ms); "
                "mixed intervals in one symbol, keep one interval per dataset"
            )
        counts[sym]["gaps"] = sum(n for dt, n in own.items() if dt > bar_ms)
        counts[sym]["missing_candles"] = sum(n * (dt // bar_ms - 1) for dt, n in own.items() if dt > bar_ms)
    if any(c["duplicate_rows_removed"] for c in counts.values()):
        # A filter keeps the partitioning and the order.
        return marked.where(~duplicate | F.col("_dt").isNull()).select(*cols, *extra), bar_ms, counts
    return ordered, bar_ms, counts
