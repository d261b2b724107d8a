"""``rstack submit``: run ``rstack train`` on a Ray cluster as a Ray job.

The job ships this repository as its ``working_dir`` (so the driver, the Spark host actor and every
Ray worker of the job import the same rstack), is named ``rstack-train-<run id>``, and writes its
run to a models folder that every node reaches. Paths are as the cluster sees them.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rstack.errors import InputError, RuntimeStartError, TrainingError
from rstack.training.runs import check_run_id, new_run_id

log = logging.getLogger("rstack")

# Never uploaded with the working dir: environments, data, runs, caches.
EXCLUDES = [".venv", ".git", "models", "demo-data", "**/__pycache__", "*.parquet", "*.zip", ".ruff_cache"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class Job:
    run_id: str
    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)


def shared_path(value: str, what: str) -> str:
    """A folder path all nodes can reach: a plain path or ``file://``; object-store URIs are refused
    because Spark ML and the run folder's atomic renames need a file system."""
    if value.startswith("file://"):
        value = value[len("file://") :]
    if "://" in value:
        raise InputError(
            f"{what} {value!r}: only paths on a file system shared by all nodes (NFS, EFS, a PVC) or file:// "
            "are supported; mount the bucket (e.g. s3fs, mountpoint-s3) and pass its path"
        )
    return value


def build_job(
    data_dir: str,
    models: str,
    working_dir: Path,
    config: str | None = None,
    train_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    run_id: str | None = None,
    dashboard_url: str | None = None,
) -> Job:
    run_id = check_run_id(run_id) if run_id else new_run_id()
    data_dir = shared_path(data_dir, "data folder")
    models = shared_path(models, "models folder")
    if not Path(working_dir, "rstack", "__init__.py").is_file():
        raise InputError(f"working dir {working_dir} does not hold the rstack package; run from the repository root")
    cmd = ["python", "-m", "rstack.cli", "train", data_dir, "--models", models, "--run-id", run_id]
    if config:
        cmd += ["--config", config]
    cmd += list(train_args or [])
    return Job(
        run_id=run_id,
        submission_id=f"rstack-train-{run_id}",
        entrypoint=shlex.join(cmd),
        runtime_env={
            "working_dir": str(working_dir),
            "excludes": EXCLUDES,
            "env_vars": {
                "PYTHONUNBUFFERED": "1",
                **({"RSTACK_DASHBOARD_URL": dashboard_url} if dashboard_url else {}),
                **(env or {}),
            },
        },
        metadata={"rstack_run_id": run_id, "models": models},
    )


def client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError) as exc:
        raise RuntimeStartError(
            f"no Ray job server answers at {address!r} ({exc}); give the dashboard address of a running "
            "cluster, e.g. http://127.0.0.1:8265 (`ray start --head` starts one; `ray dashboard cluster.yaml` "
            "forwards a remote one)"
        ) from exc


def submit(address: str, job: Job, attempts: int = 40, backoff: float = 3.0) -> Any:
    """Submit, retrying while the head's job agent is still starting (a fresh cluster answers
    "No available agent to submit job" for its first seconds)."""
    jobs = client(address)
    for attempt in range(1, attempts + 1):
        try:
            jobs.submit_job(
                entrypoint=job.entrypoint,
                submission_id=job.submission_id,
                runtime_env=job.runtime_env,
                metadata=job.metadata,
            )
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or attempt == attempts:
                raise RuntimeStartError(
                    f"the job server at {address} refused {job.submission_id}: {exc}; check `ray status` there"
                ) from exc
            log.info("submit: job agent not ready, retry %d of %d in %.0fs", attempt, attempts - 1, backoff)
            time.sleep(backoff)
    log.info("submitted %s to %s: %s", job.submission_id, address, job.entrypoint)
    log.info("follow it with `ray job logs --address %s -f %s`", address, job.submission_id)
    return jobs


async def _follow(jobs: Any, submission_id: str, shown: list[int]) -> None:
    """Print the job's log as the job server streams it (Ray's own websocket tail, no refetching)."""
    async for chunk in jobs.tail_job_logs(submission_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()
        shown[0] += len(chunk)


def wait(jobs: Any, submission_id: str, timeout: float, echo: bool = True, poll: float = 2.0) -> str:
    """Wait for a terminal state, printing the job's log as it comes (``echo``); returns the state."""
    deadline = time.time() + timeout
    shown = [0]  # characters of the log printed so far
    streaming = echo
    if echo:
        try:
            # The stream ends when the job does; the status below is then (nearly) terminal.
            asyncio.run(asyncio.wait_for(_follow(jobs, submission_id, shown), timeout))
            streaming = False
        except asyncio.TimeoutError:
            streaming = False  # reported below, with the job's state
        except Exception as exc:  # noqa: BLE001 - any failure of the stream: fall back to polling the log
            log.warning("submit: the log stream of %s broke (%s); polling it instead", submission_id, exc)
    while True:
        status = str(jobs.get_job_status(submission_id)).split(".")[-1]
        if streaming:
            logs = jobs.get_job_logs(submission_id)
            sys.stdout.write(logs[shown[0] :])
            sys.stdout.flush()
            shown[0] = max(shown[0], len(logs))
        if status in TERMINAL:
            break
        if time.time() > deadline:
            raise TrainingError(
                f"job {submission_id} still {status} after {timeout:.0f}s; it keeps running on the cluster "
                f"(`ray job stop {submission_id}` stops it)"
            )
        time.sleep(poll)
    if status != "SUCCEEDED":
        info = jobs.get_job_info(submission_id)
        raise TrainingError(
            f"job {submission_id} ended {status}: {info.message}; its log: `ray job logs {submission_id}`"
        )
    return status
