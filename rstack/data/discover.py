"""Input discovery and validation: a folder of kline Parquet files, checked before Spark sees it.

Schema problems are found here with pyarrow (cheap, per file) so that the error can name the file,
the column and the fix; Spark then reads files grouped by schema and normalizes ``open_time``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from rstack.data.rules import PRICE_COLUMNS, REQUIRED, check_symbol, interval_of, to_ms_spark
from rstack.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class InputFile:
    path: str
    size: int
    rows: int
    time_kind: str  # "int" or "timestamp"
    symbols: tuple[str, ...]
    # Spark reads one group of files per distinct schema, so int and float prices never mix.
    schema_key: str


@dataclass(frozen=True)
class Dataset:
    root: str
    files: tuple[InputFile, ...]

    def files_of(self, symbol: str) -> list[str]:
        return [Path(f.path).name for f in self.files if symbol in f.symbols]

    @functools.cached_property
    def _content(self) -> tuple[str, ...]:
        # A full sha256 of every file: a rewritten file of equal size and row count is other data.
        # 0.023 s for binance-5m (26 MB, ~1.1 GB/s, docs/serving.md); a footer hash would miss a changed value.
        digests = []
        for f in self.files:
            digest = hashlib.sha256()
            with open(f.path, "rb") as fh:
                while chunk := fh.read(1 << 20):  # hashlib.file_digest is 3.11+; rstack supports 3.10
                    digest.update(chunk)
            digests.append(digest.hexdigest())
        return tuple(digests)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data of a run: every file's name, size, rows and content hash."""
        digest = hashlib.sha256()
        for f, content in zip(self.files, self._content, strict=True):
            digest.update(f"{Path(f.path).name}:{f.size}:{f.rows}:{content}\n".encode())
        return {
            "root": self.root,
            "files": [
                {"name": Path(f.path).name, "bytes": f.size, "rows": f.rows, "sha256": content}
                for f, content in zip(self.files, self._content, strict=True)
            ],
            "total_rows": sum(f.rows for f in self.files),
            "content_hashed": True,
            "sha256": digest.hexdigest(),
        }

    def matches(self, recorded: dict[str, Any]) -> bool:
        """Whether ``recorded`` (a run's ``data``) is the fingerprint of this data. A run recorded
        before content hashing carries only names, sizes and rows; it is compared on those."""
        if recorded.get("content_hashed"):
            return recorded["sha256"] == self.fingerprint()["sha256"]
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(f"{Path(f.path).name}:{f.size}:{f.rows}\n".encode())
        return recorded["sha256"] == digest.hexdigest()


def _check_type(path: Path, name: str, typ: pa.DataType) -> str | None:
    """The open_time kind for open_time, None for other columns; raises on a wrong type."""
    if name == "symbol":
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_dictionary(typ)):
            raise InputError(f"{path}: column 'symbol' has type {typ}, expected text; write it as a string column")
        return None
    if name == "open_time":
        if pa.types.is_integer(typ):
            return "int"
        if pa.types.is_timestamp(typ):
            return "timestamp"
        raise InputError(
            f"{path}: column 'open_time' has type {typ}; expected int64 epoch milliseconds or "
            "microseconds, or a timestamp; convert it, e.g. pd.to_datetime(...).astype('int64') // 10**6"
        )
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)):
        raise InputError(
            f"{path}: column {name!r} has type {typ}, expected a number; "
            f"cast it to float64 before writing (e.g. df[{name!r}].astype(float))"
        )
    return None


