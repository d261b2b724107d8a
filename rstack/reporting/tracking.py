"""MLflow tracking and registry for rstack runs (the extra ``rstack[mlflow]``; off unless ``tracking.uri``).

A committed run is logged as one MLflow run: the result-relevant config as params, every level's,
Level-0 model's and baseline's metrics by level, metric and segment (``level2_test_roc_auc``,
``level1_l2_fit_roc_auc``, ``level2_validation_roc_auc_mean`` from walk-forward folds), the manifest,
``report.html`` when it exists, and the stack as one pyfunc model (``serving/pyfunc.py``: the
run folder as its artifact, scored by the bundle's own path), optionally registered under a name.
The MLflow run's id is kept in the run folder (``mlflow.json``), so ``rstack evaluate`` adds its
report to the same MLflow run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rstack._io import MANIFEST, load_manifest, write_json_atomic
from rstack.config import TrackingConfig, result_config
from rstack.errors import ConfigError, RstackError

log = logging.getLogger("rstack")

TRACKING_FILE = "mlflow.json"
MLFLOW_INSTALL = "pip install 'rstack[mlflow]'"
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier")
# The manifest's metrics sections and the segment each one names.
SEGMENTS = {"metrics": "test", "metrics_l2_fit": "l2_fit"}


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigError(f"tracking.uri is set, but MLflow is not installed ({exc}); {MLFLOW_INSTALL}") from exc
    return mlflow


def metric_name(model: str, segment: str, metric: str) -> str:
    """``level2_test_roc_auc``; Level-0 batches as ``level0_batch_003_...``, baselines as themselves."""
    prefix = f"level0_{model}" if model.startswith("batch_") else model
    return f"{prefix}_{segment}_{metric}"


def run_metrics(manifest: dict[str, Any]) -> dict[str, float]:
    """Every finite figure of the manifest under its MLflow name (NaN, e.g. a one-class fold, is left out)."""
    out: dict[str, float] = {}
    for section, segment in SEGMENTS.items():
        for model, figures in (manifest.get(section) or {}).items():
            for metric in METRICS:
                value = figures.get(metric)
                if isinstance(value, (int, float)) and value == value:
                    out[metric_name(model, segment, metric)] = float(value)
    wf = manifest.get("walk_forward") or {}
    # "validation" (folds before the final test segment) and "summary" (all folds, final test included).
    for block, segment in (("validation", "validation"), ("summary", "walk_forward")):
        for model, stats in (wf.get(block) or {}).items():
            for key in ("roc_auc_mean", "roc_auc_std", "pr_auc_mean"):
                value = stats.get(key)
                if isinstance(value, (int, float)) and value == value:
                    out[metric_name(model, segment, key)] = float(value)
    return out


def run_params(manifest: dict[str, Any]) -> dict[str, str]:
    """The config that decides the results, flattened to ``section.key`` (MLflow params are text)."""
    params = {}
    for section, values in result_config(manifest["config"]).items():
        for key, value in values.items():
            params[f"{section}.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return params


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative local store made absolute (``file:./mlruns``, ``sqlite:///mlflow.db``), so
    that ``mlflow.json`` names the same store from any working folder."""
    for scheme in ("file:", "sqlite:///"):
        rest = uri[len(scheme) :]
        if uri.startswith(scheme) and not rest.startswith("/"):
            return f"{scheme}{Path(rest).resolve()}" if scheme == "sqlite:///" else Path(rest).resolve().as_uri()
    return uri


