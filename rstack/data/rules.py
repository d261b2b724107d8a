"""What a usable kline row is: the one definition of every row rule, for every engine that applies it.

Training and ``rstack predict`` apply these rules in Spark (``validate.py``), ``rstack data check``
and the stream's per-micro-batch screen in pandas, the Binance importer in Arrow. Each rule is
written once, over operators all three share (``<``, ``&``, ``|``, ``~``); the engine supplies only
its own "is this value finite" test. A test cross-checks the engines on the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from rstack.errors import InputError

REQUIRED = ("symbol", "open_time", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
BAD_VALUE_KINDS = ("nonfinite_price", "nonpositive_price", "inconsistent_ohlc", "negative_volume")

# Binance spot switched to microseconds in 2025; ms epochs stay below 1e14 until year 5138.
MICROS_THRESHOLD = 10**14
# Symbols name model and data paths: one that could leave its folder is refused outright.
SAFE_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SAFE_SYMBOL_HINT = "use letters, digits, '.', '_' or '-' (1-64 characters, not starting with '.'), e.g. BTCUSDT"

# A Spark Column, a pandas Series or a numpy array: they share the operators, not a type mypy knows.
T = TypeVar("T", bound=Any)


def check_symbol(symbol: str, where: str) -> str:
    """``symbol`` if it is a safe name, else an InputError naming ``where`` it came from."""
    if not SAFE_SYMBOL.match(symbol):
        raise InputError(f"{where} holds {symbol!r}, which is not a safe name; {SAFE_SYMBOL_HINT}")
    return symbol


def to_ms_spark(raw: Any) -> Any:
    """A Spark column of epoch ms or µs as epoch ms (per row, so a folder mixing both is normalized)."""
    from pyspark.sql import functions as F

    raw = raw.cast("long")
    return F.when(raw >= MICROS_THRESHOLD, F.floor(raw / 1000)).otherwise(raw).cast("long")


def to_ms_arrow(raw: Any) -> tuple[Any, int]:
    """An Arrow int64 array of epoch ms or µs as epoch ms, and how many values were µs."""
    import pyarrow.compute as pc

    micros = pc.greater_equal(raw, MICROS_THRESHOLD)
    n = pc.sum(micros).as_py() or 0
    if not n:
        return raw, 0
    # Integer division: pc.divide on int64 truncates, as Spark's floor does for positive epochs.
    return pc.if_else(micros, pc.divide(raw, 1000), raw), int(n)


def bad_value_flags(cols: Mapping[str, T], nonfinite: Callable[[T], T]) -> dict[str, T]:
    """Per kind in BAD_VALUE_KINDS, which rows have it; ``cols`` maps open..volume to columns and
    ``nonfinite`` is the engine's null/NaN/inf test. A row with a non-finite value counts as that
    kind only, since comparisons with NaN say nothing."""
    o, h, lo, c, v = (cols[k] for k in PRICE_COLUMNS)
    bad = nonfinite(o) | nonfinite(h) | nonfinite(lo) | nonfinite(c) | nonfinite(v)
    return {
        "nonfinite_price": bad,
        "nonpositive_price": ~bad & ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)),
        "inconsistent_ohlc": ~bad & ((h < lo) | (o < lo) | (o > h) | (c < lo) | (c > h)),
        "negative_volume": ~bad & (v < 0),
    }


def spark_nonfinite(col: Any) -> Any:
    import math

    from pyspark.sql import functions as F

    return col.isNull() | F.isnan(col) | col.isin(math.inf, -math.inf)


def numpy_nonfinite(col: Any) -> Any:
    import numpy as np

    return ~np.isfinite(np.asarray(col, dtype=float))


def interval_of(step_counts: Mapping[int, int]) -> int:
    """The bar interval of a dataset: its most common step between distinct candles, over all symbols
    together (one symbol with many gaps cannot change it); a tie goes to the shorter step."""
    return max(step_counts, key=lambda dt: (step_counts[dt], -dt))


def interval_name(ms: int) -> str:
    """``3600000`` -> ``1h``; the unit Binance names its intervals in."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def wrong_interval(data_ms: int, run_ms: int, where: str) -> InputError:
    return InputError(
        f"{where}: the klines are {interval_name(data_ms)} candles ({data_ms} ms apart) but the run was trained "
        f"on {interval_name(run_ms)} candles ({run_ms} ms); score them with a run trained on "
        f"{interval_name(data_ms)} klines, or resample them to {interval_name(run_ms)}"
    )