def inspect_file(path: Path) -> InputFile:
    try:
        meta = pq.read_metadata(path)
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc}); remove it or re-export it") from exc
    names = set(schema.names)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; required columns are "
            f"{', '.join(REQUIRED)} (open_time in epoch ms)"
        )
    time_kind = "int"
    for name in REQUIRED:
        kind = _check_type(path, name, schema.field(name).type)
        if kind is not None:
            time_kind = kind
    if meta.num_rows == 0:
        raise InputError(f"{path}: the file has no rows; remove it or fill it with klines")
    keys = pq.read_table(path, columns=["symbol", "open_time"])
    found = keys["symbol"].unique().to_pylist()
    if None in found:
        raise InputError(f"{path}: column 'symbol' has empty (null) values; fill in the symbol of every row")
    # A candle without a time has no place in any window or segment, and no rule can place it.
    if keys["open_time"].null_count:
        raise InputError(
            f"{path}: column 'open_time' has {keys['open_time'].null_count} empty (null) values; fill in the "
            "open time of those rows or drop them"
        )
    symbols = tuple(sorted(str(s) for s in found))
    for sym in symbols:
        check_symbol(sym, f"{path}: column 'symbol'")
    key = ";".join(f"{c}:{schema.field(c).type}" for c in REQUIRED)
    return InputFile(
        path=str(path),
        size=path.stat().st_size,
        rows=meta.num_rows,
        time_kind=time_kind,
        symbols=symbols,
        schema_key=key,
    )


def discover(data_dir: Path) -> Dataset:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"data folder {data_dir} does not exist; pass a folder of kline Parquet files")
    paths = sorted(p for p in data_dir.rglob("*.parquet") if p.is_file())
    if not paths:
        raise InputError(
            f"data folder {data_dir} holds no *.parquet files; put one Parquet file per symbol there "
            "(or generate a demo set with `rstack data synth DIR`)"
        )
    return Dataset(root=str(data_dir.resolve()), files=tuple(inspect_file(p) for p in paths))


def read_klines(spark: SparkSession, dataset: Dataset) -> DataFrame:
    """All files as one DataFrame with open_time as int64 ms and prices as double."""
    from pyspark.sql import functions as F

    groups: dict[tuple[str, str], list[str]] = {}
    for f in dataset.files:
        groups.setdefault((f.schema_key, f.time_kind), []).append(f.path)
    frames = []
    for (_, kind), paths in sorted(groups.items()):
        df = spark.read.parquet(*paths).select(*REQUIRED)
        if kind == "timestamp":
            open_time = F.unix_micros(F.col("open_time").cast("timestamp")) / 1000
        else:
            open_time = to_ms_spark(F.col("open_time"))
        frames.append(
            df.select(
                F.col("symbol").cast("string").alias("symbol"),
                open_time.cast("long").alias("open_time"),
                *[F.col(c).cast("double").alias(c) for c in PRICE_COLUMNS],
            )
        )
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def make_batches(symbols: list[str], batch_size: int) -> list[list[str]]:
    ordered = sorted(symbols)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


class TimeSpan(NamedTuple):
    """The data's time range in epoch ms: first and last open_time over all symbols, the last open_time
    that has ``horizon`` later candles of its symbol (the last row a label can exist for), the bar."""

    first_ms: int
    last_ms: int
    last_labelled_ms: int
    bar_ms: int


def time_span(spark: SparkSession, dataset: Dataset, horizon: int) -> TimeSpan | None:
    """The dataset's :class:`TimeSpan`, from the open_time column alone (no candle's values are read);
    None for a dataset without two distinct candles or without a labelled row."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    times = read_klines(spark, dataset).select("symbol", "open_time").distinct()
    w = Window.partitionBy("symbol").orderBy("open_time")
    step = F.col("open_time") - F.lag("open_time").over(w)
    counts = times.select(step.alias("step")).where(F.col("step") > 0).groupBy("step").count().collect()
    # A label ends ``horizon`` rows later (features/windows.py), whatever gaps lie between.
    ahead = F.lead("open_time", horizon).over(w)
    span = (
        times.select("open_time", F.when(ahead.isNotNull(), F.col("open_time")).alias("labelled"))
        .agg(F.min("open_time").alias("lo"), F.max("open_time").alias("hi"), F.max("labelled").alias("lab"))
        .first()
    )
    if not counts or span is None or span["lo"] is None or span["lab"] is None:
        return None
    bar = interval_of({int(r["step"]): int(r["count"]) for r in counts})
    return TimeSpan(int(span["lo"]), int(span["hi"]), int(span["lab"]), bar)
