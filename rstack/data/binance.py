"""Binance kline archives (data.binance.vision) to rstack's layout: one Parquet file per symbol.

Handles the published formats: zip archives with one CSV, or bare CSVs; spot CSVs without a header
and USD-M futures CSVs with one (since about 2022); millisecond timestamps, and microseconds in spot
files from 2025 on (detected per row); ``.CHECKSUM`` files (sha256) verified when present. Each
archive is parsed and staged on its own, so memory is bounded by one archive plus one symbol's
merge; every repair is counted and returned.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from rstack._io import atomic_path
from rstack.data.rules import check_symbol, to_ms_arrow
from rstack.errors import InputError

COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
)
KEPT = tuple(c for c in COLUMNS if c not in ("close_time", "ignore"))
TYPES = {c: pa.float64() for c in COLUMNS} | {"open_time": pa.int64(), "close_time": pa.int64(), "trades": pa.int64()}
NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]{2,30})-(?P<interval>\d+[smhdwM])-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.(?:zip|csv)$"
)


@dataclass
class ImportSummary:
    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)
    repairs: Counter[str] = field(default_factory=Counter)
    files: int = 0

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.symbols.values())


def parse_name(path: Path) -> tuple[str, str] | None:
    m = NAME.match(path.name)
    return (m["symbol"], m["interval"]) if m else None


def verify_checksum(path: Path) -> bool:
    """True if a ``.CHECKSUM`` beside ``path`` matched; False if there is none; raises on mismatch."""
    check = path.with_name(path.name + ".CHECKSUM")
    if not check.is_file():
        return False
    fields = check.read_text().split()
    if not fields or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
        raise InputError(f"{check}: not a sha256 checksum file; expected '<sha256>  {path.name}'")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual.lower() != fields[0].lower():
        raise InputError(
            f"{path}: sha256 {actual} does not match {check} ({fields[0]}); the archive is damaged, download it again"
        )
    return True


def _csv_bytes(path: Path) -> bytes:
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if n.endswith(".csv")]
                if len(members) != 1:
                    raise InputError(
                        f"{path}: expected one CSV inside the zip, found {len(members)}; check the archive"
                    )
                return zf.read(members[0])
        except zipfile.BadZipFile as exc:
            raise InputError(f"{path}: not a readable zip archive ({exc}); download it again") from exc
    return path.read_bytes()


def read_archive(path: Path, repairs: Counter[str]) -> pa.Table:
    """One archive's klines with the kept columns, open_time normalized to ms."""
    data = _csv_bytes(path)
    first = data.split(b"\n", 1)[0].strip()
    if not first:
        raise InputError(f"{path}: the CSV is empty; download the archive again")
    header = not first.split(b",")[0].strip().lstrip(b"-").isdigit()
    ncols = len(first.split(b","))
    if ncols != len(COLUMNS):
        raise InputError(
            f"{path}: {ncols} columns in the first line, expected the {len(COLUMNS)} kline columns "
            f"({', '.join(COLUMNS)}); is this a kline archive?"
        )
    try:
        table = pcsv.read_csv(
            io.BytesIO(data),
            read_options=pcsv.ReadOptions(column_names=list(COLUMNS), skip_rows=1 if header else 0),
            convert_options=pcsv.ConvertOptions(column_types=TYPES),
        )
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: a value does not parse as a number ({exc}); the file is corrupt") from exc
    if header:
        repairs["header_rows_skipped"] += 1
    t, n_micros = to_ms_arrow(table["open_time"])
    if n_micros:
        repairs["open_time_us_to_ms"] += n_micros
    return table.select(list(KEPT)).set_column(0, "open_time", t)


def _staged_sort(symbol: str, parts: list[Path], repairs: Counter[str]) -> pa.Table:
    """All of one symbol's staged archives: sorted by open_time, overlaps removed and counted."""
    table = pa.concat_tables(pq.read_table(p) for p in parts)
    order = pc.sort_indices(table, sort_keys=[("open_time", "ascending"), ("_order", "ascending")])
    table = table.take(order)
    times = table["open_time"].to_numpy()
    if len(times) > 1:
        import numpy as np

        dup = np.concatenate([[False], times[1:] == times[:-1]])
        if dup.any():
            frame = table.drop_columns(["_order"]).to_pandas()
            equal = frame.duplicated(keep="first")
            repairs["duplicate_rows_removed"] += int(equal.sum())
            # Same open_time, different values: the archive applied last wins (see _precedence).
            conflicting = int(dup.sum() - equal.sum())
            if conflicting:
                repairs["conflicting_duplicates_replaced"] += conflicting
            keep = np.concatenate([times[1:] != times[:-1], [True]])  # last of each run of equal times
            table = table.filter(pa.array(keep))
    table = table.drop_columns(["_order"])
    return table.add_column(0, "symbol", pa.array([symbol] * table.num_rows, pa.string()))


def _precedence(path: Path) -> tuple[int, str]:
    """Order in which archives are applied; for a candle in two archives with different values,
    the one applied last wins. Monthly archives come after daily ones: Binance publishes them after
    the month closes, so they are the later revision."""
    m = NAME.match(path.name)
    monthly = m is not None and len(m["date"]) == 7
    return (1 if monthly else 0, path.name)


def import_archives(
    sources: Iterable[Path],
    out_dir: Path,
    symbol: str | None = None,
    interval: str | None = None,
    progress: Callable[[Path], None] | None = None,
) -> ImportSummary:
    """Import zip/CSV kline archives (files or folders) into ``out_dir/<SYMBOL>.parquet``."""
    files: list[Path] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files += sorted(p for p in src.rglob("*") if p.suffix in (".zip", ".csv") and p.is_file())
        elif src.is_file():
            files.append(src)
        else:
            raise InputError(f"{src} does not exist; pass kline .zip/.csv files or folders holding them")
    if not files:
        raise InputError("no .zip or .csv kline archives found in the given sources")
    out_dir = Path(out_dir)
    staging = out_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    summary = ImportSummary()
    by_symbol: dict[str, list[Path]] = {}
    intervals: dict[str, set[str]] = {}
    try:
        for i, path in enumerate(sorted(files, key=_precedence)):
            parsed = parse_name(path)
            sym = symbol or (parsed[0] if parsed else None)
            ivl = interval or (parsed[1] if parsed else None)
            if sym is None:
                raise InputError(
                    f"{path}: cannot tell the symbol from the name (expected e.g. BTCUSDT-1m-2024-01.zip); "
                    "pass --symbol"
                )
            check_symbol(sym, f"{path}: the symbol")
            if verify_checksum(path):
                summary.repairs["checksums_verified"] += 1
            table = read_archive(path, summary.repairs)
            table = table.append_column("_order", pa.array([i] * table.num_rows, pa.int64()))
            part = staging / sym / f"{i:06d}.parquet"
            part.parent.mkdir(exist_ok=True)
            pq.write_table(table, part)
            by_symbol.setdefault(sym, []).append(part)
            intervals.setdefault(sym, set()).add(ivl or "?")
            summary.files += 1
            if progress:
                progress(path)
        for sym, parts in sorted(by_symbol.items()):
            table = _staged_sort(sym, parts, summary.repairs)
            with atomic_path(out_dir / f"{sym}.parquet") as tmp:
                pq.write_table(table, tmp)
            times = table["open_time"]
            summary.symbols[sym] = {
                "rows": table.num_rows,
                "first_ms": pc.min(times).as_py(),
                "last_ms": pc.max(times).as_py(),
                "intervals": sorted(intervals[sym]),
            }
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
