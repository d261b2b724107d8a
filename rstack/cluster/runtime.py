"""The one owner of the Ray + Spark-on-Ray lifecycle.

Ray is joined (``address`` / ``RAY_ADDRESS``), reused (already initialized by the caller), or
started locally. Spark runs inside one named Ray actor, the *Spark host*: RayDP allows one Spark
application per Ray namespace, so every Spark job of a run goes through that actor's threads
(FAIR scheduler pools), and Level-0 batches are concurrent actor tasks. What this object started it
stops, in reverse order; what it found running it leaves alone.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from rstack.cluster.spark_host import SparkHost
from rstack.config import RuntimeConfig
from rstack.errors import RstackError, RuntimeStartError

log = logging.getLogger(__name__)

HOST_NAME = "rstack-spark-host"
EXECUTOR_WAIT_SECONDS = 120.0


def _actor_alive(ray: Any, name: str) -> bool:
    try:
        ray.get_actor(name)
    except ValueError:
        return False
    return True


class Runtime:
    """Idempotent get-or-create of Ray and the Spark host; a context manager."""

    def __init__(
        self, cfg: RuntimeConfig, max_concurrency: int = 4, app_name: str = "rstack", task_prefix: str = ""
    ) -> None:
        self.cfg = cfg
        self.max_concurrency = max_concurrency
        self.app_name = app_name
        # Shown before every host task's name in the dashboard (a tuning trial's name), so runs sharing
        # the host can be told apart there.
        self.task_prefix = task_prefix
        self.host: Any = None
        self.info: dict[str, Any] = {}
        self.startup_seconds = 0.0
        self._owns_ray = False
        self._owns_host = False

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Runtime:
        if self.host is not None:
            return self
        import ray

        t0 = time.time()
        try:
            self._start_ray(ray)
            self._start_host(ray)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, RuntimeStartError) or not isinstance(exc, Exception):
                raise
            raise RuntimeStartError(
                f"could not start Spark on Ray ({type(exc).__name__}: {exc}); check that Java 17+ is on "
                "PATH (`java -version`), that runtime.executor_memory fits this machine, and the Ray "
                f"logs under {self.info.get('ray_session_dir', 'the Ray session folder')}"
            ) from exc
        self.startup_seconds = time.time() - t0
        return self

    def _start_ray(self, ray: Any) -> None:
        if ray.is_initialized():
            log.info("using the Ray instance this process already joined")
        else:
            address = self.cfg.address or os.environ.get("RAY_ADDRESS")
            common = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": False}
            if address:
                log.info("joining the Ray cluster at %s", address)
                try:
                    ctx = ray.init(address=address, **common)
                except ConnectionError as exc:
                    raise RuntimeStartError(
                        f"no Ray cluster answers at {address!r}; start one with `ray start --head` or "
                        "drop --address / RAY_ADDRESS to run a local one"
                    ) from exc
            else:
                ctx = ray.init(
                    num_cpus=self.cfg.num_cpus or max(4, self.cfg.num_executors * self.cfg.executor_cores + 2),
                    include_dashboard=self.cfg.dashboard,
                    dashboard_host=self.cfg.dashboard_host,
                    dashboard_port=self.cfg.dashboard_port,
                    _temp_dir=self.cfg.ray_temp_dir,
                    **common,
                )
            self._owns_ray = True
            # A driver joining a cluster (e.g. a Ray job) may not learn the dashboard's address from
            # Ray; `rstack submit` passes the one it submitted to.
            url = ctx.dashboard_url or os.environ.get("RSTACK_DASHBOARD_URL") or None
            if url and "://" not in url:
                url = f"http://{url}"
            self.info["dashboard_url"] = url
        try:
            from ray._private import worker

            node = worker._global_node
            self.info["ray_session_dir"] = node.get_session_dir_path() if node is not None else None
        except Exception:  # noqa: BLE001 - only a log location; absent on client connections
            self.info["ray_session_dir"] = None

    def _start_host(self, ray: Any) -> None:
        try:
            self.host = ray.get_actor(HOST_NAME)
            log.info("reusing the running Spark host %s", HOST_NAME)
        except ValueError:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            actor_cls = ray.remote(SparkHost)
            # num_cpus=0: the host only drives Spark; a CPU held here could starve an executor.
            # Pinned (softly) to this driver's node, the head under `ray job submit`: a zero-CPU actor
            # would otherwise land on any node, and the Spark driver's memory with it.
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
            self.host = actor_cls.options(
                name=HOST_NAME,
                num_cpus=0,
                scheduling_strategy=here,
                max_concurrency=self.max_concurrency,
            ).remote(self.app_name, self.cfg, sys.executable)
            self._owns_host = True
        self.info.update(ray.get(self.host.info.remote()))
        want = self.cfg.num_executors
        got = ray.get(self.host.wait_for_executors.remote(want, EXECUTOR_WAIT_SECONDS))
        if got < want:
            # On a cluster an autoscaler may still be adding nodes: go on, Spark uses executors as they come.
            log.warning(
                "runtime: %d of %d Spark executors registered after %.0fs; continuing, the rest join when "
                "Ray has room for them (check the cluster's free CPUs and memory)",
                got,
                want,
                EXECUTOR_WAIT_SECONDS,
            )

    def restart_host(self, timeout: float = 120.0) -> None:
        """Replace a Spark host that died (its process killed, its node lost) with a fresh one.

        Everything the old application held is gone: cached tables, executors, RayDP's actors.
        RayDP's app master and Spark master are owned by the host's process and die with it, but
        their names are freed asynchronously, so wait for that before ``init_spark`` reuses them.
        """
        import ray

        if self.host is not None:
            try:
                ray.kill(self.host, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - it is usually dead already
                log.debug("killing the old Spark host: %s", exc)
        self.host = None
        deadline = time.time() + timeout
        names = (HOST_NAME, "RAY_APP_MASTER", f"{self.app_name}_SPARK_MASTER")
        while True:
            alive = [n for n in names if _actor_alive(ray, n)]
            if not alive:
                break
            if time.time() > deadline:
                raise RuntimeStartError(
                    f"the old Spark application's actors {alive} were still alive {timeout:.0f}s after its host "
                    "died; stop them (`ray stop` on a local cluster) and run again with --resume"
                )
            time.sleep(0.5)
        t0 = time.time()
        self._start_host(ray)
        log.info("runtime: new Spark host ready in %.1fs; Spark UI %s", time.time() - t0, self.info.get("ui_url"))

    def call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        num_returns: int = 1,
        pool: str | None = None,
        group: str | None = None,
    ) -> Any:
        """Submit ``fn(spark, state, *args)`` to the Spark host as a Ray task; returns its ObjectRef(s)."""
        label = name or fn.__name__
        method = self.host.run.options(
            name=f"{self.task_prefix}:{label}" if self.task_prefix else label, num_returns=num_returns
        )
        return method.remote(fn, *args, pool=pool, group=group)

    def executors(self) -> list[dict[str, Any]]:
        """The Spark executors and the tasks each has run (empty if the Spark UI is off)."""
        import ray

        return ray.get(self.host.executors.remote(), timeout=60)

    def cancel(self, group: str, timeout: float = 30.0) -> None:
        """Best effort: stop ``group``'s Spark jobs (on Ctrl-C or a failed run)."""
        import ray

        if self.host is None:
            return
        try:
            ray.get(self.host.cancel.remote(group), timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the host may be gone; nothing left to cancel then
            log.debug("could not cancel Spark job group %s: %s", group, exc)

    @staticmethod
    def get(refs: Any, timeout: float | None = None) -> Any:
        """``ray.get`` that re-raises rstack's own errors from the host as themselves, so the CLI
        can print their message and pick the exit code instead of showing a remote traceback."""
        import ray
        from ray.exceptions import RayTaskError

        try:
            return ray.get(refs, timeout=timeout)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RstackError):
                raise cause from exc
            raise

    def stop(self) -> None:
        import ray

        if self.host is not None and self._owns_host:
            try:
                ray.get(self.host.stop.remote(), timeout=60)
            except Exception as exc:  # noqa: BLE001 - stopping must go on to Ray
                log.warning("Spark did not stop cleanly: %s", exc)
            try:
                ray.kill(self.host)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not kill the Spark host actor: %s", exc)
        self.host = None
        self._owns_host = False
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False
