"""Walk-forward on real Spark on Ray: K complete runs on expanding windows, consecutive test periods."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from rstack.errors import ConfigError
from rstack.runtime import Runtime
from rstack.train import TrainResult
from rstack.walkforward import fold_ends, format_walk_forward, walk_forward
from tests.conftest import light_config

pytestmark = pytest.mark.slow


def test_fold_ends_make_consecutive_test_periods() -> None:
    ends = fold_ends(3, 0.1)
    assert ends == pytest.approx([0.81, 0.9, 1.0])
    # Each fold's test is the last 10 % of its prefix, so it ends where the next fold's test begins.
    assert [e * 0.9 for e in ends[1:]] == pytest.approx(ends[:-1])


def test_walk_forward_refits_each_window_without_seeing_past_it(
    trained: TrainResult, synth_dir: Path, runtime: Runtime, tmp_path: Path
) -> None:
    result = walk_forward(synth_dir, tmp_path / "models", light_config(), runtime, folds=2)
    wf = result.manifest["walk_forward"]
    first, last = wf["folds"]
    runs = sorted(p.name for p in (tmp_path / "models").iterdir() if p.name[0].isdigit())
    assert runs == sorted([first["run_id"], last["run_id"]]) and result.run_dir.name == last["run_id"]
    # The last fold is the ordinary full run: same metrics as the fixture's run of the same config.
    for name, want in trained.manifest["metrics"].items():
        assert last["metrics"][name]["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-7), name
    # Fold 1 saw nothing after its cut: its candles, cutoffs and test period all end before it.
    from rstack.runs import load_manifest

    m1 = load_manifest(tmp_path / "models" / first["run_id"])
    assert m1["config"]["split"]["until"] == pytest.approx(0.9)
    cut = m1["until_ms"]
    assert max(s["last_ms"] for s in m1["per_symbol"].values()) < cut
    assert max(m1["cutoffs"]["cutoffs_ms"]) < cut
    # ...and its cut falls where the full run's test begins (within two hourly bars of rounding).
    assert abs(cut - trained.manifest["cutoffs"]["cutoffs_ms"][2]) <= 2 * 3_600_000
    assert first["test_start_utc"] < last["test_start_utc"]
    values = [first["metrics"]["level2"]["roc_auc"], last["metrics"]["level2"]["roc_auc"]]
    assert wf["summary"]["level2"]["roc_auc_mean"] == pytest.approx(statistics.fmean(values))
    assert wf["summary"]["level2"]["roc_auc_std"] == pytest.approx(statistics.stdev(values))
    assert "mean ± std" in format_walk_forward(wf)


@pytest.mark.parametrize(
    ("folds", "overrides", "match"),
    [(1, {}, "use 2 or more folds"), (3, {"split.until": 0.5}, "split.until is set by --walk-forward")],
)
def test_walk_forward_arguments(runtime: Runtime, tmp_path: Path, folds: int, overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        walk_forward(tmp_path, tmp_path / "m", light_config(**overrides), runtime, folds)