def _public(uri: str) -> str:
    """``uri`` without credentials (user:token@), as it is written into files and messages."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


@contextlib.contextmanager
def _tracking(uri: str) -> Iterator[Any]:
    """MLflow pointed at ``uri`` for the block, and back to what it was after (MLflow's URI is
    process-global, and a notebook's own tracking must not change under it)."""
    mlflow = _mlflow()
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets it


def check_tracking(cfg: TrackingConfig) -> None:
    """Before a run starts: MLflow installed and the tracking store answering, or a ConfigError naming the URI."""
    if cfg.uri is None:
        return
    fix = "start the server (e.g. mlflow server --host 127.0.0.1 --port 5000) or unset tracking.uri / --mlflow"
    if cfg.uri.startswith(("http://", "https://")):
        # Asked directly: MLflow's client retries a refused connection with backoff for minutes.
        try:
            with urllib.request.urlopen(f"{cfg.uri.rstrip('/')}/health", timeout=10):
                pass
        except urllib.error.HTTPError:
            pass  # it answers (an auth proxy, a path prefix): the client's request below decides
        except OSError as exc:
            raise ConfigError(f"tracking.uri {_public(cfg.uri)!r} does not answer ({exc}); {fix}") from None
    with _tracking(absolute_uri(cfg.uri)) as mlflow:
        try:
            mlflow.MlflowClient().search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the store is the same error to the user
            raise ConfigError(
                f"tracking.uri {_public(cfg.uri)!r} does not answer ({type(exc).__name__}: {str(exc)[:200]}); {fix}"
            ) from None


def log_run(run_dir: Path, cfg: TrackingConfig) -> dict[str, Any]:
    """Log a committed run (and register it when ``cfg.register``); returns what ``mlflow.json`` records."""
    from rstack.serving.pyfunc import log_stack

    assert cfg.uri is not None
    uri = absolute_uri(cfg.uri)
    manifest = load_manifest(run_dir)
    with _tracking(uri) as mlflow:
        try:
            client = mlflow.MlflowClient()
            found = client.get_experiment_by_name(cfg.experiment)
            experiment = found.experiment_id if found is not None else client.create_experiment(cfg.experiment)
            # Inside a caller's own MLflow run (a notebook, a tuning study), this run is its child.
            nested = mlflow.active_run() is not None
            tags = {"rstack.run_id": manifest["run_id"]}
            with mlflow.start_run(
                experiment_id=experiment, run_name=manifest["run_id"], tags=tags, nested=nested
            ) as run:
                mlflow.log_params(run_params(manifest))
                mlflow.log_metrics(run_metrics(manifest))
                mlflow.log_artifact(str(run_dir / MANIFEST))
                if (run_dir / "report.html").is_file():
                    mlflow.log_artifact(str(run_dir / "report.html"))
                version = log_stack(mlflow, run_dir, cfg.register)
                record = {"tracking_uri": uri, "experiment": cfg.experiment, "run_id": run.info.run_id}
                if version is not None:
                    record["registered"] = {"name": cfg.register, "version": version}
        except RstackError:
            raise
        except Exception as exc:  # noqa: BLE001 - MLflow's own errors, told with what was being done
            raise RstackError(
                f"run {manifest['run_id']} is saved in {run_dir}, but logging it to MLflow at {_public(uri)} "
                f"failed ({type(exc).__name__}: {str(exc)[:300]}); check the server and its artifact store"
            ) from exc
    write_json_atomic(run_dir / TRACKING_FILE, {**record, "tracking_uri": _public(uri)})
    log.info("mlflow: run %s logged as %s at %s", manifest["run_id"], record["run_id"], _public(uri))
    return record


def log_report(run_dir: Path, report: Path, artifact_path: str | None = None) -> str | None:
    """Add ``report`` to the MLflow run ``run_dir`` was logged as (under ``artifact_path``); returns that
    run's id, or None when the training run was not logged. The report is written already, so a
    tracking failure is a warning, not a failed evaluation."""
    path = Path(run_dir) / TRACKING_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    try:
        with _tracking(record["tracking_uri"]) as mlflow:
            mlflow.MlflowClient().log_artifact(record["run_id"], str(report), artifact_path=artifact_path)
    except RstackError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow's own errors
        log.warning(
            "mlflow: %s was not added to run %s at %s (%s: %s)",
            report, record["run_id"], record["tracking_uri"], type(exc).__name__, str(exc)[:300],
        )  # fmt: skip
        return None
    return str(record["run_id"])


def log_study(out: Path, rows: list[dict[str, Any]], cfg: TrackingConfig) -> str:
    """Log an ``rstack tune`` study: one parent run (``trials.csv``, ``best.yaml``, the best score) and
    each trial as its child run (its searched values as params, its fold scores as metrics)."""
    assert cfg.uri is not None
    uri = absolute_uri(cfg.uri)
    fixed = {"trial", "source", "status", "mean_auc", "std_auc", "seconds", "folds", "error"}
    with _tracking(uri) as mlflow:
        try:
            client = mlflow.MlflowClient()
            found = client.get_experiment_by_name(cfg.experiment)
            experiment = found.experiment_id if found is not None else client.create_experiment(cfg.experiment)
            parent = client.create_run(experiment, run_name=f"tune-{out.name}", tags={"rstack.study": str(out)})
            parent_id = parent.info.run_id
            for row in rows:
                tags = {"mlflow.parentRunId": parent_id, "rstack.status": row["status"], "rstack.source": row["source"]}
                if row["error"]:
                    tags["rstack.error"] = row["error"]
                child = client.create_run(experiment, run_name=row["trial"], tags=tags)
                for key, value in row.items():
                    if key in fixed or key.startswith("fold_"):
                        continue
                    client.log_param(child.info.run_id, key, json.dumps(value) if isinstance(value, list) else value)
                for key, value in row.items():
                    if (key in ("mean_auc", "std_auc", "seconds") or key.startswith("fold_")) and value is not None:
                        client.log_metric(child.info.run_id, key, float(value))
                client.set_terminated(child.info.run_id, "FAILED" if row["status"] == "error" else "FINISHED")
            scored = [r["mean_auc"] for r in rows if r["status"] == "complete"]
            if scored:
                client.log_metric(parent_id, "best_mean_auc", max(scored))
            for name in ("trials.csv", "best.yaml"):
                if (out / name).is_file():
                    client.log_artifact(parent_id, str(out / name))
            client.set_terminated(parent_id)
        except Exception as exc:  # noqa: BLE001 - MLflow's own errors, told with what was being done
            raise RstackError(
                f"the study is saved in {out}, but logging it to MLflow at {_public(uri)} failed "
                f"({type(exc).__name__}: {str(exc)[:300]}); check the server and its artifact store"
            ) from exc
    log.info("mlflow: study %s logged as run %s with %d trial runs at %s", out, parent_id, len(rows), _public(uri))
    return str(parent_id)
