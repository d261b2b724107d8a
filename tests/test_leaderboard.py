"""`rstack runs` and `rstack runs show` on real runs, and `rstack evaluate` through the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rstack.cli import app
from rstack.leaderboard import config_diff, list_runs
from rstack.runs import FAILED_PREFIX
from rstack.train import TrainResult
from tests.conftest import light_config

pytestmark = pytest.mark.slow


def test_leaderboard_lists_complete_runs_best_first_then_unfinished(trained: TrainResult, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained.run_dir, models / trained.run_dir.name)
    (models / "latest").symlink_to(trained.run_dir.name)
    (models / f"{FAILED_PREFIX}20260101T000000Z-aaaaaa").mkdir()
    rows = list_runs(models)
    assert [r["state"] for r in rows] == ["complete", "failed"]
    assert rows[0]["level2"] == trained.manifest["metrics"]["level2"]["roc_auc"]
    assert rows[0]["config_diff"] == {"level0.batch_size": 3, "eval.baselines": []}

    out = CliRunner().invoke(app, ["runs", "--models", str(models)])
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if trained.manifest["run_id"] in ln)
    assert line.startswith("*") and f"{trained.manifest['metrics']['level2']['roc_auc']:.4f}" in line
    assert "level0.batch_size=3" in line and "eval.baselines=[]" in line
    assert "rstack train --resume 20260101T000000Z-aaaaaa" in out.output

    shown = CliRunner().invoke(app, ["runs", "show", trained.run_dir.name, "--models", str(models)])
    assert shown.exit_code == 0, shown.output
    assert trained.manifest["cutoffs"]["cutoffs_utc"][2] in shown.output and "baseline_trailing_vol" in shown.output


def test_config_diff_names_only_result_settings() -> None:
    cfg = light_config(**{"label.horizon": 7, "level0.concurrency": 1})
    # runtime.* and level0.concurrency change how a run executes, not what it computes.
    assert config_diff(cfg.to_dict()) == {"label.horizon": 7, "level0.batch_size": 3, "eval.baselines": []}


def test_evaluate_command_writes_the_report(trained: TrainResult, tmp_path: Path) -> None:
    run = tmp_path / trained.run_dir.name
    shutil.copytree(trained.run_dir, run)
    out = CliRunner().invoke(app, ["evaluate", str(run)])
    assert out.exit_code == 0, out.output
    assert (run / "report.html").is_file() and "verdict" in out.output
    missing = CliRunner().invoke(app, ["evaluate", "nope", "--models", str(tmp_path)])
    assert missing.exit_code == 2 and "no complete run 'nope'" in missing.output
