"""A real two-node Ray cluster on this machine (head + worker as separate `ray start` processes),
a training submitted through the job API with `rstack submit`, and the evidence from Ray's state API
that the Level-0 work ran on both nodes."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rstack.cli.app import app
from rstack.cluster.devcluster import LocalCluster
from tests.conftest import ROOT, light_env

pytestmark = pytest.mark.slow

JOB_ENV = light_env(
    **{
        # Two 1-core executors spread over the two nodes; the dashboard's state API is what the test reads.
        "runtime.dashboard": True,
        "runtime.num_executors": 2,
        "runtime.executor_cores": 1,
        "runtime.placement_strategy": "SPREAD",
        # Where the work runs is the question here, not how well: small forests keep the test short.
        "level0.num_trees": 20,
        "level0.max_depth": 5,
        "level1.num_trees": 10,
    }
)


def state(cluster: LocalCluster, kind: str, **filters: str) -> list[dict[str, Any]]:
    """Ray's state API over HTTP (the same endpoint `ray list actors/tasks` uses)."""
    query = {"limit": "10000", "detail": "true"}
    for key, value in filters.items():
        query.setdefault("filter_keys", key)
        query["filter_predicates"] = "="
        query["filter_values"] = value
    url = f"{cluster.dashboard_url}/api/v0/{kind}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)["data"]["result"]["result"]


def test_submitted_training_runs_level0_on_two_nodes(synth_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    with LocalCluster(head_cpus=1, worker_cpus=(2,)) as cluster:
        nodes = state(cluster, "nodes")
        assert len(nodes) == 2 and {n["resources_total"]["CPU"] for n in nodes} == {1.0, 2.0}
        args = ["submit", str(synth_dir), "--models", f"file://{models}", "--address", cluster.dashboard_url]
        args += ["--working-dir", str(ROOT), "--run-id", "multinode-1", "--timeout", "900"]
        for key, value in JOB_ENV.items():
            args += ["--env", f"{key}={value}"]
        t0 = time.time()
        # `rstack submit` waits, following the job's log (Ray's log tail), while this thread watches
        # the head's Prometheus endpoint for rstack's progress gauges.
        outcome: dict[str, Any] = {}
        follower = threading.Thread(target=lambda: outcome.update(result=CliRunner().invoke(app, args)))
        follower.start()
        from ray.job_submission import JobSubmissionClient

        jobs = JobSubmissionClient(cluster.dashboard_url)
        seen: dict[str, float] = {}
        while follower.is_alive():
            for line in cluster.metrics().splitlines():
                for gauge in ("rstack_level0_batches_done", "rstack_level0_batches_total"):
                    if line.startswith(f"ray_{gauge}{{") and 'run="multinode-1"' in line:
                        seen[gauge] = max(seen.get(gauge, 0.0), float(line.rsplit(" ", 1)[1]))
            follower.join(timeout=1)
        result = outcome["result"]
        assert result.exit_code == 0, result.output[-3000:]
        assert "job rstack-train-multinode-1 submitted" in result.output
        assert "job rstack-train-multinode-1 SUCCEEDED" in result.output
        # The followed log carries the job's own progress lines, in order.
        assert result.output.index("level0: batch_000 done") < result.output.index("saved to")
        status = str(jobs.get_job_status("rstack-train-multinode-1")).split(".")[-1]
        logs = jobs.get_job_logs("rstack-train-multinode-1")
        assert status == "SUCCEEDED", logs[-3000:]
        assert seen == {"rstack_level0_batches_done": 2.0, "rstack_level0_batches_total": 2.0}, seen
        # `ray job logs` carries rstack's progress lines and the two URLs.
        assert "level0: batch_001 done" in logs and "Spark UI http://127.0.0.1:" in logs
        assert "Ray dashboard http://" in logs

        jobs = [j for j in state(cluster, "jobs") if j.get("submission_id") == "rstack-train-multinode-1"]
        assert jobs and jobs[0]["status"] == "SUCCEEDED"

        manifest = json.loads((models / "multinode-1" / "manifest.json").read_text())
        assert (models / "latest").resolve() == models / "multinode-1"
        assert set(manifest["metrics"]) >= {"level2", "level1", "batch_000", "batch_001"}

        # The Level-0 fits are Spark jobs on the executors, which RayDP runs as Ray actors: both
        # executors ran tasks, and they sat on different nodes.
        ran = {e["id"] for e in manifest["runtime"]["executors"] if e["total_tasks"] > 0}
        assert len(ran) == 2, manifest["runtime"]["executors"]
        executors = [a for a in state(cluster, "actors") if "RayDPExecutor" in a["class_name"]]
        node_of = {a["name"].removeprefix("raydp-executor-"): a["node_id"] for a in executors}
        assert len({node_of[e] for e in ran}) == 2, node_of

        # The named per-batch tasks the dashboard shows, all finished.
        tasks = [t for t in state(cluster, "tasks") if t["name"].startswith("level0-batch_")]
        assert {t["name"] for t in tasks if t["state"] == "FINISHED"} == {"level0-batch_000", "level0-batch_001"}
        first = min(t["start_time_ms"] for t in tasks) / 1000
        print(f"submit -> first Level-0 task start: {first - t0:.1f}s")  # noqa: T201 - shown with -s
    assert not cluster.processes()
