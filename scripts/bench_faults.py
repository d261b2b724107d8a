"""What faults cost: per-batch checkpoint overhead, time lost to one killed Spark executor, and a
killed-then-resumed run's wall time against an uninterrupted one.

    .venv/bin/python scripts/bench_faults.py [--data DIR] [--batch-size 2]

Without --data it writes a synthetic set (8 symbols x 4000 hourly rows, 4 batches). The clean and
executor-kill runs share one warm Ray + Spark on Ray in this process; the uninterrupted and the
killed + resumed runs are separate `rstack train` processes, start-up included, as a user sees them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rstack.cluster.runtime import Runtime  # noqa: E402
from rstack.config import load_config  # noqa: E402
from rstack.data.synth import write_synthetic  # noqa: E402
from rstack.training.driver import train  # noqa: E402

LIGHT = {"runtime.dashboard": False, "runtime.executor_memory": "1g", "runtime.driver_memory": "1g"}


def _executor_pid() -> int:
    from ray._private import state

    alive = [a for a in state.actors().values() if "RayDPExecutor" in a["ActorClassName"] and a["State"] == "ALIVE"]
    return int(alive[0]["Pid"])


def in_process(data: Path, work: Path, batch_size: int) -> dict[str, float]:
    cfg = load_config(ROOT / "configs" / "laptop.yaml", {**LIGHT, "level0.batch_size": batch_size}, environ={})
    temp = tempfile.mkdtemp(prefix="rbf-", dir="/tmp")
    runtime = Runtime(cfg.runtime.__class__(**{**cfg.runtime.__dict__, "ray_temp_dir": temp}))
    out: dict[str, float] = {}
    try:
        runtime.start()
        train(data, work / "warmup", cfg, runtime)  # JIT and caches warm, like the runs that follow
        clean = train(data, work / "clean", cfg, runtime).manifest
        out["clean total (s)"] = clean["timings"]["total"]
        out["clean level0 (s)"] = clean["timings"]["level0"]
        ckpt = [b["checkpoint_seconds"] for b in clean["level0"]]
        out["checkpoint per batch, median (s)"] = sorted(ckpt)[len(ckpt) // 2]
        out["checkpoint, share of level0 (%)"] = 100 * sum(ckpt) / clean["timings"]["level0"]

        result: dict[str, object] = {}

        def run() -> None:
            result["m"] = train(data, work / "killed", cfg, runtime).manifest

        thread = threading.Thread(target=run)
        thread.start()
        log = None
        while log is None or "level0: batch_000 (1 of" not in log.read_text():
            time.sleep(0.2)
            found = list((work / "killed").glob("_tmp-*/logs/rstack.log"))
            log = found[0] if found else None
        time.sleep(3)
        os.kill(_executor_pid(), signal.SIGKILL)
        thread.join()
        killed = result["m"]
        out["executor-kill total (s)"] = killed["timings"]["total"]  # type: ignore[index]
        out["time lost to one executor kill (s)"] = out["executor-kill total (s)"] - out["clean total (s)"]
    finally:
        runtime.stop()
        shutil.rmtree(temp, ignore_errors=True)
    return out


def _cli(data: Path, models: Path, batch_size: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **{f"RSTACK_{k.upper().replace('.', '__')}": str(v) for k, v in LIGHT.items()}}
    env["RSTACK_LEVEL0__BATCH_SIZE"] = str(batch_size)
    cmd = [sys.executable, "-m", "rstack.cli", "train", str(data), "--models", str(models), *extra]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def separate_processes(data: Path, work: Path, batch_size: int) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.time()
    assert _cli(data, work / "whole", batch_size).wait() == 0
    out["uninterrupted run, wall (s)"] = time.time() - t0

    models = work / "resume"
    t0 = time.time()
    proc = _cli(data, models, batch_size)
    while True:
        logs = list(models.glob("_tmp-*/logs/rstack.log"))
        if logs and "2 of 4 finished" in logs[0].read_text():
            break
        time.sleep(0.2)
    proc.kill()  # SIGKILL: no clean-up, as a crash or OOM kill
    proc.wait()
    out["killed run, wall until kill (s)"] = time.time() - t0
    run_id = logs[0].parent.parent.name.removeprefix("_tmp-")
    time.sleep(5)  # the killed driver's local Ray reaps itself
    t0 = time.time()
    assert _cli(data, models, batch_size, "--resume", run_id).wait() == 0
    out["resumed run, wall (s)"] = time.time() - t0
    out["resumed / uninterrupted"] = out["resumed run, wall (s)"] / out["uninterrupted run, wall (s)"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rstack-bench-faults-"))
    try:
        data = args.data
        if data is None:
            data = work / "data"
            write_synthetic(data, symbols=8, rows=4000, seed=5)
        figures = in_process(data, work, args.batch_size)
        figures.update(separate_processes(data, work, args.batch_size))
        width = max(len(k) for k in figures)
        print(f"\nfaults on {data} (batch size {args.batch_size}), 2 cores:")
        for key, value in figures.items():
            print(f"  {key:<{width}}  {value:8.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
