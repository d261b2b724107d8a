"""``rstack tune``: the search space checked before any trial, folds that end before the test segment,
and a real Ray Tune study (trials on the shared Spark host, a failing one recorded, MLflow child runs)."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from rstack.cli.app import app
from rstack.config import Config, load_config
from rstack.data.discover import TimeSpan, discover, time_span
from rstack.errors import ConfigError
from rstack.features.segments import compute_cutoffs
from rstack.tuning.space import (
    DEFAULT_SPACE,
    base_values,
    check_trials,
    decode,
    default_space,
    draw_trials,
    parse_space,
)
from rstack.tuning.study import TrialNames, optuna_search, validation_folds
from tests.conftest import LIGHT_TREES, ROOT, light_yaml

HOUR = 3_600_000


def actor_repr_names() -> list[str]:
    """What the dashboard's actor view names each actor by, read from Ray's GCS: ray.util.state would
    need the dashboard, which the suite's runtime does not start."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    rows = state._connect_and_get_accessor().get_actor_table(None, None)
    return [gcs_pb2.ActorTableData.FromString(row).repr_name for row in rows]


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
        ({"level0.concurrency": [1, 2]}, r"'level0.concurrency' changes how a run executes, not what it learns"),
        ({"level0.max_retries": {"low": 0, "high": 3}}, r"'level0.max_retries' changes how a run executes"),
    ],
)
def test_a_search_space_is_refused_before_any_trial(space: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_space(space, Config())


@pytest.mark.parametrize("feature_set", ["scaled", "extended", "seed"])
def test_the_default_space_is_valid_and_the_same_seed_draws_the_same_trials(feature_set: str) -> None:
    base = Config().replace({"features.feature_set": feature_set})
    space = default_space(base)
    params = parse_space(space, base)
    first, again, other = draw_trials(params, 12, 3), draw_trials(params, 12, 3), draw_trials(params, 12, 4)
    assert first == again and first != other
    for draw in first:
        assert draw["level0.max_depth"] in DEFAULT_SPACE["level0.max_depth"]
        assert 1e-4 <= draw["level2.reg_param"] <= 0.1 and 0.0 <= draw["level2.elastic_net_param"] <= 1.0
        base.replace(draw)  # every drawn trial is a valid config
    # A range of a real-valued key is drawn as reals, not rounded to its ends.
    assert any(0.0 < d["level2.elastic_net_param"] < 1.0 for d in first)
    # The feature keys searched by default are the ones the base's feature set reads.
    assert {k for k in space if k.startswith("features.")} == {
        "scaled": {"features.mid_windows", "features.seasonal_days"},
        "extended": {"features.rv_windows", "features.volume_z_window"},
        "seed": set(),
    }[feature_set]


@pytest.mark.parametrize(
    ("key", "low", "high", "integer"),
    [
        ("level0.max_depth", 4, 12, True),
        ("level2.elastic_net_param", 0, 1, False),  # whole ends, but the key is a real number
        ("level2.reg_param", 0.001, 1, False),
    ],
)
def test_a_range_is_whole_numbers_only_for_an_integer_key(key: str, low: float, high: float, integer: bool) -> None:
    (param,) = parse_space({key: {"low": low, "high": high}}, Config())
    draws = [d[key] for d in draw_trials([param], 9, 0)]  # 4..12 holds nine whole numbers
    assert all(isinstance(v, int) for v in draws) is integer and all(low <= v <= high for v in draws)


def test_choices_are_read_as_the_config_reads_them() -> None:
    # YAML's 0.5 is the text "0.5" for a text key, 1.0 the whole number 1 for an integer one: the base's
    # own value is found among the choices, and two spellings of one value are one choice.
    base = Config().replace({"level0.feature_subset_strategy": "0.5"})
    raw = {"level0.feature_subset_strategy": ["auto", 0.5, 1, 1.0], "level0.min_instances_per_node": [1, 1.0, 20]}
    subset, leaf = parse_space(raw, base)
    assert subset.choices == ("auto", "0.5", "1", "1.0") and subset.index_of("0.5") == 1
    assert leaf.choices == (1, 20)


def test_random_draws_are_distinct_and_never_the_base() -> None:
    # A trial spent on a config already scored tells nothing: seed 0 drew one twice in a real study.
    base = Config()
    params = parse_space({"level0.min_instances_per_node": [1, 5, 20], "level1.min_instances_per_node": [1, 20]}, base)
    reference = base_values(base, params)
    draws = draw_trials(params, 5, 0, taken=[reference])
    assert len({tuple(sorted(d.items())) for d in draws}) == 5 and reference not in draws
    assert draws == draw_trials(params, 5, 0, taken=[reference])
    check_trials(params, 6, base)  # the base and the 5 others: the whole space
    match = r"--trials 7: the search space holds only 5 configs besides the base config's; use --trials 6 or fewer"
    with pytest.raises(ConfigError, match=match):
        check_trials(params, 7, base)
    # Every untried config of a finite space can be drawn: sampled, not drawn until a new one turns up.
    assert len(draw_trials(params, 5, 1, taken=[reference])) == 5
    # A space that does not hold the base has one more config to offer; a real-valued range, no end of them.
    check_trials(parse_space({"level0.min_instances_per_node": [5, 20]}, base), 3, base)
    check_trials(parse_space({"level2.reg_param": {"low": 0.001, "high": 0.1}}, base), 100, base)


def test_trials_are_numbered_in_the_order_tune_creates_them() -> None:
    """Trial 0 is the base config for both searchers: Optuna's trial ids are random hex, not a counter."""
    names = TrialNames()
    ids = ["83415f5b", "6e6e468e", "83415f5b", "1873d1e6"]  # Tune asks again for a trial's folder
    assert [names(SimpleNamespace(trial_id=i)) for i in ids] == [
        "trial_00000",
        "trial_00001",
        "trial_00000",
        "trial_00002",
    ]
    # Tune copies the creator with every trial's spec, before naming any: the copies count together.
    fresh = TrialNames()
    first, second = copy.deepcopy(fresh), copy.deepcopy(fresh)
    assert first(SimpleNamespace(trial_id="0f0f0f0f")) == "trial_00000"
    assert second(SimpleNamespace(trial_id="1e1e1e1e")) == "trial_00001"


def test_optuna_evaluates_the_base_config_first_even_outside_the_space() -> None:
    """The Optuna searcher's first suggestion is the base config's own values: choices by index, a base
    value the space lacks added to it, list-valued choices decoded back into lists."""
    space = {
        "level0.max_depth": [6, 8],  # the base's 10 is not a choice
        "level2.reg_param": {"low": 0.001, "high": 0.005},  # nor is its 0.01 in the range
        "features.mid_windows": [["12h", "3d"], ["4h", "3d"]],
        "level1.num_trees": [25, 50],
    }
    base = Config()
    params = parse_space(space, base)
    tune_space, searcher, widened = optuna_search(params, base, seed=0)
    searcher.set_search_properties("mean_auc", "max", tune_space)
    first, second = searcher.suggest("t0"), searcher.suggest("t1")
    assert decode(widened, first["params"]) == {
        "level0.max_depth": 10,
        "level2.reg_param": 0.01,
        "features.mid_windows": ("4h", "3d"),
        "level1.num_trees": 50,
    }
    base.replace(decode(widened, second["params"]))  # a later, searched point is a valid config too


@pytest.mark.parametrize(
    ("bars", "horizon", "fractions", "folds", "tail_gap"),
    [
        (1500, 5, (0.7, 0.1, 0.1, 0.1), 3, 0),
        (1500, 24, (0.7, 0.1, 0.1, 0.1), 3, 0),
        (997, 12, (0.6, 0.15, 0.1, 0.15), 4, 0),
        (70_000, 3, (0.7, 0.1, 0.1, 0.1), 5, 0),
        (1500, 5, (0.7, 0.1, 0.1, 0.1), 3, 60),  # missing candles at the end: labels stop earlier
    ],
)
def test_every_validation_fold_ends_before_any_final_test_segment(
    bars: int, horizon: int, fractions: tuple[float, ...], folds: int, tail_gap: int
) -> None:
    cfg = Config().replace({"label.horizon": horizon, "split.fractions": fractions})
    lo = 1_700_000_000_000
    hi = lo + (bars - 1) * HOUR
    # The last labelled row is ``horizon`` candles before the last one; a gap of ``tail_gap`` bars
    # among those candles moves it that much earlier.
    last_labelled = hi - (horizon + tail_gap) * HOUR
    ends = validation_folds(cfg, folds, TimeSpan(lo, hi, last_labelled, HOUR))
    assert len(ends) == folds - 1 and ends == sorted(ends)
    last_cut = int(lo + ends[-1] * (hi - lo))  # as the fold cuts: candles before this instant
    # The final run's test segment starts at its usable rows' cutoff; whatever the feature warm-up.
    for warmup in range(0, 400, 7):
        test_start = compute_cutoffs(lo + warmup * HOUR, last_labelled, HOUR, fractions).cutoffs_ms[2]
        assert last_cut < test_start, (warmup, last_cut, test_start)


def test_the_time_span_names_the_last_row_a_label_can_exist_for(tmp_path: Path, on_host: Any) -> None:
    t0 = 1_704_067_200_000
    hours = {"AUSDT": [*range(95), 99], "BUSDT": list(range(81))}  # A lacks hours 95-98
    for symbol, hs in hours.items():
        times = [t0 + h * HOUR for h in hs]
        frame = {"symbol": symbol, "open_time": times, "open": 1.0, "high": 1.1, "low": 0.9, "close": 1.0}
        pd.DataFrame({**frame, "volume": 10.0}).to_parquet(tmp_path / f"{symbol}.parquet")
    # Horizon 5: A's last labelled row is 5 rows before its last one (hour 90), later than B's (75).
    assert on_host(_span, discover(tmp_path), 5) == TimeSpan(t0, t0 + 99 * HOUR, t0 + 90 * HOUR, HOUR)


def _span(spark: Any, state: dict, dataset: Any, horizon: int) -> TimeSpan | None:
    return time_span(spark, dataset, horizon)


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
    base.write_text(light_yaml(**{"level0.concurrency": 1, "level0.num_trees": LIGHT_TREES // 2}))
    # One drawn trial, whose seasonal profile needs more days than the data has: training refuses it.
    space = {"features.seasonal_days": [100], "level2.reg_param": {"low": 0.001, "high": 0.1, "log": True}}
    (tmp_path / "space.yaml").write_text(json.dumps(space))
    (draw,) = draw_trials(parse_space(space, Config()), 1, 7)
    out = tmp_path / "study"
    args = ["tune", str(synth_dir), "--out", str(out), "--trials", "2", "--config", str(base), "--folds", "3"]
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
    # Its time is the wall time it ran, though it never reported a fold.
    assert float(failed_row["seconds"]) > 0 and float(base_row["seconds"]) > float(failed_row["seconds"])
    complete = [r for r in rows if r["status"] == "complete"]
    best = base_row
    # Each trial's actor shows the trial's name in Ray's actor table (the dashboard's actor view).
    assert {r["trial"] for r in rows} <= set(actor_repr_names())
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
