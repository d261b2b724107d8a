"""Bench: does any process's memory grow with the symbol count? (issue: scale out Levels 1-2.)

    .venv/bin/python scripts/bench_scale.py [--base 20] [--rows 2000] [--factors 1,2,4,8] [--markdown]

For each factor F it writes F x base synthetic symbols (rstack's generator, 1-hour candles), trains
them with small forests at a fixed batch size (so the Level-0 columns grow with F, and the meta
table, later rows x Level-0 columns, about F squared) and the Spark driver heap at 1g (--driver-memory), and prints
per size: wall per stage, the meta table's size, the share of Level 0 spent scoring (every model
scores every symbol's later rows, so it grows as symbols squared), and the peak RSS of the rstack
driver process, the Spark host actor, the Spark driver JVM and the largest Ray Java worker (an executor
or RayDP's app master). The target: the
driver's and the host's peak flat (within 20 %) from 1x to 8x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import GIB, ROOT, RssSampler, fail, print_table, synth  # noqa: E402

BATCH_SIZE = 5
SMALL = {
    "RSTACK_LEVEL0__NUM_TREES": "10",
    "RSTACK_LEVEL0__MAX_DEPTH": "5",
    "RSTACK_LEVEL1__NUM_TREES": "10",
    "RSTACK_LEVEL1__MAX_DEPTH": "5",
    "RSTACK_EVAL__BASELINES": "",  # the stack's own path only: baselines would add their own scaling
}


def role(proc: psutil.Process, root: int) -> str:
    """Which part of rstack a process is, from its command line (Ray sets actor process titles)."""
    if proc.pid == root:
        return "driver"
    cmd = " ".join(proc.cmdline())
    if "java" in proc.name() or cmd.startswith("java") or "/java " in cmd:
        try:
            parent = " ".join(proc.parent().cmdline()) if proc.parent() else ""
        except psutil.Error:
            parent = ""
        if "SparkHost" in parent:
            return "spark_driver"
        # RayDP's executors and its app master are Ray Java workers, alike on the command line.
        return f"java_worker[{proc.pid}]"
    if "SparkHost" in cmd:
        return "host"
    return "other"


class RoleSampler(RssSampler):
    """Peak RSS per role of a process tree (bench.py's sampler, its samples sorted by role)."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.peaks: dict[str, int] = {}

    def _sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                name, rss = role(proc, self.root.pid), proc.memory_info().rss
            except psutil.Error:
                continue
            self.peaks[name] = max(self.peaks.get(name, 0), rss)


def run_size(symbols: int, rows: int, work: Path, batch_size: int = BATCH_SIZE, heap: str = "1g") -> dict[str, Any]:
    data = synth(work / f"data-{symbols}", symbols, rows)
    models = work / f"models-{symbols}"
    temp = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    env = {**os.environ, **SMALL, "RAY_AUTH_MODE": "disabled", "TMPDIR": str(temp)}
    env["RSTACK_RUNTIME__DRIVER_MEMORY"] = heap
    env["RSTACK_RUNTIME__RAY_TEMP_DIR"] = str(temp)
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "rstack.cli", "train", str(data), "--models", str(models)]
    cmd += ["--batch-size", str(batch_size), "--executors", "1", "--executor-cores", "2"]
    log = temp / "output.log"
    with log.open("wb") as sink:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        with RoleSampler(proc.pid) as sampler:
            code = proc.wait()
        wall = time.perf_counter() - t0
    if code != 0:
        fail(f"rstack train on {symbols} symbols exited with {code}", log.read_text())
    manifest = json.loads((models / "latest" / "manifest.json").read_text())
    subprocess.run(["rm", "-rf", str(temp)], check=False)
    t = manifest["timings"]
    later = sum(v for k, v in manifest["rows_by_segment"].items() if k != "l0_train")
    batches = manifest["level0"]
    l0_cols = len(batches)
    width = l0_cols + len(manifest["config"]["level1"]["context"])
    fit = sum(b["fit_seconds"] for b in batches)
    busy = sum(b["seconds"] for b in batches)
    executors = [v for k, v in sampler.peaks.items() if k.startswith("java_worker")]
    return {
        "symbols": symbols,
        "wall": wall,
        "stages": {k: t[k] for k in ("startup", "features", "level0", "level1_level2")},
        "meta_rows": later,
        "meta_cols": width,
        "meta_mib": later * width * 8 / 2**20,
        "scoring_share": (busy - fit) / busy if busy else 0.0,
        "rss_gib": {
            "driver": sampler.peaks.get("driver", 0) / GIB,
            "host": sampler.peaks.get("host", 0) / GIB,
            "spark_driver": sampler.peaks.get("spark_driver", 0) / GIB,
            "executor_max": max(executors, default=0) / GIB,
        },
        "executors": len(executors),
        "meta_split": {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("level1_level2.")},
        "roc_auc": manifest["metrics"]["level2"]["roc_auc"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=int, default=20, help="symbols at 1x")
    ap.add_argument("--rows", type=int, default=2000, help="candles per symbol")
    ap.add_argument("--factors", default="1,2,4,8")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="symbols per Level-0 model")
    ap.add_argument("--driver-memory", default="1g", help="the Spark driver's heap (Spark needs at least 512m)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    factors = [int(f) for f in args.factors.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        runs = [run_size(args.base * f, args.rows, Path(tmp), args.batch_size, args.driver_memory) for f in factors]
    headers = ["symbols", "wall s", "startup", "features", "level0", "l1+l2+eval", "scoring %", "meta rows"]
    headers += ["meta cols", "meta MiB", "driver GiB", "host GiB", "spark drv GiB", "Ray Java worker GiB", "ROC-AUC"]
    rows = [
        [
            str(r["symbols"]),
            f"{r['wall']:.1f}",
            *[f"{r['stages'][k]:.1f}" for k in ("startup", "features", "level0", "level1_level2")],
            f"{100 * r['scoring_share']:.0f}",
            str(r["meta_rows"]),
            str(r["meta_cols"]),
            f"{r['meta_mib']:.1f}",
            *[f"{r['rss_gib'][k]:.2f}" for k in ("driver", "host", "spark_driver", "executor_max")],
            f"{r['roc_auc']:.4f}",
        ]
        for r in runs
    ]
    title = f"batch size {args.batch_size}, {args.rows} 1h candles per symbol, small forests"
    title += f", Spark driver heap {args.driver_memory}"
    print_table(title, headers, rows, args.markdown)
    for r in runs:
        split = ", ".join(f"{k} {v:.1f}" for k, v in r["meta_split"].items())
        print(f"{r['symbols']} symbols, Levels 1-2 and evaluation by step (s): {split or 'not recorded'}")
    first, last = runs[0]["rss_gib"], runs[-1]["rss_gib"]
    for k in ("driver", "host", "spark_driver"):
        print(f"{k}: peak RSS {last[k]:.2f} GiB at {factors[-1]}x vs {first[k]:.2f} at {factors[0]}x "
              f"({last[k] / first[k]:.2f}x)" if first[k] else f"{k}: not seen")  # fmt: skip


if __name__ == "__main__":
    main()
