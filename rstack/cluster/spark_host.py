"""The Spark host: one Ray actor that holds the run's SparkSession and runs the functions shipped to it.

RayDP allows one Spark application per Ray namespace, so every Spark job goes through this actor's
threads (FAIR scheduler pools); :class:`rstack.cluster.runtime.Runtime` creates and stops it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from rstack.config import RuntimeConfig

log = logging.getLogger(__name__)

# JDK 17 closes these packages; Spark's and Arrow's reflection needs them open in every JVM,
# RayDP's app master included (without it ray.data.from_spark fails).
JAVA_OPENS = (
    " ".join(
        f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
        for pkg in (
            "java.lang",
            "java.lang.invoke",
            "java.lang.reflect",
            "java.io",
            "java.net",
            "java.nio",
            "java.util",
            "java.util.concurrent",
            "java.util.concurrent.atomic",
            "sun.nio.ch",
            "sun.nio.cs",
            "sun.security.action",
            "sun.util.calendar",
        )
    )
    + " -Dio.netty.tryReflectionSetAccessible=true"
)


def spark_configs(cfg: RuntimeConfig) -> dict[str, str]:
    bind = (
        {}
        if cfg.spark_bind_address == "auto"
        else {"spark.driver.host": cfg.spark_bind_address, "spark.driver.bindAddress": cfg.spark_bind_address}
    )
    return {
        **bind,
        "spark.driver.extraJavaOptions": JAVA_OPENS,
        "spark.executor.extraJavaOptions": JAVA_OPENS,
        "spark.ray.raydp_app_master.extraJavaOptions": JAVA_OPENS,
        "spark.driver.memory": cfg.driver_memory,
        "spark.scheduler.mode": "FAIR",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.default.parallelism": str(cfg.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
    }


class SparkHost:
    """Holds the SparkSession; made a Ray actor by :class:`Runtime`. Callers ship functions to it."""

    def __init__(self, app_name: str, cfg: RuntimeConfig, python: str | None = None) -> None:
        import raydp

        # Set here rather than through a runtime_env: an actor with its own runtime_env cannot take
        # one of the Python workers Ray starts ahead of time, and waits for a new one instead.
        os.environ["PYSPARK_PYTHON"] = python or sys.executable
        if cfg.spark_bind_address != "auto":
            # Spark's web UI binds to SPARK_LOCAL_IP, not to spark.driver.bindAddress.
            os.environ["SPARK_LOCAL_IP"] = cfg.spark_bind_address
        self.spark = raydp.init_spark(
            app_name=app_name,
            num_executors=cfg.num_executors,
            executor_cores=cfg.executor_cores,
            executor_memory=cfg.executor_memory,
            fault_tolerant_mode=True,
            placement_group_strategy=cfg.placement_strategy,
            configs=spark_configs(cfg),
        )
        self.spark.sparkContext.setLogLevel("WARN")
        self.state: dict[str, Any] = {}

    def info(self) -> dict[str, Any]:
        sc = self.spark.sparkContext
        conf = sc.getConf()
        return {
            # What the running application really uses: a reused host keeps its own settings.
            "spark_conf": {
                k: conf.get(k)
                for k in (
                    "spark.executor.instances",
                    "spark.executor.cores",
                    "spark.executor.memory",
                    "spark.driver.memory",
                    "spark.sql.shuffle.partitions",
                    "spark.scheduler.mode",
                )
            },
            "spark_version": self.spark.version,
            "app_id": sc.applicationId,
            "ui_url": sc.uiWebUrl,
            "java_version": sc._jvm.java.lang.System.getProperty("java.version"),
            "host_pid": os.getpid(),
        }

    def wait_for_executors(self, count: int, timeout: float) -> int:
        """Block until ``count`` executors have registered (or ``timeout``); returns how many did.

        RayDP's ``init_spark`` returns before its executor actors' JVMs are up, so without this the
        first Spark job would silently absorb their start-up."""
        tracker = self.spark.sparkContext._jsc.sc().statusTracker()
        deadline = time.time() + timeout
        while True:
            # The driver is listed among the executors.
            n = len(tracker.getExecutorInfos()) - 1
            if n >= count or time.time() > deadline:
                return n
            time.sleep(0.05)

    def executors(self) -> list[dict[str, Any]]:
        """Spark's own view of its executors (id, host, tasks run so far), from the UI's REST API."""
        import json
        import urllib.request

        sc = self.spark.sparkContext
        if not sc.uiWebUrl:
            return []
        url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/allexecutors"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our own driver's UI
                rows = json.load(resp)
        except OSError:
            return []
        return [
            {"id": r["id"], "host_port": r["hostPort"], "total_tasks": r["totalTasks"], "active": r["isActive"]}
            for r in rows
            if r["id"] != "driver"
        ]

    def run(
        self, fn: Callable[..., Any], *args: Any, pool: str | None = None, group: str | None = None, **kwargs: Any
    ) -> Any:
        """Call ``fn(spark, state, *args, **kwargs)`` on this host; ``pool`` names a FAIR pool,
        ``group`` a Spark job group that :meth:`cancel` can stop."""
        sc = self.spark.sparkContext
        sc.setLocalProperty("spark.scheduler.pool", pool)
        if group is None:
            sc.setLocalProperty("spark.jobGroup.id", None)
        else:
            sc.setJobGroup(group, fn.__name__, interruptOnCancel=True)
        try:
            return fn(self.spark, self.state, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised as it is, or as text Ray can carry
            sendable = portable(exc)
            if sendable is exc:
                raise
            raise sendable from None

    def cancel(self, group: str) -> None:
        """Cancel the running Spark jobs of ``group``; the tasks that submitted them then fail fast."""
        self.spark.sparkContext.cancelJobGroup(group)

    def stop(self) -> None:
        import raydp

        self.state.clear()
        raydp.stop_spark()


class SparkJobError(RuntimeError):
    """A Spark job failed in the host; its message is the JVM error's gist (retryable, not an RstackError)."""


def spark_error_summary(text: str) -> str:
    """The first line of a JVM error (with the reason Spark puts on the next line, when it does), led by
    the lost executor when Spark names one, or by what a lost shuffle output means when it does not."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    at = next((i for i, ln in enumerate(lines) if not ln.startswith(("An error occurred", "Traceback"))), None)
    first = lines[at].lstrip(": ") if at is not None else ""
    if at is not None and first.endswith("reason:") and at + 1 < len(lines):
        first = f"{first} {lines[at + 1]}"
    lost = re.search(r"ExecutorLostFailure \(executor (\S+?)\)? exited", text) or re.search(
        r"[Ee]xecutor (\S+?) (?:lost|exited)", text
    )
    if lost:
        head = f"executor {lost.group(1)} was lost: "
    elif re.search(r"FetchFailed|Missing an output location for shuffle", text):
        # The driver only sees the shuffle files gone; the executor's own log says why it died.
        head = (
            "an executor was lost mid-stage (most often out of memory: give runtime.executor_memory more, or "
            "make the models smaller, e.g. level0.batch_size or feature_subset_strategy): "
        )
    else:
        head = ""
    return head + first[:400]


def portable(exc: Exception) -> Exception:
    """``exc`` if Ray can send it to the caller, else a SparkJobError naming its cause. A Py4J error
    holds the JVM gateway, which does not pickle: Ray would report only "isn't serializable"."""
    import ray

    try:
        ray.cloudpickle.dumps(exc)
    except Exception:  # noqa: BLE001 - any pickling failure means: send the text instead
        return SparkJobError(f"{type(exc).__name__}: {spark_error_summary(str(exc))}")
    return exc
