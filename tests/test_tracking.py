"""MLflow tracking and registry against a real tracking server (SQLite backend, local artifact store)
started here: ``rstack train --mlflow --register`` logs and registers the run, ``models:/NAME/1``
predicts what ``rstack predict`` does to 1e-9, and ``rstack evaluate`` adds its report to the run."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rstack.cli.app import app
from rstack.config import TrackingConfig
from rstack.data.discover import discover
from rstack.errors import ConfigError
from rstack.reporting.tracking import check_tracking, metric_name, run_metrics
from rstack.serving.predict import predict_dir
from tests.conftest import LIGHT_TREES, REGISTERED, CliRun, free_port


def _registered_predict(spark: Any, state: dict, uri: str, klines: pd.DataFrame) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.pyfunc.load_model(f"models:/{REGISTERED}/1").predict(klines)


@pytest.mark.slow
def test_train_logs_and_registers_the_stack_and_the_registered_model_predicts_as_rstack_does(
    cli_trained: CliRun, synth_dir: Path, mlflow_uri: str, tmp_path: Path, on_host: Callable[..., Any]
) -> None:
    from mlflow import MlflowClient

    run_dir = cli_trained.run_dir
    manifest = json.loads((run_dir / "manifest.json").read_text())
    record = json.loads((run_dir / "mlflow.json").read_text())
    assert record["registered"] == {"name": REGISTERED, "version": 1}

    client = MlflowClient(mlflow_uri)
    logged = client.get_run(record["run_id"])
    assert logged.info.run_name == manifest["run_id"]
    assert logged.data.params["level0.num_trees"] == str(LIGHT_TREES)
    assert "runtime.dashboard" not in logged.data.params  # how a run executes is not a result parameter
    metrics = logged.data.metrics
    assert metrics["level2_test_roc_auc"] == pytest.approx(manifest["metrics"]["level2"]["roc_auc"], abs=1e-12)
    assert metrics["level1_l2_fit_roc_auc"] == pytest.approx(manifest["metrics_l2_fit"]["level1"]["roc_auc"])
    assert "level0_batch_001_test_brier" in metrics and "baseline_trailing_vol_test_pr_auc" in metrics
    assert metrics["baseline_gbt_test_roc_auc"] == pytest.approx(manifest["metrics"]["baseline_gbt"]["roc_auc"])
    artifacts = {a.path for a in client.list_artifacts(record["run_id"])}
    assert "manifest.json" in artifacts
    version = client.get_model_version(REGISTERED, "1")
    assert version.run_id == record["run_id"]

    # models:/NAME/1, loaded from the registry, against `rstack predict` on the run folder.
    klines = pd.concat(pd.read_parquet(f) for f in sorted(synth_dir.glob("*.parquet")))
    served = on_host(_registered_predict, mlflow_uri, klines)
    on_host(predict_dir, str(run_dir), discover(synth_dir), str(tmp_path / "p.parquet"), None)
    ours = pd.read_parquet(tmp_path / "p.parquet")
    assert len(served) == len(ours)
    pd.testing.assert_frame_equal(served[["symbol", "open_time"]], ours[["symbol", "open_time"]], check_dtype=False)
    for col in ["l0_batch_000", "l0_batch_001", "l1", "l2"]:
        np.testing.assert_allclose(served[col], ours[col], rtol=0, atol=1e-9, err_msg=col)

    # `rstack evaluate` adds report.html to the same MLflow run.
    report = CliRunner().invoke(app, ["evaluate", str(run_dir)])
    assert report.exit_code == 0, report.output
    assert f"report added to run {record['run_id']}" in report.output
    assert "report.html" in {a.path for a in client.list_artifacts(record["run_id"])}


@pytest.mark.slow
def test_an_unreachable_tracking_server_fails_before_training(tmp_path: Path, synth_dir: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=rf"tracking.uri '{dead}' does not answer .*start the server"):
        check_tracking(TrackingConfig(uri=dead))
    t0 = time.time()
    result = CliRunner().invoke(app, ["train", str(synth_dir), "--models", str(tmp_path), "--mlflow", dead])
    assert result.exit_code == 2 and "does not answer" in result.output
    assert not list(tmp_path.iterdir()) and time.time() - t0 < 120  # no run folder: refused before training


def test_metric_names_say_level_metric_and_segment() -> None:
    manifest = {
        "metrics": {"level2": {"roc_auc": 0.7, "pr_auc": float("nan")}, "batch_001": {"brier": 0.2}},
        "metrics_l2_fit": {"level1": {"log_loss": 0.6}},
        "walk_forward": {"validation": {"level2": {"roc_auc_mean": 0.71, "roc_auc_std": 0.01, "pr_auc_mean": None}}},
    }
    assert run_metrics(manifest) == {
        "level2_test_roc_auc": 0.7,
        "level0_batch_001_test_brier": 0.2,
        "level1_l2_fit_log_loss": 0.6,
        "level2_validation_roc_auc_mean": 0.71,
        "level2_validation_roc_auc_std": 0.01,
    }
    assert metric_name("baseline_gbt", "test", "roc_auc") == "baseline_gbt_test_roc_auc"
