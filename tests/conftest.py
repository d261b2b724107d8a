"""One real Ray and one Spark-on-Ray application for the whole test session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import rstack
from rstack.cluster.runtime import Runtime
from rstack.config import ENV_PREFIX, Config, load_config
from rstack.data.synth import write_synthetic
from rstack.training.driver import TrainResult

ROOT = Path(__file__).resolve().parent.parent
LIGHT_TREES, LIGHT_DEPTH = 40, 8
# Two shuffle partitions rather than laptop.yaml's four: on the suite's 9,000-row sets every Spark
# stage is per-task overhead (a cold training run 97 s -> 69 s, a warm one 40-48 -> 35), and with two
# the stages still run on more than one partition.
LIGHT_SHUFFLE_PARTITIONS = 2
# laptop.yaml made light for a 2-core CI machine, as dotted config keys: the one definition behind
# light_config (the Python API), light_yaml (a --config file) and light_env (a spawned `rstack`).
LIGHT: dict[str, Any] = {
    "runtime.dashboard": False,
    "runtime.executor_memory": "1g",
    "runtime.driver_memory": "1g",
    "runtime.shuffle_partitions": LIGHT_SHUFFLE_PARTITIONS,
    "level0.batch_size": 3,
    # Smaller Level-0 forests than the product's 100 x depth 10: the tests check the machinery, and
    # Level 0's fits are most of every training run the suite does.
    "level0.num_trees": LIGHT_TREES,
    "level0.max_depth": LIGHT_DEPTH,
    # The single-model baselines have their own end-to-end test; elsewhere they only cost time.
    "eval.baselines": [],
}


def light_config(**overrides: Any) -> Config:
    return load_config(ROOT / "configs" / "laptop.yaml", {**LIGHT, **overrides}, environ={})


def light_yaml(**overrides: Any) -> str:
    """LIGHT (and ``overrides``) as a YAML config file's text, nested by section."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in {**LIGHT, **overrides}.items():
        section, _, field = key.partition(".")
        nested.setdefault(section, {})[field] = value
    return yaml.safe_dump(nested)


def light_env(**overrides: Any) -> dict[str, str]:
    """LIGHT (and ``overrides``) as ``RSTACK_<SECTION>__<FIELD>`` variables; lists comma-separated."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)

    return {f"{ENV_PREFIX}{k.replace('.', '__').upper()}": text(v) for k, v in {**LIGHT, **overrides}.items()}


def set_host_env(spark: Any, state: dict, name: str, value: str) -> None:
    """Shipped to the Spark host: sets ``name`` in its process only (a restarted host starts without it),
    e.g. ``RSTACK_CRASH_AT`` to make the host kill itself at a named point."""
    os.environ[name] = value


@pytest.fixture(scope="session")
def runtime() -> Iterator[Runtime]:
    import ray

    # Test modules are not importable inside Ray workers; ship their functions by value.
    for name, module in list(sys.modules.items()):
        if name.startswith("tests.") or name.startswith("test_"):
            ray.cloudpickle.register_pickle_by_value(module)
    # A short path: Ray's Unix sockets live under it and must stay under 107 characters.
    temp = tempfile.mkdtemp(prefix="rst-", dir="/tmp")
    cfg = light_config(**{"runtime.ray_temp_dir": temp})
    rt = Runtime(cfg.runtime, max_concurrency=6, app_name="rstack-tests")
    try:
        rt.start()
        yield rt
    finally:
        rt.stop()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def on_host(runtime: Runtime) -> Callable[..., Any]:
    """Run ``fn(spark, state, *args)`` on the shared Spark host and return its result."""

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        return runtime.get(runtime.call(fn, *args))

    return call


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, symbols=6, rows=1500, seed=11)
    return out


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def trained(synth_dir: Path, models: Path, runtime: Runtime) -> TrainResult:
    """One real training run on the synthetic set, shared by the tests that need a saved run; made
    through the Python API, which leaves the caller's runtime running."""
    result = rstack.train(synth_dir, models, light_config(), runtime=runtime)
    assert runtime.host is not None and runtime.executors(), "rstack.train stopped a runtime it does not own"
    return result


REGISTERED = "rstack-test-stack"


@dataclass(frozen=True)
class CliRun:
    output: str
    run_dir: Path


@pytest.fixture(scope="session")
def cli_trained(synth_dir: Path, runtime: Runtime, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """The fixture's run again, through ``rstack train`` on the command line: every baseline on (the
    fixture turns them off), logged to the test MLflow server and registered as ``REGISTERED``.
    Shared by the CLI and the MLflow tests: each training run costs the suite half a minute."""
    from typer.testing import CliRunner

    from rstack.cli.app import app

    folder = tmp_path_factory.mktemp("cli-run")
    cfg, models = folder / "cfg.yaml", folder / "models"
    # The fixture's config (so that the metrics can be compared), with the default baselines plus the
    # opt-in single forest, so that all three are covered. Its runtime keys do not apply here: the
    # command joins this process's Ray and reuses the session's Spark host (hence `runtime`).
    cfg.write_text(light_yaml(**{"eval.baselines": ["single_rf", "gbt", "har_logit"]}))
    args = ["train", str(synth_dir), "--models", str(models), "--config", str(cfg)]
    result = CliRunner().invoke(app, [*args, "--mlflow", mlflow_uri, "--register", REGISTERED])
    assert result.exit_code == 0, result.output
    return CliRun(result.output, (models / "latest").resolve())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 (SQLite backend, local artifact store), stopped after the session."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += [
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    cmd += ["--workers", "1"]
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
