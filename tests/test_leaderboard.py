"""`rstack runs` and `rstack runs show` on real runs, and `rstack evaluate` through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rstack.cli.app import app
from rstack.reporting.leaderboard import config_diff, format_runs, list_runs
from rstack.training.driver import TrainResult
from rstack.training.runs import FAILED_PREFIX
from tests.conftest import LIGHT_DEPTH, LIGHT_TREES, light_config

pytestmark = pytest.mark.slow


def test_leaderboard_lists_complete_runs_best_first_then_unfinished(trained: TrainResult, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained.run_dir, models / trained.run_dir.name)
    (models / "latest").symlink_to(trained.run_dir.name)
    (models / f"{FAILED_PREFIX}20260101T000000Z-aaaaaa").mkdir()
    rows = list_runs(models)
    assert [r["state"] for r in rows] == ["complete", "failed"]
    assert rows[0]["level2"] == trained.manifest["metrics"]["level2"]["roc_auc"]
    light = {"level0.num_trees": LIGHT_TREES, "level0.max_depth": LIGHT_DEPTH}
    assert rows[0]["config_diff"] == {"level0.batch_size": 3, **light, "eval.baselines": []}

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
    light = {"level0.num_trees": LIGHT_TREES, "level0.max_depth": LIGHT_DEPTH}
    assert config_diff(cfg.to_dict()) == {"label.horizon": 7, "level0.batch_size": 3, **light, "eval.baselines": []}


def test_evaluate_command_writes_the_report(trained: TrainResult, tmp_path: Path) -> None:
    run = tmp_path / trained.run_dir.name
    shutil.copytree(trained.run_dir, run)
    out = CliRunner().invoke(app, ["evaluate", str(run)])
    assert out.exit_code == 0, out.output
    assert (run / "report.html").is_file() and "verdict" in out.output
    missing = CliRunner().invoke(app, ["evaluate", "nope", "--models", str(tmp_path)])
    assert missing.exit_code == 2 and "no complete run 'nope'" in missing.output


def _run(
    models: Path,
    run_id: str,
    test: float,
    validation: tuple[float | None] | None = None,
    l2fit: tuple[float | None, float] | None = None,
) -> None:
    """A complete run's manifest as plain JSON: test L2 ROC-AUC, (L2 validation mean,), (L1, L2) on L2-fit."""
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "created_utc": f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}T00:00:00Z",
        "metrics": {"level2": {"roc_auc": test}, "level1": {"roc_auc": test - 0.01}},
    }
    if validation is not None:
        wf_val = {"level2": {"roc_auc_mean": validation[0], "roc_auc_std": 0.0, "folds": 1}}
        manifest["walk_forward"] = {"folds": [], "summary": {}, "validation": wf_val}
    if l2fit is not None:
        # Level 2 is fitted on L2-fit: its (high, in-sample) figure there must not rank the run.
        manifest["metrics_l2_fit"] = {"level1": {"roc_auc": l2fit[0]}, "level2": {"roc_auc": l2fit[1]}}
    (models / run_id).mkdir(parents=True)
    (models / run_id / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("runs", "order"),
    [
        # A walk-forward validation mean ranks the run, even when its test figure is lower.
        ([("20260101-a", 0.60, (0.70,), None), ("20260102-b", 0.80, (0.65,), None)], ["20260101-a", "20260102-b"]),
        # Without walk-forward: Level 1 on the L2-fit segment, not Level 2's in-sample figure, not test.
        (
            [("20260101-a", 0.55, None, (0.62, 0.70)), ("20260102-b", 0.90, None, (0.60, 0.99))],
            ["20260101-a", "20260102-b"],
        ),
        # A run with neither figure sorts last, however good its test; among those, newest first.
        (
            [
                ("20260301-old", 0.99, None, None),
                ("20260401-new", 0.98, None, None),
                ("20260101-c", 0.5, None, (0.51, 0.6)),
            ],
            ["20260101-c", "20260401-new", "20260301-old"],
        ),
        # An undefined (null) validation mean falls back to the L2-fit figure.
        (
            [("20260101-nanval", 0.50, (None,), (0.70, 0.7)), ("20260102-b", 0.90, None, (0.60, 0.7))],
            ["20260101-nanval", "20260102-b"],
        ),
    ],
)
def test_leaderboard_never_ranks_on_test(
    tmp_path: Path,
    runs: list[tuple[str, float, tuple[float | None] | None, tuple[float, float] | None]],
    order: list[str],
) -> None:
    models = tmp_path / "models"
    for run_id, test, validation, l2fit in runs:
        _run(models, run_id, test, validation, l2fit)
    (models / f"{FAILED_PREFIX}20250101T000000Z-aaaaaa").mkdir()
    rows = list_runs(models)
    assert [r["run_id"] for r in rows] == [*order, "20250101T000000Z-aaaaaa"]
    assert rows[-1]["state"] == "failed"


def test_leaderboard_shows_the_ranking_figure_apart_from_test(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _run(models, "20260101-a", 0.60, validation=(0.70,))
    _run(models, "20260102-b", 0.80, l2fit=(0.65, 0.99))
    _run(models, "20260103-c", 0.90)
    out = format_runs(list_runs(models), latest="20260103-c").splitlines()
    head = out[0]
    assert head.index("rank by") < head.index("L2 test")
    # Each row: the ranking figure and its tag, then test L2 ROC-AUC under "L2 test".
    for line, rank, test in zip(
        out[2:5], ["0.7000 val", "0.6500 l2fit", "-"], ["0.6000", "0.8000", "0.9000"], strict=True
    ):
        assert line[head.index("rank by") :].startswith(rank)
        assert line[: head.index("L2 test") + len("L2 test")].endswith(test)
    assert out[4].startswith("*20260103-c")
    assert "0.9900" not in "\n".join(out)  # Level 2's in-sample L2-fit figure is never shown
    assert any("never test" in ln and "val =" in ln and "l2fit =" in ln for ln in out[5:])
