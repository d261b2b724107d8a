"""Fetch monthly kline archives and their checksums from Binance's public data site, then import.

Resumable: an archive already on disk whose checksum verifies is not fetched again. Files stream to
disk; transient failures are retried by urllib3's Retry (exponential backoff, Retry-After honoured);
a missing month (HTTP 404) is reported, a refusal (403) is final.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
from urllib3.util import Retry

from rstack._io import atomic_path
from rstack.data.binance import verify_checksum
from rstack.data.rules import check_symbol
from rstack.errors import InputError, RstackError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://data.binance.vision"
RETRY_STATUSES = (429, 500, 502, 503, 504)
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


def _pool(retries: int, backoff: float) -> urllib3.PoolManager:
    """Connections with urllib3's Retry: connection errors and 429/5xx retried with exponential
    backoff, a server's Retry-After honoured; 403 and other client errors are final. Redirects
    are followed apart from that budget."""
    retry = Retry(
        total=None,
        connect=retries,
        read=retries,
        status=retries,
        other=retries,
        redirect=10,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,  # the last 5xx comes back as a response, reported below with its status
    )
    return urllib3.PoolManager(retries=retry, timeout=urllib3.Timeout(connect=15, read=60))


class _BrokenBody(Exception):
    """The connection broke while the body streamed, after urllib3's Retry had handed the response over."""


def fetch(
    url: str, dest: Path, retries: int = 3, backoff: float = 1.0, pool: urllib3.PoolManager | None = None
) -> bool:
    """Stream ``url`` to ``dest`` (atomically); False on 404; DownloadError on anything else that fails."""
    http = pool or _pool(retries, backoff)
    # urllib3's Retry covers getting a response, not a body that breaks mid-stream: that is retried here.
    for attempt in range(retries + 1):
        try:
            return _fetch_once(http, url, dest, retries)
        except _BrokenBody as exc:
            if attempt == retries:
                raise DownloadError(
                    f"the connection broke while fetching {url} ({exc}) {retries + 1} times; run the same "
                    "command again (verified archives are kept, only the rest is fetched)"
                ) from exc
            log.warning("%s: retry %d of %d after %s", url, attempt + 1, retries, exc)
            time.sleep(backoff * 2**attempt)
    return False  # unreachable: the loop returns or raises


def _fetch_once(http: urllib3.PoolManager, url: str, dest: Path, retries: int) -> bool:
    try:
        resp = http.request("GET", url, preload_content=False)
    except urllib3.exceptions.MaxRetryError as exc:
        raise DownloadError(
            f"could not fetch {url} after {retries + 1} attempts ({exc.reason}); check the network or --base-url"
        ) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise DownloadError(f"could not fetch {url} ({exc}); check the network or --base-url") from exc
    try:
        if resp.status == 404:
            return False
        if resp.status != 200:
            tried = f"after {retries + 1} attempts" if resp.status in RETRY_STATUSES else "not retried"
            raise DownloadError(
                f"{url} answered HTTP {resp.status} ({tried}); check --base-url, --market and the symbol, "
                "or try again later"
            )
        try:
            with atomic_path(dest) as tmp, tmp.open("wb") as out:
                for chunk in resp.stream(1 << 20):
                    out.write(chunk)
        except urllib3.exceptions.HTTPError as exc:
            raise _BrokenBody(str(exc)) from exc
        return True
    finally:
        resp.drain_conn()
        resp.release_conn()


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
    pool = _pool(retries, backoff)
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
            if not fetch(url + ".CHECKSUM", check, retries, backoff, pool):
                result.missing.append(name)
                continue
            if not fetch(url, archive, retries, backoff, pool):
                check.unlink(missing_ok=True)
                result.missing.append(name)
                continue
            verify_checksum(archive)  # raises, naming the file, on a mismatch
            result.fetched.append(archive)
            if progress:
                progress(name)
    return result
