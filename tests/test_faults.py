"""Faults on real processes: Level-0 retries, a killed Spark host, a killed executor, a killed
driver and Ctrl-C, resume, run-folder locking and path safety. Nothing here is mocked."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pytest

from rstack.cluster.runtime import Runtime
from rstack.errors import InputError, TrainingError
from rstack.models.level0 import BatchSpec
from rstack.training.driver import TrainResult, train
from rstack.training.runs import RunDir, resolve_run
from rstack.training.scheduler import run_batches
from tests.conftest import ROOT, light_config, light_env, set_host_env

pytestmark = pytest.mark.slow


@pytest.fixture
def rstack_log() -> Iterator[list[str]]:
    """rstack's log lines as they are emitted (the CLI turns propagation off, so caplog can't)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("rstack")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def assert_same_metrics(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want)
    for name in want:
        for key in ("roc_auc", "pr_auc", "log_loss", "brier", "rows"):
            # L2's LBFGS may differ in the last bits between fits (partial sums merge in task
            # completion order); everything upstream of it is bit-identical.
            assert got[name][key] == pytest.approx(want[name][key], abs=1e-7), (name, key)


# -- the retry loop, with real Ray tasks standing in for Level-0 fits ------------------------------


def _fake_fit(batch: BatchSpec, marker_dir: str, fail_times: int, error: str) -> tuple[dict[str, Any], pa.Table]:
    attempts = Path(marker_dir, batch.name)
    with attempts.open("a") as f:
        f.write("x")
    if len(attempts.read_text()) <= fail_times:
        if error == "input":
            raise InputError(f"{batch.name}: bad input, injected")
        raise RuntimeError(f"injected failure of {batch.name}")
    now = time.time()
    meta = {"name": batch.name, "seconds": 0.0, "fit_seconds": 0.0, "started": now, "ended": now}
    return meta, pa.table({"x": [batch.batch_id]})


def _run(tmp_path: Path, fail: dict[int, int], error: str = "runtime", retries: int = 2) -> Any:
    import ray

    remote = ray.remote(_fake_fit).options(num_returns=2, num_cpus=0)
    batches = [BatchSpec(i, (f"S{i}USDT",)) for i in range(3)]
    return run_batches(
        batches,
        lambda b: remote.remote(b, str(tmp_path), fail.get(b.batch_id, 0), error),
        concurrency=2,
        max_retries=retries,
    )


def test_failed_batch_is_retried_and_logged(runtime: Runtime, tmp_path: Path, rstack_log: list[str]) -> None:
    metas, tables = _run(tmp_path, {1: 2})
    assert sorted(metas) == [0, 1, 2] and metas[1]["attempts"] == 3 and metas[0]["attempts"] == 1
    import ray

    assert ray.get(tables[2]).column("x").to_pylist() == [2]
    retries = [ln for ln in rstack_log if "retry" in ln]
    assert retries == [
        "batch 1: retry 1 of 2 after RuntimeError: injected failure of batch_001",
        "batch 1: retry 2 of 2 after RuntimeError: injected failure of batch_001",
    ]


@pytest.mark.parametrize(
    ("fail", "error", "retries", "match", "calls"),
    [
        (
            {2: 9},
            "runtime",
            2,
            r"level0 batch_002 \(S2USDT\) failed 3 times \(level0.max_retries = 2\); "
            r"last cause: RuntimeError: injected failure of batch_002",
            3,
        ),
        ({0: 9}, "runtime", 0, r"level0 batch_000 \(S0USDT\) failed 1 times \(level0.max_retries = 0\)", 1),
        # rstack's own errors would fail again: raised at once, never retried.
        ({1: 9}, "input", 2, r"batch_001: bad input, injected", 1),
    ],
)
def test_retries_end_in_an_error_naming_batch_and_cause(
    runtime: Runtime, tmp_path: Path, fail: dict[int, int], error: str, retries: int, match: str, calls: int
) -> None:
    with pytest.raises((TrainingError, InputError), match=match):
        _run(tmp_path, fail, error, retries)
    (batch_id,) = fail
    assert len(Path(tmp_path, f"batch_{batch_id:03d}").read_text()) == calls


