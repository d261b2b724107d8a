"""A real multi-node Ray cluster on one machine: a head and worker nodes as separate ``ray start``
processes, each with its own CPUs. For trying ``rstack submit`` without a cloud, for the multi-node
test and for the cluster benchmark.

Everything lives under one temp folder, and stopping kills exactly the processes started from it
(never ``ray stop``, which would take every Ray on the machine with it, the caller's included).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rstack.errors import RuntimeStartError

log = logging.getLogger("rstack")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """``with LocalCluster(head_cpus=1, worker_cpus=[2]) as c: c.dashboard_url ...``"""

    def __init__(self, head_cpus: int = 1, worker_cpus: tuple[int, ...] = (2,), temp_root: str = "/tmp") -> None:
        self.head_cpus = head_cpus
        self.worker_cpus = worker_cpus
        # Short: Ray's Unix socket paths under it must stay below 107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="rsc-", dir=temp_root)
        self.port = free_port()
        self.dashboard_port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        # A local test cluster needs no token (Ray 2.60 turns token auth on when ~/.ray/auth_token exists).
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        # Job entrypoints run `python`: the one that has Ray, as on a cluster image.
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    def _ray(self, *args: str) -> None:
        ray_cli = str(Path(sys.executable).with_name("ray"))
        out = subprocess.run([ray_cli, "start", *args], env=self.env, capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            raise RuntimeStartError(f"`ray start {' '.join(args)}` failed: {out.stderr[-2000:] or out.stdout[-2000:]}")

    @staticmethod
    def _agent_ports() -> list[str]:
        # Each node's dashboard agent listens on a fixed default port (52365); a second node on this
        # machine, or any other Ray running here, would collide, and jobs then find "no agent".
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"]

    def start(self) -> LocalCluster:
        try:
            self._ray(
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={self.port}",
                f"--num-cpus={self.head_cpus}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--metrics-export-port={self.metrics_port}",
                f"--temp-dir={self.temp_dir}",
                "--disable-usage-stats",
                *self._agent_ports(),
            )
            for cpus in self.worker_cpus:
                self._ray(
                    f"--address={self.address}",
                    "--node-ip-address=127.0.0.1",
                    f"--num-cpus={cpus}",
                    f"--metrics-export-port={free_port()}",
                    *self._agent_ports(),
                )
            self.wait_for_nodes(1 + len(self.worker_cpus))
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        import json
        import urllib.request

        deadline = time.time() + timeout
        alive = 0
        while time.time() < deadline:
            try:
                url = f"{self.dashboard_url}/api/v0/nodes?limit=100"
                with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our own local dashboard
                    nodes = json.load(resp)["data"]["result"]["result"]
                alive = sum(1 for node in nodes if node["state"] == "ALIVE")
                if alive >= n:
                    return
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(1)
        raise RuntimeStartError(f"only {alive} of {n} Ray nodes came up within {timeout:.0f}s; see {self.temp_dir}")

    def metrics(self) -> str:
        """The head node's Prometheus text (Ray's and applications' metrics, e.g. rstack's progress)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as resp:  # noqa: S310
            return resp.read().decode()

    def processes(self) -> list[Any]:
        import psutil

        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(self.temp_dir in part for part in proc.info["cmdline"] or []):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def stop(self) -> None:
        import psutil

        for _ in range(3):
            procs = self.processes()
            if not procs:
                break
            for proc in procs:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(procs, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
