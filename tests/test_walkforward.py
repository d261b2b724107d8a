"""Walk-forward on real Spark on Ray: K complete runs on expanding windows, consecutive test periods."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from rstack.cluster.runtime import Runtime
from rstack.errors import ConfigError
from rstack.training.driver import TrainResult
from rstack.training.walkforward import fold_ends, format_walk_forward, summaries, summarize, walk_forward
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
    from rstack._io import load_manifest

    m1 = load_manifest(tmp_path / "models" / first["run_id"])
    # 0.9 of the time range, less a few bars, so that it ends before any final test segment can begin.
    assert 0.89 < m1["config"]["split"]["until"] < 0.9
    cut = m1["until_ms"]
    assert max(s["last_ms"] for s in m1["per_symbol"].values()) < cut
    assert max(m1["cutoffs"]["cutoffs_ms"]) < cut
    # ...and its cut falls just before the full run's test begins: the fold cuts the raw candles' time
    # range, the full run's cutoffs split the usable rows' range, which starts a warm-up later (the
    # week-long windows) and ends a horizon earlier; the fold is shrunk by that horizon (and a bar)
    # so that it would end first even without a warm-up: the two differ by at most a tenth of the
    # warm-up, the horizon and three bars of rounding.
    warmup = max(s["dropped_warmup"] for s in trained.manifest["per_symbol"].values())
    horizon = trained.manifest["config"]["label"]["horizon"]
    lag = trained.manifest["cutoffs"]["cutoffs_ms"][2] - cut
    assert 0 < lag <= (0.1 * warmup + 0.9 * horizon + 3) * 3_600_000
    assert first["test_start_utc"] < last["test_start_utc"]
    values = [first["metrics"]["level2"]["roc_auc"], last["metrics"]["level2"]["roc_auc"]]
    assert wf["summary"]["level2"]["roc_auc_mean"] == pytest.approx(statistics.fmean(values))
    assert wf["summary"]["level2"]["roc_auc_std"] == pytest.approx(statistics.stdev(values))
    # With two folds the validation mean is fold 1 alone: its test ends where the final test begins.
    assert wf["validation"]["level2"] == pytest.approx(
        {"roc_auc_mean": values[0], "roc_auc_std": 0.0, "pr_auc_mean": first["metrics"]["level2"]["pr_auc"], "folds": 1}
    )
    assert "validation (fold 1)" in format_walk_forward(wf)


@pytest.mark.parametrize(
    ("folds", "overrides", "match"),
    [(1, {}, "use 2 or more folds"), (3, {"split.until": 0.5}, "split.until is set by --walk-forward")],
)
def test_walk_forward_arguments(runtime: Runtime, tmp_path: Path, folds: int, overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        walk_forward(tmp_path, tmp_path / "m", light_config(**overrides), runtime, folds)


def _fold(k: int, **roc: float | None) -> dict[str, Any]:
    """One row of manifest["walk_forward"]["folds"]; PR-AUC is ROC-AUC minus 0.1 to tell them apart."""
    metrics = {n: {"roc_auc": v, "pr_auc": None if v is None or math.isnan(v) else v - 0.1} for n, v in roc.items()}
    return {"fold": k, "test_start_utc": f"2026-0{k}-01T00:00:00Z", "test_rows": 100 * k, "metrics": metrics}


NAN = float("nan")


def _stats(values: list[float]) -> tuple[float, float, int]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


@pytest.mark.parametrize(
    ("level2", "validation_used", "all_used"),
    [
        # K=2: validation is fold 1 alone, std 0.0 over one fold.
        ([0.55, 0.8], [0.55], [0.55, 0.8]),
        # The last fold (the final test segment) is out of validation, however good it looks.
        ([0.6, 0.7, 0.99], [0.6, 0.7], [0.6, 0.7, 0.99]),
        # One-class folds: NaN (in memory) and None (read back from JSON) are left out and not counted.
        ([0.6, NAN, None, 0.7, 0.9], [0.6, 0.7], [0.6, 0.7, 0.9]),
        ([NAN, 0.62, 0.9], [0.62], [0.62, 0.9]),
    ],
)
def test_validation_mean_leaves_out_the_last_fold_and_undefined_folds(
    level2: list[float | None], validation_used: list[float], all_used: list[float]
) -> None:
    folds = [_fold(k, level2=v, level1=0.5) for k, v in enumerate(level2, start=1)]
    got = summaries(folds)
    for key, used in (("validation", validation_used), ("summary", all_used)):
        s = got[key]["level2"]
        assert (s["roc_auc_mean"], s["roc_auc_std"], s["folds"]) == pytest.approx(_stats(used)), key
        assert s["pr_auc_mean"] == pytest.approx(statistics.fmean(used) - 0.1), key
    assert got["validation"]["level1"]["folds"] == len(level2) - 1


def test_summarize_drops_a_model_with_no_defined_fold() -> None:
    got = summarize([_fold(1, level2=NAN, level1=0.6), _fold(2, level2=None, level1=0.7)])
    assert "level2" not in got and got["level1"]["folds"] == 2 and summarize([]) == {}


def test_format_walk_forward_prints_validation_first_and_names_the_all_fold_row() -> None:
    folds = [_fold(1, level2=0.6, level1=0.58), _fold(2, level2=NAN, level1=0.6), _fold(3, level2=0.9, level1=0.7)]
    out = format_walk_forward({"folds": folds, **summaries(folds)}).splitlines()
    val = next(i for i, ln in enumerate(out) if ln.startswith("validation (folds 1..2)"))
    full = next(i for i, ln in enumerate(out) if ln.startswith("all folds (incl. final test)"))
    assert val < full
    assert "0.6000 ± 0.0000" in out[val] and "0.7500 ± 0.2121" in out[full]
    # The NaN fold prints as "-", and the rows say that level2's means used fewer folds.
    assert out[3].split()[-2:] == ["-", "0.6000"]
    assert "validation: folds used (ROC-AUC undefined on one label class): level2 1 of 2" in out
    assert "all folds: folds used (ROC-AUC undefined on one label class): level2 2 of 3" in out
