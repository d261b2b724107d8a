from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from rstack.data.discover import discover, make_batches
from rstack.errors import InputError


def klines(n: int = 5, symbol: str = "AAAUSDT") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": symbol,
            "open_time": 1_704_067_200_000 + 3_600_000 * pd.RangeIndex(n),
            "open": 1.0,
            "high": 1.1,
            "low": 0.9,
            "close": 1.0,
            "volume": 10.0,
        }
    )


def drop_volume(d: Path) -> None:
    klines().drop(columns=["volume"]).to_parquet(d / "A.parquet")


def string_prices(d: Path) -> None:
    klines().astype({"close": str}).to_parquet(d / "A.parquet")


def string_time(d: Path) -> None:
    klines().astype({"open_time": str}).to_parquet(d / "A.parquet")


def numeric_symbol(d: Path) -> None:
    klines().assign(symbol=1).to_parquet(d / "A.parquet")


def empty_file(d: Path) -> None:
    klines(0).to_parquet(d / "A.parquet")


def corrupt_file(d: Path) -> None:
    (d / "A.parquet").write_text("this is not parquet")


def nothing(d: Path) -> None:
    (d / "notes.txt").write_text("no parquet here")


def escaping_symbol(d: Path) -> None:
    klines(symbol="../x").to_parquet(d / "A.parquet")


def slash_symbol(d: Path) -> None:
    klines(symbol="/").to_parquet(d / "A.parquet")


def nul_symbol(d: Path) -> None:
    klines(symbol="BTC\x00USDT").to_parquet(d / "A.parquet")


def null_symbol(d: Path) -> None:
    klines().assign(symbol=None).astype({"symbol": "string"}).to_parquet(d / "A.parquet")


def null_time(d: Path) -> None:
    frame = klines().astype({"open_time": "Int64"})
    frame.loc[2, "open_time"] = None
    frame.to_parquet(d / "A.parquet")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (escaping_symbol, r"A\.parquet: column 'symbol' holds '../x', which is not a safe name"),
        (slash_symbol, r"column 'symbol' holds '/', which is not a safe name"),
        (nul_symbol, r"column 'symbol' holds 'BTC\\x00USDT', which is not a safe name"),
        (null_symbol, r"column 'symbol' has empty \(null\) values"),
        (null_time, r"A\.parquet: column 'open_time' has 1 empty \(null\) values; fill in the open time"),
        (drop_volume, r"A\.parquet: missing column\(s\) volume; required columns are"),
        (string_prices, r"A\.parquet: column 'close' has type (large_)?string, expected a number; cast it"),
        (string_time, r"A\.parquet: column 'open_time' has type (large_)?string; expected int64 epoch"),
        (numeric_symbol, r"A\.parquet: column 'symbol' has type int64, expected text"),
        (empty_file, r"A\.parquet: the file has no rows"),
        (corrupt_file, r"A\.parquet: not a readable Parquet file"),
        (nothing, r"holds no \*\.parquet files; put one Parquet file per symbol"),
    ],
)
def test_bad_input_is_named_with_a_fix(tmp_path: Path, make: Callable[[Path], None], match: str) -> None:
    make(tmp_path)
    with pytest.raises(InputError, match=match):
        discover(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        discover(tmp_path / "absent")


def test_discover_fingerprint_and_kinds(tmp_path: Path) -> None:
    klines(7).to_parquet(tmp_path / "A.parquet")
    k = klines(3, "BBBUSDT")
    k["open_time"] = pd.to_datetime(k["open_time"], unit="ms", utc=True)
    k.to_parquet(tmp_path / "B.parquet")
    ds = discover(tmp_path)
    assert [f.time_kind for f in ds.files] == ["int", "timestamp"]
    fp = ds.fingerprint()
    assert fp["total_rows"] == 10 and len(fp["sha256"]) == 64
    klines(8).to_parquet(tmp_path / "A.parquet")
    assert discover(tmp_path).fingerprint()["sha256"] != fp["sha256"]


def test_batches_are_sorted_and_sized() -> None:
    assert make_batches(["D", "A", "C", "B", "E"], 2) == [["A", "B"], ["C", "D"], ["E"]]


def test_extra_columns_and_zoned_timestamps_are_accepted(tmp_path: Path) -> None:
    k = klines(3).assign(quote_volume=1.0, trades=5)  # extra columns: kept out of training, no error
    k.to_parquet(tmp_path / "A.parquet")
    z = klines(3, "BBBUSDT")
    z["open_time"] = pd.to_datetime(z["open_time"], unit="ms", utc=True).dt.tz_convert("Asia/Tokyo")
    z.to_parquet(tmp_path / "B.parquet")
    ds = discover(tmp_path)
    assert [f.symbols for f in ds.files] == [("AAAUSDT",), ("BBBUSDT",)]
    assert ds.files_of("BBBUSDT") == ["B.parquet"]


def test_fingerprint_sees_a_changed_value_in_a_file_of_equal_size_and_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rstack.config import load_config
    from rstack.training.resume import open_run
    from tests.conftest import ROOT

    frame = klines(50).assign(close=[1.0 + i / 100 for i in range(50)])

    # Uncompressed and plain: a changed value inside the min/max keeps the file's size exactly.
    def write(f: pd.DataFrame) -> None:
        pq.write_table(pa.Table.from_pandas(f), tmp_path / "A.parquet", compression="none", use_dictionary=False)

    write(frame)
    before = discover(tmp_path)
    cfg = load_config(ROOT / "configs" / "laptop.yaml", {}, environ={})
    run = open_run(tmp_path / "models", cfg, before, None)
    run.fail()
    write(frame.assign(close=frame["close"].where(frame.index != 20, 1.205)))
    after = discover(tmp_path)
    assert (after.files[0].size, after.files[0].rows) == (before.files[0].size, before.files[0].rows)
    assert after.fingerprint()["sha256"] != before.fingerprint()["sha256"]
    assert before.matches(before.fingerprint()) and not after.matches(before.fingerprint())
    # --resume refuses the rewritten data (rescore compares the same way).
    with pytest.raises(InputError, match=rf"run {run.run_id} was started on other data"):
        open_run(tmp_path / "models", cfg, after, run.run_id)


def test_data_check_reads_timestamps_finer_than_a_millisecond(tmp_path: Path) -> None:
    from rstack.data.check import check_dir

    frame = klines(30)
    frame["open_time"] = pd.to_datetime(frame["open_time"], unit="ms", utc=True) + pd.Timedelta(microseconds=7)
    frame.to_parquet(tmp_path / "A.parquet")  # timestamp[ns, UTC] with a sub-ms part, truncated as training does
    stats = check_dir(tmp_path)["AAAUSDT"]
    assert stats["interval_ms"] == 3_600_000 and stats["first_ms"] == 1_704_067_200_000 and stats["bad"] == 0
