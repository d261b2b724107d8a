"""The one path from klines to features. Training (``features/table.py``), ``rstack predict``, the
stream's micro-batches and rescoring all call :func:`to_features`, so a row is checked, repaired,
featurized and given its status by the same code wherever it is scored:

    [cut] -> in time order -> row checks (``validate.py``) -> features -> row status -> [scales]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rstack.config import Config
from rstack.data.discover import Dataset
from rstack.data.validate import in_time_order, validate_klines
from rstack.features.vol import SCALE_COL, scale_vol
from rstack.features.windows import add_features, row_status

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

UNKNOWN_SYMBOL = "unknown_symbol"


@dataclass
class Featurized:
    frame: DataFrame  # the features and ``_status`` of every checked row
    bar_ms: int
    checks: dict[str, dict[str, int]]  # per symbol: duplicate_rows_removed, gaps, missing_candles


def to_features(
    klines: DataFrame,
    dataset: Dataset | None,
    cfg: Config,
    with_vol: bool,
    *,
    labelled: bool,
    interval: int | None = None,
    until_ms: int | None = None,
    scales: dict[str, float] | None = None,
    extra: tuple[str, ...] = (),
    grid_only: bool = False,
    cached: list[DataFrame] | None = None,
) -> Featurized:
    """Checked, featurized rows of normalized klines (symbol, open_time ms, OHLCV doubles).

    Raises InputError, naming files and symbols, where training would. ``interval`` (a saved run's)
    must equal the data's own; ``until_ms`` drops every candle from then on before anything reads
    their values; ``scales`` (symbol -> scale) scales the volatility columns, and rows of symbols
    without one get status ``unknown_symbol``. With ``cached``, the ordered klines are persisted for
    the checks and the features to share, and listed there for the caller to unpersist.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    if until_ms is not None:
        klines = klines.where(F.col("open_time") < F.lit(until_ms))
    ordered = in_time_order(klines, extra)
    if cached is not None:
        ordered = ordered.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(ordered)
        # Built before the next plans are made: until then Spark's adaptive cached plan reports no
        # partitioning, and the validation's window would shuffle the rows by symbol a second time.
        ordered.count()
    raw, bar_ms, checks = validate_klines(ordered, dataset, interval, extra, grid_only)
    horizon = cfg.label.horizon
    table = add_features(raw, cfg.features, horizon, bar_ms, with_vol=with_vol)
    table = table.withColumn("_status", row_status(cfg.features, horizon, with_vol, labelled))
    if scales is not None:
        table = apply_scales(table, scales, cfg)
    return Featurized(table, bar_ms, checks)


def apply_scales(df: DataFrame, scales: dict[str, float], cfg: Config) -> DataFrame:
    """The scaled volatility features from each symbol's scale (its L0-train label threshold); a
    symbol without one has status ``unknown_symbol``: "above its usual level" needs the level the
    models were trained to compare with."""
    from pyspark.sql import functions as F

    frame = df.sparkSession.createDataFrame(
        sorted((str(k), float(v)) for k, v in scales.items()), f"symbol string, {SCALE_COL} double"
    )
    joined = df.join(F.broadcast(frame), "symbol", "left")
    known = F.col(SCALE_COL).isNotNull()
    joined = joined.withColumn("_status", F.when(known, F.col("_status")).otherwise(F.lit(UNKNOWN_SYMBOL)))
    return scale_vol(joined, cfg.features)
