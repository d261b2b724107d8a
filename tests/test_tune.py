"""``rstack tune``: the search space checked before any trial, folds that end before the test segment,
and a real Ray Tune study (trials on the shared Spark host, a failing one recorded, MLflow child runs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from rstack.cli.app import app
from rstack.config import Config, load_config
from rstack.errors import ConfigError
from rstack.features.segments import compute_cutoffs
from rstack.tuning.space import DEFAULT_SPACE, draw_trials, parse_space
from rstack.tuning.study import validation_folds
from tests.conftest import LIGHT_DEPTH, LIGHT_TREES, ROOT

HOUR = 3_600_000


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({}, r"must be a non-empty mapping of config keys"),
        ({"label.horizon": [3, 5]}, r"'label.horizon' cannot be tuned; search keys of features, level0"),
        ({"split.embargo": [0, 2]}, r"'split.embargo' cannot be tuned"),
        ({"level0.max_depth": 5}, r"level0.max_depth: 5 is neither a list of choices nor a range"),
        ({"level2.reg_param": {"low": 0.1, "high": 0.01}}, r"give numbers with low < high, got low=0.1, high=0.01"),
        ({"level2.reg_param": {"low": 0, "high": 0.1, "log": True}}, r"a log range needs low > 0, got 0"),
        ({"level0.max_depth": [6, 0]}, r"level0.max_depth"),  # 0 is refused by the config itself
        ({"level1.context": [["lrv_1d"], ["no_such_column"]]}, r"level1.context = \('no_such_column',\) is invalid"),
    ],
)
def test_a_search_space_is_refused_before_any_trial(space: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_space(space, Config())


def test_the_default_space_is_valid_and_the_same_seed_draws_the_same_trials() -> None:
    params = parse_space(DEFAULT_SPACE, Config())
    first, again, other = draw_trials(params, 6, 3), draw_trials(params, 6, 3), draw_trials(params, 6, 4)
    assert first == again and first != other
    for draw in first:
        assert draw["level0.max_depth"] in DEFAULT_SPACE["level0.max_depth"]
        assert 1e-4 <= draw["level2.reg_param"] <= 0.1 and 0.0 <= draw["level2.elastic_net_param"] <= 1.0
        Config().replace(draw)  # every drawn trial is a valid config


@pytest.mark.parametrize(
    ("bars", "horizon", "fractions", "folds"),
    [
        (1500, 5, (0.7, 0.1, 0.1, 0.1), 3),
        (1500, 24, (0.7, 0.1, 0.1, 0.1), 3),
        (997, 12, (0.6, 0.15, 0.1, 0.15), 4),
        (70_000, 3, (0.7, 0.1, 0.1, 0.1), 5),
    ],
)
def test_every_validation_fold_ends_before_any_final_test_segment(
    bars: int, horizon: int, fractions: tuple[float, ...], folds: int
) -> None:
    cfg = Config().replace({"label.horizon": horizon, "split.fractions": fractions})
    lo = 1_700_000_000_000
    hi = lo + (bars - 1) * HOUR
    ends = validation_folds(cfg, folds, (lo, hi, HOUR))
    assert len(ends) == folds - 1 and ends == sorted(ends)
    last_cut = int(lo + ends[-1] * (hi - lo))  # as the fold cuts: candles before this instant
    # The final run's test segment starts at its usable rows' cutoff; whatever the feature warm-up.
    for warmup in range(0, 400, 7):
        test_start = compute_cutoffs(lo + warmup * HOUR, hi - horizon * HOUR, HOUR, fractions).cutoffs_ms[2]
        assert last_cut < test_start, (warmup, last_cut, test_start)


@pytest.mark.parametrize(
    ("folds", "overrides", "match"),
    [(1, {}, r"1 folds: use 2 or more"), (3, {"split.until": 0.5}, r"split.until is set by each walk-forward fold")],
)
def test_validation_folds_refuse(folds: int, overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validation_folds(Config().replace(overrides), folds)


@pytest.mark.slow
def test_a_study_scores_trials_before_the_test_segment_and_writes_a_config_train_takes(
    tmp_path: Path, synth_dir: Path, runtime: Any, mlflow_uri: str
) -> None:
    from mlflow import MlflowClient

    base = tmp_path / "base.yaml"
    base.write_text(
        f"level0:\n  batch_size: 3\n  concurrency: 1\n  num_trees: {LIGHT_TREES // 2}\n  max_depth: {LIGHT_DEPTH}\n"
        "runtime:\n  dashboard: false\n  executor_memory: 1g\n  driver_memory: 1g\n"
    )
    # One drawn trial, whose seasonal profile needs more days than the data has: training refuses it.
    space = {"features.seasonal_days": [100], "level2.reg_param": {"low": 0.001, "high": 0.1, "log": True}}
    (tmp_path / "space.yaml").write_text(json.dumps(space))
    (draw,) = draw_trials(parse_space(space, Config()), 1, 7)
    out = tmp_path / "study"
    args = ["tune", str(synth_dir), "--out", str(out), "--trials", "1", "--config", str(base), "--folds", "3"]
    args += ["--space", str(tmp_path / "space.yaml"), "--seed", "7", "--concurrency", "2"]
    result = CliRunner().invoke(app, [*args, "--mlflow", mlflow_uri])
    assert result.exit_code == 0, result.output

    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    # Trial 0 is the base config itself, scored on the same folds; then the seed's draw.
    assert [(r["trial"], r["source"]) for r in rows] == [("trial_00000", "base"), ("trial_00001", "search")]
    head = ["trial", "source", "status", "mean_auc", "std_auc", "seconds", "folds", "fold_1", "fold_2"]
    assert list(rows[0])[: len(head)] == head
    base_row, failed_row = rows
    assert base_row["features.seasonal_days"] == "7" and float(base_row["level2.reg_param"]) == 0.01
    assert base_row["status"] == "complete" and base_row["error"] == "" and int(base_row["folds"]) == 2
    assert 0.0 < float(base_row["mean_auc"]) < 1.0 and base_row["fold_2"]
    # The drawn trial failed in its first fold, is recorded with the cause, and the study went on.
    assert float(failed_row["level2.reg_param"]) == pytest.approx(draw["level2.reg_param"])
    assert failed_row["status"] == "error" and "enough rows for the feature windows" in failed_row["error"]
    complete = [r for r in rows if r["status"] == "complete"]
    best = base_row
    assert f"best: {best['trial']}" in result.output and f"--config {out / 'best.yaml'}" in result.output

    # best.yaml is a config rstack train takes: the base with the best trial's values.
    cfg = load_config(out / "best.yaml", environ={})
    assert cfg.level2.reg_param == pytest.approx(float(best["level2.reg_param"]))
    assert cfg.features.seasonal_days == 7
    assert cfg.level0.num_trees == LIGHT_TREES // 2 and cfg.split.until == 1.0

    # No fold of any trial read a candle of the final test segment (whatever its feature warm-up).
    klines = pd.concat(pd.read_parquet(p, columns=["open_time"]) for p in synth_dir.glob("*.parquet"))
    lo, hi = int(klines["open_time"].min()), int(klines["open_time"].max())
    horizon, fractions = cfg.label.horizon, cfg.split.fractions
    earliest_test = compute_cutoffs(lo, hi - horizon * HOUR, HOUR, fractions).cutoffs_ms[2]
    manifests = [json.loads(p.read_text()) for p in (out / "trials").glob("*/[0-9]*/manifest.json")]
    assert len(manifests) >= 2 * len(complete)
    for m in manifests:
        assert m["config"]["split"]["until"] < 0.9 and m["config"]["eval"]["baselines"] == []
        assert max(s["last_ms"] for s in m["per_symbol"].values()) < earliest_test

    # MLflow: the study as a parent run, each trial its child.
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("rstack")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`rstack.study` = '{out}'")
    assert len(runs) == 1
    parent = runs[0]
    assert parent.data.metrics["best_mean_auc"] == pytest.approx(float(best["mean_auc"]))
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == [r["trial"] for r in rows]
    failed = next(c for c in children if c.data.tags["rstack.status"] == "error")
    assert "enough rows" in failed.data.tags["rstack.error"] and failed.info.status == "FAILED"


def test_tune_refuses_a_used_folder_and_unknown_search_before_ray(tmp_path: Path) -> None:
    (tmp_path / "trials.csv").write_text("trial\n")
    for extra, match in [([], "holds a study already"), (["--search", "grid"], "--search 'grid' is not one")]:
        out = tmp_path if not extra else tmp_path / "new"
        args = ["tune", str(ROOT), "--out", str(out), "--config", str(ROOT / "configs" / "laptop.yaml"), *extra]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and match in result.output, result.output
