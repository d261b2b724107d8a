"""Binance archive import, download from a local archive server, and `rstack data check`."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rstack.cli.app import app
from rstack.data.binance import import_archives
from rstack.data.check import check_dir
from rstack.data.download import DownloadError, download, fetch, months
from rstack.errors import InputError

HOUR = 3_600_000


def kline_rows(start_ms: int, n: int, step: int = HOUR, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + start_ms // HOUR)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    t = start_ms + step * np.arange(n, dtype=np.int64)
    return pd.DataFrame(
        {
            "open_time": t,
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.random(n) * 10,
            "close_time": t + step - 1,
            "quote_volume": rng.random(n),
            "trades": rng.integers(1, 100, n),
            "taker_buy_base_volume": rng.random(n),
            "taker_buy_quote_volume": rng.random(n),
            "ignore": 0,
        }
    )


def make_archive(
    folder: Path, name: str, rows: pd.DataFrame, header: bool = False, micros: bool = False, checksum: bool = True
) -> Path:
    rows = rows.copy()
    if micros:
        rows["open_time"] *= 1000
        rows["close_time"] *= 1000
    csv = rows.to_csv(index=False, header=header)
    path = folder / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name.replace(".zip", ".csv"), csv)
    if checksum:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        (folder / f"{name}.CHECKSUM").write_text(f"{digest}  {name}\n")
    return path


def ms(day: str) -> int:
    return int(pd.Timestamp(day, tz="UTC").value // 1_000_000)


def test_import_real_formats(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    feb, jan = kline_rows(ms("2024-02-01"), 29 * 24), kline_rows(ms("2024-01-01"), 31 * 24)
    make_archive(src, "BTCUSDT-1h-2024-02.zip", feb)  # spot: no header; imported out of order
    make_archive(src, "BTCUSDT-1h-2024-01.zip", jan)
    make_archive(src, "BTCUSDT-1h-2024-01-31.zip", jan.iloc[-24:])  # a daily file overlapping January
    make_archive(src, "ETHUSDT-1h-2025-01.zip", kline_rows(ms("2025-01-01"), 48), micros=True)  # spot 2025: µs
    make_archive(src, "SOLUSDT-1h-2023-05.zip", kline_rows(ms("2023-05-01"), 24), header=True)  # futures style
    summary = import_archives([src], tmp_path / "out")
    btc = pd.read_parquet(tmp_path / "out" / "BTCUSDT.parquet")
    assert len(btc) == 60 * 24 and btc["open_time"].is_monotonic_increasing and btc["open_time"].is_unique
    assert list(btc.columns) == [
        "symbol",
        "open_time",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trades",
        "taker_buy_base_volume",
        "taker_buy_quote_volume",
    ]
    eth = pd.read_parquet(tmp_path / "out" / "ETHUSDT.parquet")
    assert eth["open_time"].iloc[0] == ms("2025-01-01")
    assert summary.repairs == {
        "checksums_verified": 5,
        "duplicate_rows_removed": 24,
        "open_time_us_to_ms": 48,
        "header_rows_skipped": 1,
    }
    assert summary.symbols["SOLUSDT"]["rows"] == 24 and summary.rows == 60 * 24 + 48 + 24


def test_conflicting_overlap_keeps_the_monthly_archive_and_counts_it(tmp_path: Path) -> None:
    rows = kline_rows(ms("2024-03-01"), 48)
    make_archive(tmp_path, "XRPUSDT-1h-2024-03.zip", rows)
    early = rows.iloc[:24].copy()
    early["close"] += 1.0
    make_archive(tmp_path, "XRPUSDT-1h-2024-03-01.zip", early)
    summary = import_archives([tmp_path], tmp_path / "out")
    out = pd.read_parquet(tmp_path / "out" / "XRPUSDT.parquet")
    assert summary.repairs["conflicting_duplicates_replaced"] == 24
    # The monthly archive is the later revision and wins over the daily one.
    np.testing.assert_allclose(out["close"], rows["close"])


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("bad_checksum", r"BTCUSDT-1h-2024-01.zip: sha256 .* does not match .*CHECKSUM.*download it again"),
        ("no_symbol", r"klines.csv: cannot tell the symbol from the name .* pass --symbol"),
        ("not_zip", r"BTCUSDT-1h-2024-01.zip: not a readable zip archive"),
        ("wrong_columns", r"3 columns in the first line, expected the 12 kline columns"),
        ("empty", r"no .zip or .csv kline archives found"),
    ],
)
def test_import_errors_name_the_file(tmp_path: Path, setup: str, match: str) -> None:
    name = "BTCUSDT-1h-2024-01.zip"
    if setup == "bad_checksum":
        make_archive(tmp_path, name, kline_rows(ms("2024-01-01"), 5))
        (tmp_path / f"{name}.CHECKSUM").write_text("0" * 64 + f"  {name}\n")
    elif setup == "no_symbol":
        kline_rows(ms("2024-01-01"), 5).to_csv(tmp_path / "klines.csv", index=False, header=False)
    elif setup == "not_zip":
        (tmp_path / name).write_text("not a zip")
    elif setup == "wrong_columns":
        (tmp_path / "BTCUSDT-1h-2024-01.csv").write_text("1,2,3\n")
    with pytest.raises(InputError, match=match):
        import_archives([tmp_path], tmp_path / "out")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def archive_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "site"
    folder = root / "data" / "spot" / "monthly" / "klines" / "BTCUSDT" / "1h"
    folder.mkdir(parents=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_resumes_and_reports_missing(archive_server: tuple[str, Path], tmp_path: Path) -> None:
    base, folder = archive_server
    make_archive(folder, "BTCUSDT-1h-2024-01.zip", kline_rows(ms("2024-01-01"), 31 * 24))
    make_archive(folder, "BTCUSDT-1h-2024-02.zip", kline_rows(ms("2024-02-01"), 29 * 24))
    keep = tmp_path / "archives"
    first = download(["BTCUSDT"], "1h", "2024-01", "2024-03", keep, base_url=base, retries=0)
    assert [p.name for p in first.fetched] == ["BTCUSDT-1h-2024-01.zip", "BTCUSDT-1h-2024-02.zip"]
    assert first.missing == ["BTCUSDT-1h-2024-03.zip"]
    again = download(["BTCUSDT"], "1h", "2024-01", "2024-02", keep, base_url=base, retries=0)
    assert again.fetched == [] and len(again.skipped_verified) == 2  # resumed: nothing fetched twice
    result = CliRunner().invoke(
        app,
        [
            "data",
            "download",
            str(tmp_path / "out"),
            "--symbols",
            "BTCUSDT",
            "--start",
            "2024-01",
            "--end",
            "2024-02",
            "--base-url",
            base,
            "--archives",
            str(keep),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(tmp_path / "out" / "BTCUSDT.parquet")) == 60 * 24


def test_download_offline_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"could not fetch .* after 2 attempts .* check the network"):
        download(
            ["BTCUSDT"], "1h", "2024-01", "2024-01", tmp_path, base_url="http://127.0.0.1:9", retries=1, backoff=0.01
        )
    with pytest.raises(InputError, match="must look like 2024-01"):
        months("2024", "2024-02")
    assert months("2023-11", "2024-02") == ["2023-11", "2023-12", "2024-01", "2024-02"]


class _Flaky(http.server.BaseHTTPRequestHandler):
    """503 with Retry-After on a path's first request, then the file (cut short once on /cut); 403 on /forbidden."""

    hits: ClassVar[list[tuple[str, float]]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).hits.append((self.path, time.monotonic()))
        if self.path.startswith("/forbidden"):
            self.send_response(403)
            self.end_headers()
            return
        if sum(p == self.path for p, _ in self.hits) == 1:
            self.send_response(503)
            self.send_header("Retry-After", "1")
            self.end_headers()
            return
        body = b"x" * 3_000_000  # several stream chunks
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.startswith("/cut") and sum(p == self.path for p, _ in self.hits) == 2:
            self.wfile.write(body[:1_000_000])  # the body breaks off once, after the 503
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_download_honours_retry_after_and_does_not_retry_a_refusal(tmp_path: Path) -> None:
    _Flaky.hits.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert fetch(f"{base}/busy.zip", tmp_path / "busy.zip", retries=2, backoff=0.01)
        assert (tmp_path / "busy.zip").stat().st_size == 3_000_000
        assert not list(tmp_path.glob(".*.tmp"))  # streamed through a temporary file, renamed
        (first, t0), (second, t1) = _Flaky.hits
        assert first == second == "/busy.zip" and t1 - t0 >= 0.9  # the server's Retry-After, not 0.01 s
        _Flaky.hits.clear()
        with pytest.raises(DownloadError, match=r"forbidden.zip answered HTTP 403 \(not retried\)"):
            fetch(f"{base}/forbidden.zip", tmp_path / "f.zip", retries=3, backoff=0.01)
        assert len(_Flaky.hits) == 1 and not (tmp_path / "f.zip").exists()
        # A body that breaks off mid-stream is fetched again, whole.
        _Flaky.hits.clear()
        assert fetch(f"{base}/cut.zip", tmp_path / "cut.zip", retries=2, backoff=0.01)
        assert (tmp_path / "cut.zip").stat().st_size == 3_000_000 and len(_Flaky.hits) == 3
    finally:
        server.shutdown()
        server.server_close()


