"""The same training as a local `rstack train` and as a job submitted to a two-node Ray cluster on
this machine (head + worker, separate `ray start` processes), plus job submit -> first Level-0 task.

    .venv/bin/python scripts/bench_cluster.py [--data DIR] [--repeats 1]

Both use 2 Spark executors x 1 core (the cluster spreads them over its two nodes). Without --data it
writes a synthetic set (6 symbols x 3000 hourly rows, batch size 3).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rstack.cluster.devcluster import LocalCluster  # noqa: E402
from rstack.data.synth import write_synthetic  # noqa: E402

SETTINGS = {
    "RSTACK_RUNTIME__NUM_EXECUTORS": "2",
    "RSTACK_RUNTIME__EXECUTOR_CORES": "1",
    "RSTACK_RUNTIME__EXECUTOR_MEMORY": "1g",
    "RSTACK_RUNTIME__DRIVER_MEMORY": "1g",
    "RSTACK_LEVEL0__BATCH_SIZE": "3",
}


def local_run(data: Path, models: Path, temp: str) -> float:
    env = {**os.environ, **SETTINGS, "RSTACK_RUNTIME__DASHBOARD": "false", "RSTACK_RUNTIME__RAY_TEMP_DIR": temp}
    env.pop("RAY_ADDRESS", None)
    t0 = time.time()
    cmd = [sys.executable, "-m", "rstack.cli", "train", str(data), "--models", str(models)]
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
    return time.time() - t0


def tasks(cluster: LocalCluster) -> list[dict]:
    url = f"{cluster.dashboard_url}/api/v0/tasks?limit=10000&detail=true"
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - our own local dashboard
        return json.load(resp)["data"]["result"]["result"]


def submitted_run(data: Path, models: Path, run_id: str) -> tuple[float, float, float]:
    """(cluster start-up, job wall from submit, submit -> first Level-0 task start) in seconds."""
    t0 = time.time()
    with LocalCluster(head_cpus=1, worker_cpus=(2,)) as cluster:
        startup = time.time() - t0
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        cmd = [sys.executable, "-m", "rstack.cli", "submit", str(data), "--models", str(models)]
        cmd += ["--address", cluster.dashboard_url, "--run-id", run_id, "--working-dir", str(ROOT)]
        for key, value in {**SETTINGS, "RSTACK_RUNTIME__PLACEMENT_STRATEGY": "SPREAD"}.items():
            cmd += ["--env", f"{key}={value}"]
        t1 = time.time()
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
        wall = time.time() - t1
        starts = [t["start_time_ms"] / 1000 for t in tasks(cluster) if t["name"].startswith("level0-batch_")]
        return startup, wall, min(starts) - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rstack-bench-cluster-"))
    temp = tempfile.mkdtemp(prefix="rbc-", dir="/tmp")
    try:
        data = args.data
        if data is None:
            data = work / "data"
            write_synthetic(data, symbols=6, rows=3000, seed=3)
        local, startup, wall, latency = [], [], [], []
        for i in range(args.repeats):
            local.append(local_run(data, work / "local", temp))
            s, w, lat = submitted_run(data, work / "cluster", f"bench-{i}")
            startup.append(s)
            wall.append(w)
            latency.append(lat)
        med = statistics.median
        print(f"\n{data}, 2 executors x 1 core, medians of {args.repeats} (2 cores):")
        print(f"  local `rstack train`, wall (incl. Ray + Spark start-up)   {med(local):7.1f} s")
        print(f"  two-node cluster start (`ray start` head + worker)       {med(startup):7.1f} s")
        print(f"  `rstack submit` job, wall from submit to SUCCEEDED       {med(wall):7.1f} s")
        print(f"  job submit -> first Level-0 task start                   {med(latency):7.1f} s")
        print(f"  submitted / local                                        {med(wall) / med(local):7.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
