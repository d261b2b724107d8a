"""The few things every layer shares: the key columns, atomic writes, UTC text, the run manifest.

One definition each, at the bottom of the import graph, so data, features, models, training,
serving and reporting all write files and timestamps the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack.errors import InputError, RstackError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

# A candle is identified by its symbol and its open time (ms UTC); every join and sort uses both.
KEY: tuple[str, str] = ("symbol", "open_time")
MANIFEST = "manifest.json"
UTC_SECONDS = "%Y-%m-%dT%H:%M:%SZ"
UTC_MINUTES = "%Y-%m-%d %H:%M"


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    Readers (a browser, a resumed run, a CI upload) see the old file or the whole new one, never a
    partial write; a failed write leaves no temporary file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def json_safe(value: Any) -> Any:
    """NaN (e.g. ROC-AUC of a one-class segment) is not JSON; write it as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: Path | str, value: Any, indent: int = 2) -> None:
    text = json.dumps(json_safe(value), indent=indent, sort_keys=True, default=str, allow_nan=False)
    write_text_atomic(path, text)


def write_parquet_atomic(frame: pd.DataFrame, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_spark_dir(df: DataFrame, path: Path | str) -> None:
    """``df`` as a folder of Parquet parts written by the executors, in place only when complete."""
    import shutil
    import uuid

    path = Path(path)
    # A name of its own per call: a retried task and the straggler it replaces never share a folder.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        df.write.mode("overwrite").parquet(str(tmp))
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            # Another writer of the same job (a retry beside its straggler) put its complete folder
            # there between the removal and the rename: both wrote the same rows, keep that one.
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (path / "_SUCCESS").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parquet_rows(path: Path | str) -> int:
    """Rows of a Parquet file or folder of parts, from the footers alone."""
    import pyarrow.parquet as pq

    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def part_number(path: Path) -> int:
    """A Spark part file's number (``part-00042-<uuid>.snappy.parquet``: 42), which is its range order;
    by name, ``part-100000`` would sort before ``part-99999``."""
    return int(path.name.split("-")[1])


def write_spark_parquet(df: DataFrame, path: Path | str, order: tuple[str, ...] = KEY) -> int:
    """``df`` sorted by ``order`` as one Parquet file, written atomically; returns its rows.

    The executors write range-sorted parts; they are appended to the file one row group at a time, so
    the writing process holds one row group, never the table (pandas' to_parquet would need it all)."""
    import shutil

    import pyarrow.parquet as pq

    path = Path(path)
    parts_dir = path.with_name(f".{path.name}.parts")
    rows = 0
    try:
        write_spark_dir(df.orderBy(*order), parts_dir)
        parts = sorted(parts_dir.glob("part-*.parquet"), key=lambda p: (part_number(p), p.name))
        with atomic_path(path) as tmp:
            writer = None
            try:
                for part in parts:
                    source = pq.ParquetFile(part)
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, source.schema_arrow)
                    for i in range(source.num_row_groups):
                        group = source.read_row_group(i)
                        writer.write_table(group)
                        rows += group.num_rows
            finally:
                if writer is not None:
                    writer.close()
            if writer is None:
                raise RstackError(f"Spark wrote no Parquet part for {path}; see the Spark logs and retry")
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return rows


# --------------------------------------------------------------------------- UTC text


def utc_text(ms: float | None = None, fmt: str = UTC_SECONDS) -> str:
    """Epoch milliseconds (None: now) as UTC text; the manifest's and every message's format."""
    when = dt.datetime.now(dt.timezone.utc) if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return when.strftime(fmt)


def parse_utc(text: Any) -> dt.datetime | None:
    """The manifest's UTC text back to a datetime; None when absent or not a timestamp."""
    if not text:
        return None
    try:
        # Python 3.10's fromisoformat does not take the trailing Z the manifest uses.
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


# --------------------------------------------------------------------------- the manifest


def write_manifest(run_dir: Path | str, manifest: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / MANIFEST, manifest)


def load_manifest(run_dir: Path | str) -> dict[str, Any]:
    """A run's manifest, or an error that says which folder is not a finished run and what to do."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise InputError(
            f"{path} not found; point at a complete run folder (one that holds {MANIFEST}), "
            "e.g. models/latest, or train one with `rstack train`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not readable JSON ({exc}); the run is damaged, train it again") from exc
    if not isinstance(manifest, dict):
        raise InputError(f"{path} is not a JSON object; it is not an rstack run, train it again")
    return manifest
