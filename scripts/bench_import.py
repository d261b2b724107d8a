"""Benchmark: `rstack data import` throughput and peak memory on generated 1m archives.

    .venv/bin/python scripts/bench_import.py --symbols 10 --repeats 3

Builds one month (44,640 one-minute candles) of spot-format zip archives per symbol, with
checksums, then imports them in a fresh child process per repeat and prints the median time,
rows per second and that process's peak RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

ROWS = 44_640  # 31 days of 1m candles
CHILD = """
import resource, sys, time
from pathlib import Path
from rstack.data.binance import import_archives
t = time.time()
s = import_archives([Path(sys.argv[1])], Path(sys.argv[2]))
print(time.time() - t, s.rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def build(folder: Path, symbols: int) -> None:
    rng = np.random.default_rng(0)
    start = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
    t = start + 60_000 * np.arange(ROWS, dtype=np.int64)
    for i in range(symbols):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, ROWS)))
        frame = pd.DataFrame(
            {
                "open_time": t,
                "open": close,
                "high": close * 1.001,
                "low": close * 0.999,
                "close": close,
                "volume": rng.random(ROWS),
                "close_time": t + 59_999,
                "quote_volume": rng.random(ROWS),
                "trades": rng.integers(1, 500, ROWS),
                "taker_buy_base_volume": rng.random(ROWS),
                "taker_buy_quote_volume": rng.random(ROWS),
                "ignore": 0,
            }
        )
        name = f"S{i:03d}USDT-1m-2024-01.zip"
        with zipfile.ZipFile(folder / name, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(name.replace(".zip", ".csv"), frame.to_csv(index=False, header=False))
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        (folder / f"{name}.CHECKSUM").write_text(f"{digest}  {name}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rsi-") as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        build(src, args.symbols)
        size = sum(p.stat().st_size for p in src.glob("*.zip"))
        runs = []
        for i in range(args.repeats):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(src), str(Path(tmp, f"out{i}"))],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            runs.append((float(out[0]), int(out[1]), int(out[2])))
        secs = statistics.median(r[0] for r in runs)
        rows = runs[0][1]
        print(f"{args.symbols} archives, {size / 1e6:.1f} MB zipped, {rows} rows")
        print(
            f"import: median {secs:.2f}s of {[round(r[0], 2) for r in runs]} -> {rows / secs:,.0f} rows/s; "
            f"peak RSS {statistics.median(r[2] for r in runs) / 1024:.0f} MB (median of {args.repeats})"
        )


if __name__ == "__main__":
    main()