def test_check_counts_every_problem(tmp_path: Path) -> None:
    rows = kline_rows(ms("2024-01-01"), 40)[["open_time", "open", "high", "low", "close", "volume"]]
    rows.insert(0, "symbol", "BADUSDT")
    rows.loc[3, "close"] = np.nan
    rows.loc[4, "low"] = 0.0
    rows.loc[5, ["high", "low"]] = [1.0, 2.0]
    rows.loc[6, "volume"] = -1.0
    rows.loc[7, "volume"] = 0.0
    dup_equal = rows.iloc[[10]]
    dup_diff = rows.iloc[[11]].assign(volume=999.0)
    bad = pd.concat([rows.drop(index=[20, 21]), dup_equal, dup_diff, rows.iloc[[1]]])  # gap, dups, unsorted
    bad.to_parquet(tmp_path / "BAD.parquet")
    good = kline_rows(ms("2024-01-01"), 30)[["open_time", "open", "high", "low", "close", "volume"]]
    good.insert(0, "symbol", "GOODUSDT")
    good.to_parquet(tmp_path / "GOOD.parquet")
    stats = check_dir(tmp_path)
    b = stats["BADUSDT"]
    assert (b["nonfinite_price"], b["nonpositive_price"], b["inconsistent_ohlc"], b["negative_volume"]) == (1, 1, 1, 1)
    assert (b["zero_volume"], b["gaps"], b["missing_candles"], b["interval_ms"]) == (1, 1, 2, HOUR)
    assert (b["duplicate_rows"], b["conflicting_duplicates"]) == (2, 1)
    assert b["unsorted_steps"] == 2  # 39 -> 10 and 11 -> 1
    assert stats["GOODUSDT"]["bad"] == 0 and stats["GOODUSDT"]["gaps"] == 0
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 2 and "rows training would refuse in BADUSDT" in result.output
    (tmp_path / "BAD.parquet").unlink()
    assert CliRunner().invoke(app, ["data", "check", str(tmp_path)]).exit_code == 0