# -- real training runs with a process killed in the middle ----------------------------------------


def _train_in_thread(
    synth_dir: Path, models: Path, runtime: Runtime, **overrides: Any
) -> tuple[threading.Thread, dict]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = train(synth_dir, models, light_config(**overrides), runtime)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def _alive_actor(class_part: str) -> dict[str, Any]:
    from ray._private import state

    found = [a for a in state.actors().values() if class_part in a["ActorClassName"] and a["State"] == "ALIVE"]
    assert found, f"no live {class_part} actor"
    return found[0]


def _java_error(spark: Any, state: dict) -> None:
    spark._jvm.java.lang.Integer.parseInt("not-a-number")


def test_a_jvm_error_reaches_the_retry_line_with_its_cause(on_host: Callable[..., Any]) -> None:
    from ray.exceptions import RayTaskError

    from rstack.cluster.spark_host import SparkJobError
    from rstack.training.scheduler import cause_of

    # A Py4J error holds the JVM gateway and does not pickle; the driver must still learn its cause.
    with pytest.raises(RayTaskError) as info:
        on_host(_java_error)
    assert isinstance(info.value.cause, SparkJobError)
    assert 'NumberFormatException: For input string: "not-a-number"' in cause_of(info.value)
    assert "serializ" not in cause_of(info.value)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "An error occurred while calling o812.fit.\n: org.apache.spark.SparkException: Job aborted due to stage "
            "failure: Task 1 in stage 40.0 failed 4 times, most recent failure: Lost task 1.3 in stage 40.0 (TID 77) "
            "(10.0.0.5 executor 2): ExecutorLostFailure (executor 2 exited caused by one of the running tasks) "
            "Reason: Remote RPC client disassociated.\n\tat org.apache.spark.scheduler.DAGScheduler...",
            "executor 2 was lost: org.apache.spark.SparkException: Job aborted due to stage failure: Task 1",
        ),
        (
            "An error occurred while calling o5.count.\n: java.lang.OutOfMemoryError: Java heap space\n\tat x",
            "java.lang.OutOfMemoryError: Java heap space",
        ),
        (  # an executor killed by its heap: the driver sees only the shuffle output gone, on the next line
            "An error occurred while calling o9.fit.\n: org.apache.spark.SparkException: Job aborted due to stage "
            "failure: ShuffleMapStage 142 (mapPartitions at RandomForest.scala:626) has failed the maximum "
            "allowable number of times: 4. Most recent failure reason:\norg.apache.spark.shuffle."
            "MetadataFetchFailedException: Missing an output location for shuffle 37 partition 0\n\tat x",
            "an executor was lost mid-stage (most often out of memory: give runtime.executor_memory more",
        ),
    ],
)
def test_spark_error_summary_names_the_lost_executor(text: str, want: str) -> None:
    from rstack.cluster.spark_host import spark_error_summary

    summary = spark_error_summary(text)
    assert summary.startswith(want)
    # The reason Spark gives on the line after "Most recent failure reason:" is kept.
    assert "reason:" not in text or summary.endswith("Missing an output location for shuffle 37 partition 0")


def test_spark_host_killed_in_level0_and_again_in_levels_1_2_run_completes_with_clean_metrics(
    trained: TrainResult,
    synth_dir: Path,
    runtime: Runtime,
    on_host: Callable[..., Any],
    tmp_path: Path,
    rstack_log: list[str],
) -> None:
    from rstack.faults import ENV

    old_pid = runtime.info["host_pid"]
    thread, out = _train_in_thread(synth_dir, tmp_path / "models", runtime)
    wait_for(lambda: any("level0: batch_001 (2 of 2) started" in ln for ln in rstack_log), 300, "Level 0 to start")
    time.sleep(2)
    assert not any("level0: batch_00" in ln and " done in " in ln for ln in rstack_log), "fits ended before the kill"
    os.kill(old_pid, signal.SIGKILL)
    # The second host (refitting Level 0) is made to kill itself as Levels 1-2 start, after Level 0.
    wait_for(lambda: any("runtime: new Spark host ready" in ln for ln in rstack_log), 300, "the second host")
    on_host(set_host_env, ENV, "meta.start")
    thread.join(600)
    assert "error" not in out, out.get("error")
    m = out["result"].manifest
    assert runtime.info["host_pid"] != old_pid
    assert any(ln.startswith("batch 0: retry 1 of 2 after the Spark host was lost") for ln in rstack_log)
    assert any(ln.startswith("level1+2: retry 1 of 2 after the Spark host was lost") for ln in rstack_log)
    assert sum("runtime: new Spark host ready" in ln for ln in rstack_log) == 2
    # Level 0 was not refitted after the second loss: its results came from their object refs.
    assert [b["attempts"] for b in m["level0"]] == [2, 2]
    assert_same_metrics(m["metrics"], trained.manifest["metrics"])


