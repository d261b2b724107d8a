"""Fetch monthly kline archives and their checksums from Binance's public data site, then import.

Resumable: an archive already on disk whose checksum verifies is not fetched again. Transient
failures are retried with exponential backoff; a missing month (HTTP 404) is reported, not retried.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rstack.data.binance import verify_checksum
from rstack.data.rules import check_symbol
from rstack.errors import InputError, RstackError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://data.binance.vision"
MARKETS = {"spot": "data/spot/monthly/klines", "futures-um": "data/futures/um/monthly/klines"}


class DownloadError(RstackError):
    """The archive site could not be reached or kept failing."""


@dataclass
class DownloadResult:
    fetched: list[Path] = field(default_factory=list)
    skipped_verified: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def months(start: str, end: str) -> list[str]:
    try:
        y0, m0 = (int(x) for x in start.split("-"))
        y1, m1 = (int(x) for x in end.split("-"))
    except ValueError:
        raise InputError(f"months must look like 2024-01; got --start {start!r} --end {end!r}") from None
    if not (1 <= m0 <= 12 and 1 <= m1 <= 12) or (y0, m0) > (y1, m1):
        raise InputError(f"--start {start} must be a month (YYYY-MM) not after --end {end}")
    out = []
    y, m = y0, m0
    while (y, m) <= (y1, m1):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _fetch(url: str, dest: Path, retries: int, backoff: float) -> bool:
    """Write ``url`` to ``dest``; False on 404; raises DownloadError after the last retry."""
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                tmp = dest.with_name(dest.name + ".part")
                tmp.write_bytes(resp.read())
                tmp.replace(dest)
                return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            cause: Exception = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            cause = exc
        if attempt == retries:
            raise DownloadError(
                f"could not fetch {url} after {retries + 1} attempts ({cause}); check the network or --base-url"
            ) from cause
        log.warning("%s: retry %d of %d after %s", url, attempt + 1, retries, cause)
        time.sleep(backoff * 2**attempt)
    return False  # unreachable; keeps type checkers content


def download(
    symbols: list[str],
    interval: str,
    start: str,
    end: str,
    dest: Path,
    market: str = "spot",
    base_url: str = DEFAULT_BASE_URL,
    retries: int = 3,
    backoff: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> DownloadResult:
    if market not in MARKETS:
        raise InputError(f"--market {market!r} is not one of {', '.join(MARKETS)}")
    for sym in symbols:
        check_symbol(sym, "--symbols")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    result = DownloadResult()
    for sym in symbols:
        for month in months(start, end):
            name = f"{sym}-{interval}-{month}.zip"
            url = f"{base_url.rstrip('/')}/{MARKETS[market]}/{sym}/{interval}/{name}"
            archive, check = dest / name, dest / f"{name}.CHECKSUM"
            if archive.exists() and check.exists():
                try:
                    if verify_checksum(archive):
                        result.skipped_verified.append(archive)
                        continue
                except InputError:
                    log.warning("%s: checksum mismatch, fetching again", archive)
            if not _fetch(url + ".CHECKSUM", check, retries, backoff):
                result.missing.append(name)
                continue
            if not _fetch(url, archive, retries, backoff):
                check.unlink(missing_ok=True)
                result.missing.append(name)
                continue
            verify_checksum(archive)  # raises, naming the file, on a mismatch
            result.fetched.append(archive)
            if progress:
                progress(name)
    return result
