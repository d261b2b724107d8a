"""Benchmark: batch predict throughput and streaming latency of a saved run.

    .venv/bin/python scripts/bench_predict.py --run models/latest --data ../shared/data/binance-5m

Prints the median of --repeats batch predictions (rows per second, after one warm-up) and the
median latency from a file landing in the watch folder to its predictions being written, over
--files files fed one at a time into a running stream.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from rstack.cluster.runtime import Runtime
from rstack.config import load_config
from rstack.data.discover import discover
from rstack.serving.predict import predict_dir
from rstack.serving.stream import stream_dir

logging.getLogger("ray").setLevel(logging.ERROR)


def _stop_stream(spark: Any, state: dict[str, Any]) -> None:
    query = state.get("stream_query")
    if query is not None:
        query.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--symbol", default=None, help="symbol streamed (default: the first file's)")
    args = ap.parse_args()

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "laptop.yaml", {"runtime.dashboard": False})
    work = Path(tempfile.mkdtemp(prefix="rsb-", dir="/tmp"))
    dataset = discover(args.data)
    with Runtime(cfg.runtime, max_concurrency=4) as rt:
        print(f"start-up {rt.startup_seconds:.1f}s")
        times, rows = [], 0
        for i in range(args.repeats + 1):
            t = time.time()
            summary = rt.get(rt.call(predict_dir, str(args.run), dataset, str(work / "p.parquet"), None))
            if i:  # the first pass warms the JVM and is not counted
                times.append(time.time() - t)
            rows = summary["rows_written"] + summary["warmup_rows"] + summary["invalid_rows"]
        med = statistics.median(times)
        print(
            f"batch predict: {rows} input rows, {summary['rows_written']} scored; "
            f"median {med:.1f}s of {[round(x, 1) for x in times]} -> {rows / med:,.0f} rows/s"
        )

        first = sorted(args.data.glob("*.parquet"))[0]
        frame = pd.read_parquet(first)
        if args.symbol:
            frame = pd.concat(pd.read_parquet(p) for p in args.data.glob("*.parquet"))
            frame = frame[frame["symbol"] == args.symbol]
        frame = frame.sort_values("open_time").reset_index(drop=True)
        watch, out, ckpt = work / "in", work / "out", work / "ckpt"
        watch.mkdir()
        chunk = 12
        history = frame.iloc[:200]
        history.to_parquet(work / "h.parquet")
        os.replace(work / "h.parquet", watch / "f-000.parquet")
        ref = rt.call(stream_dir, str(args.run), str(watch), str(out), str(ckpt), False, 1, 0.2, None, name="stream")
        while not (out / "batch-000000.parquet").exists():
            time.sleep(0.05)
        latencies = []
        for i in range(1, args.files + 1):
            part = frame.iloc[200 + (i - 1) * chunk : 200 + i * chunk]
            tmp = work / f".f-{i:03d}.parquet"
            part.to_parquet(tmp, index=False)
            landed = time.time()
            os.replace(tmp, watch / f"f-{i:03d}.parquet")
            target = out / f"batch-{i:06d}.parquet"
            while not target.exists():
                time.sleep(0.01)
            latencies.append(time.time() - landed)
        rt.get(rt.call(_stop_stream, name="stop-stream"))
        rt.get(ref)
        print(
            f"stream: {args.files} files of {chunk} candles, landing -> predictions written: "
            f"median {statistics.median(latencies):.2f}s, min {min(latencies):.2f}s, max {max(latencies):.2f}s"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