def test_killed_executor_mid_level0_run_completes(
    trained: TrainResult, synth_dir: Path, runtime: Runtime, tmp_path: Path, rstack_log: list[str]
) -> None:
    thread, out = _train_in_thread(synth_dir, tmp_path / "models", runtime)
    wait_for(lambda: any("level0: batch_001 (2 of 2) started" in ln for ln in rstack_log), 300, "Level 0 to start")
    time.sleep(2)
    executor = _alive_actor("RayDPExecutor")
    os.kill(executor["Pid"], signal.SIGKILL)
    thread.join(600)
    assert "error" not in out, out.get("error")
    m = out["result"].manifest
    # RayDP restarts the executor actor (a new process); Spark re-runs the lost tasks on it.
    again = _alive_actor("RayDPExecutor")
    assert again["ActorID"] == executor["ActorID"] and again["Pid"] != executor["Pid"]
    assert again["NumRestarts"] >= 1
    assert set(m["metrics"]) == set(trained.manifest["metrics"])
    assert m["rows_by_segment"] == trained.manifest["rows_by_segment"]
    assert all(0.0 <= v["roc_auc"] <= 1.0 for v in m["metrics"].values())


# -- the driver killed, or interrupted, in a separate process --------------------------------------


def _spawn_train(
    synth_dir: Path, models: Path, temp: str, overrides: dict[str, Any] | None = None
) -> subprocess.Popen[bytes]:
    """`rstack train` in a new process, with its own local Ray under ``temp`` and the suite's light
    config (plus ``overrides``, dotted keys) in its environment."""
    light = {"runtime.ray_temp_dir": temp, "level0.concurrency": 1, **(overrides or {})}
    env = {**os.environ, **light_env(**light)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "rstack.cli", "train", str(synth_dir), "--models", str(models)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _log_of(models: Path) -> str:
    logs = list(models.glob("_*-*/logs/rstack.log"))
    return logs[0].read_text() if logs else ""


def _processes_under(temp: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _private_ray_temp(prefix: str) -> Iterator[str]:
    temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    yield temp
    for proc in _processes_under(temp):
        try:
            proc.kill()
        except psutil.Error:
            pass
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_temp() -> Iterator[str]:
    yield from _private_ray_temp("rsf-")


@pytest.fixture
def second_ray_temp() -> Iterator[str]:
    yield from _private_ray_temp("rsg-")


def test_killed_or_interrupted_driver_leaves_a_run_that_resumes_without_refitting(
    trained: TrainResult,
    synth_dir: Path,
    runtime: Runtime,
    tmp_path: Path,
    ray_temp: str,
    second_ray_temp: str,
    rstack_log: list[str],
) -> None:
    # Two `rstack train` processes at once (each with its own local Ray), to share the start-up wait:
    # one gets SIGKILL (a crash, an OOM kill), the other Ctrl-C (SIGINT), both after batch_000 is done.
    killed_models, interrupted_models = tmp_path / "killed", tmp_path / "interrupted"
    killed = _spawn_train(synth_dir, killed_models, ray_temp)
    # The interrupted run is not resumed here, so it can grow small forests: it only has to finish a batch.
    small = {"level0.num_trees": 10, "level0.max_depth": 4}
    interrupted = _spawn_train(synth_dir, interrupted_models, second_ray_temp, small)
    # Every process each driver started (GCS, raylet, agents, workers, JVMs): Ray renames some of
    # them, so they are tracked as descendants rather than found by their command line.
    started: dict[int, list[psutil.Process]] = {}
    try:
        # Each is stopped as soon as its batch_000 is done, whichever gets there first.
        waiting = {killed.pid: (killed, killed_models), interrupted.pid: (interrupted, interrupted_models)}
        deadline = time.time() + 400
        while waiting:
            assert time.time() < deadline, "timed out waiting for batch_000"
            for pid, (proc, models) in list(waiting.items()):
                if "level0: batch_000 done" not in _log_of(models) and proc.poll() is None:
                    continue
                assert proc.poll() is None, "the training process ended before it was stopped"
                started[pid] = psutil.Process(pid).children(recursive=True)
                if proc is killed:
                    proc.kill()
                else:
                    proc.send_signal(signal.SIGINT)
                del waiting[pid]
            time.sleep(0.05)
        assert killed.wait(60) == -signal.SIGKILL
        assert interrupted.wait(120) == 130
    finally:
        killed.kill()
        interrupted.kill()
        for proc in started.get(killed.pid, []):
            try:
                proc.kill()
            except psutil.Error:
                pass

    # Ctrl-C: Ray and Spark were stopped, not orphaned, and the run is kept as failed + resumable.
    assert len(started[interrupted.pid]) > 3
    _, alive = psutil.wait_procs(started[interrupted.pid], timeout=30)
    assert not alive, [p.name() for p in alive]
    (failed,) = interrupted_models.glob("_failed-*")
    assert not list(interrupted_models.glob("_tmp-*")) and not (interrupted_models / "latest").exists()
    assert (failed / "checkpoints" / "level0" / "batch_000.json").is_file()
    assert "interrupted" in _log_of(interrupted_models) and "--resume" in _log_of(interrupted_models)
    run_id = failed.name.removeprefix("_failed-")
    reopened = RunDir(interrupted_models, run_id, resume=True)
    assert reopened.work == interrupted_models / f"_tmp-{run_id}" and reopened.work.is_dir()
    reopened.fail()

    # SIGKILL: the run stays under its unfinished name, never `latest`; --resume completes it.
    (work,) = killed_models.glob("_tmp-*")
    assert "level0: batch_001 done" not in _log_of(killed_models)
    assert not (killed_models / "latest").exists()
    run_id = work.name.removeprefix("_tmp-")
    result = train(synth_dir, killed_models, light_config(), runtime, resume=run_id)
    m = result.manifest
    assert result.run_dir == killed_models / run_id and (killed_models / "latest").resolve() == result.run_dir
    assert m["resumed"] is True
    assert [(b["name"], b["restored"]) for b in m["level0"]] == [("batch_000", True), ("batch_001", False)]
    assert sum(1 for ln in rstack_log if "level0: batch_" in ln and " started" in ln) == 1
    assert_same_metrics(m["metrics"], trained.manifest["metrics"])
    log_text = (result.run_dir / "logs" / "rstack.log").read_text()
    assert "(resumed)" in log_text and "batch_000 restored from its checkpoint" in log_text


# -- run folders: locking, concurrent writers, safe names -------------------------------------------

_HOLD = """
import sys, time
from pathlib import Path
from rstack.training.runs import RunDir
run = RunDir(Path(sys.argv[1]), sys.argv[2], resume=True) if len(sys.argv) > 2 else RunDir(Path(sys.argv[1]))
print(run.run_id, flush=True)
time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)
(run.work / "model.txt").write_text(run.run_id)
run.commit()
"""


def test_a_run_being_written_cannot_be_resumed_by_another_process(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.fail()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path), run.run_id, "30"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == run.run_id
        with pytest.raises(InputError, match=rf"run {run.run_id} is being written by another rstack process \(pid "):
            RunDir(tmp_path, run.run_id, resume=True)
    finally:
        holder.kill()
        holder.wait()
    # The lock died with its process (SIGKILL): the run can be taken over now.
    RunDir(tmp_path, run.run_id, resume=True).fail()


def test_concurrent_runs_in_one_models_folder_never_mix(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    ids = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        ids.append(out.strip())
    assert len(set(ids)) == 6
    for run_id in ids:
        assert (tmp_path / run_id / "model.txt").read_text() == run_id
    assert os.readlink(tmp_path / "latest") in ids
    assert not list(tmp_path.glob("_tmp-*")) and not list(tmp_path.glob(".latest-*"))


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/etc", ".hidden", "a\x00b", ""])
def test_run_ids_cannot_leave_the_models_folder(tmp_path: Path, bad: str) -> None:
    if bad:
        with pytest.raises(InputError, match="is not a run name"):
            resolve_run(tmp_path, bad)
    with pytest.raises(InputError, match="is not a run name"):
        RunDir(tmp_path, bad, resume=True)
    assert list(tmp_path.iterdir()) == []


def test_completed_runs_cannot_be_resumed(trained: TrainResult) -> None:
    with pytest.raises(InputError, match="is complete; nothing to resume"):
        RunDir(trained.run_dir.parent, trained.run_dir.name, resume=True)


def test_resume_refuses_another_config(synth_dir: Path, runtime: Runtime, tmp_path: Path) -> None:
    from rstack.data.discover import discover

    run = RunDir(tmp_path)
    run.write_record(
        {"run_id": run.run_id, "config": light_config().to_dict(), "data": discover(synth_dir).fingerprint()}
    )
    run.fail()
    from rstack.errors import ConfigError

    with pytest.raises(ConfigError, match=r"another config \(label.horizon: 5 -> 7\)"):
        train(synth_dir, tmp_path, light_config(**{"label.horizon": 7}), runtime, resume=run.run_id)
    # Execution-only settings may change between attempts; the check passes them.
    assert (tmp_path / f"_failed-{run.run_id}").is_dir()


def test_spark_ui_listens_on_loopback_only(runtime: Runtime) -> None:
    url = runtime.info["ui_url"]
    assert url.startswith("http://127.0.0.1:"), url
    port = int(url.rsplit(":", 1)[1])
    listening = [c for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]
    addresses = {ipaddress.ip_address(c.laddr.ip) for c in listening}
    # Java listens on an IPv6 socket; ::ffff:127.0.0.1 is IPv4 loopback mapped, not a wildcard.
    assert listening and {getattr(a, "ipv4_mapped", None) or a for a in addresses} == {
        ipaddress.ip_address("127.0.0.1")
    }, listening


def test_manifest_is_json_and_checkpoints_parquet(trained: TrainResult) -> None:
    run = trained.run_dir
    json.loads((run / "manifest.json").read_text())
    kinds = {p.suffix for p in (run / "checkpoints" / "level0").iterdir()}
    assert kinds == {".json", ".parquet"}


def test_a_straggler_never_recreates_a_closed_run(tmp_path: Path) -> None:
    from rstack.training.runs import writing_into

    # A task that starts after its run was closed writes nothing.
    run = RunDir(tmp_path)
    run.write_record({"run_id": run.run_id})
    failed = run.fail()
    with pytest.raises(TrainingError, match=r"was closed .* results are dropped"), writing_into(run.work):
        raise AssertionError("must not start")
    # A task whose run is closed while it writes: what it recreated at the old path is removed.
    second = RunDir(tmp_path)
    second.write_record({"run_id": second.run_id})
    with writing_into(second.work):
        second_failed = second.fail()
        (second.work / "level0" / "batch_000").mkdir(parents=True)  # Spark's save makes its parents
    assert not run.work.exists() and not second.work.exists()
    assert failed.is_dir() and (second_failed / "run.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([failed.name, second_failed.name])


def _long_job(spark: Any, state: dict) -> int:
    return spark.range(0, 10**12, numPartitions=4).selectExpr("sum(id * id % 7)").first()[0]


def test_cancel_stops_a_running_spark_job_group(runtime: Runtime) -> None:
    import ray

    # What Ctrl-C and a failed run rely on: Runtime.cancel reaches the host, and the job dies fast.
    ref = runtime.call(_long_job, name="long-job", group="cancel-me")
    time.sleep(3)
    t0 = time.time()
    runtime.cancel("cancel-me")
    with pytest.raises(ray.exceptions.RayTaskError, match=r"cancel"):
        ray.get(ref, timeout=60)
    assert time.time() - t0 < 30
