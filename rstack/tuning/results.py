"""A study's output: ``trials.csv`` rewritten as each trial ends (so Ctrl-C leaves the finished
ones), and ``best.yaml``, a config ``rstack train --config`` takes."""

from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from rstack._io import atomic_path, write_text_atomic
from rstack.config import Config, result_config
from rstack.tuning.space import Param, decode

METRIC = "mean_auc"
BASE_TRIAL = "trial_00000"


def _cell(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class StudyTable:
    """One row per trial: ``trial``, ``source`` (``base``: the base config itself, trial 0, or ``search``),
    ``status``, ``mean_auc``, ``std_auc``, ``seconds``, ``folds`` (done),
    ``fold_1``..``fold_K-1``, a column per searched key, and ``error`` (the cause of a failed trial)."""

    def __init__(self, out: Path, params: list[Param], folds: int, search: str, seed: int) -> None:
        self.out, self.params, self.folds, self.search, self.seed = out, params, folds, search, seed
        self.rows: dict[str, dict[str, Any]] = {}

    @property
    def columns(self) -> list[str]:
        head = ["trial", "source", "status", METRIC, "std_auc", "seconds", "folds"]
        return [*head, *(f"fold_{k}" for k in range(1, self.folds + 1)), *(p.key for p in self.params), "error"]

    def record(self, name: str, params: dict[str, Any], scores: list[float], seconds: float, error: str) -> None:
        status = "error" if error else ("complete" if len(scores) == self.folds else "stopped early")
        row: dict[str, Any] = {
            "trial": name,
            # Trial 0 is created first (grid index 0, or Optuna's first point to evaluate): the base.
            "source": "base" if name == BASE_TRIAL else "search",
            "status": status,
            METRIC: statistics.fmean(scores) if scores else None,
            "std_auc": statistics.stdev(scores) if len(scores) > 1 else None,
            "seconds": round(seconds, 1),
            "folds": len(scores),
            **{f"fold_{k}": s for k, s in enumerate(scores, start=1)},
            **{p.key: _cell(params.get(p.key)) for p in self.params},
            "error": error,
        }
        self.rows[name] = row
        self.write()

    def write(self) -> list[dict[str, Any]]:
        rows = [self.rows[n] for n in sorted(self.rows)]
        with atomic_path(self.out / "trials.csv") as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
        return rows

    def base_row(self) -> dict[str, Any] | None:
        return next((r for r in self.rows.values() if r["source"] == "base"), None)

    def best(self) -> dict[str, Any] | None:
        """The best trial that scored every fold (a trial ASHA stopped early has fewer, earlier folds)."""
        done = [r for r in self.rows.values() if r["status"] == "complete"]
        return max(done, key=lambda r: r[METRIC]) if done else None

    def write_best(self, base: Config, best: dict[str, Any], base_path: Path | None) -> Path:
        cfg = base.replace({p.key: best[p.key] for p in self.params})
        origin = f"base config {base_path}" if base_path else "rstack's defaults"
        head = (
            f"# rstack tune: trial {best['trial']}, validation mean ROC-AUC {best[METRIC]:.4f} over "
            f"{self.folds} folds before the test segment ({self.search} search, seed {self.seed}); "
            f"{origin} with the searched keys changed. Runtime and tracking come from the command line or "
            "the environment.\n"
        )
        path = self.out / "best.yaml"
        write_text_atomic(path, head + yaml.safe_dump(result_config(cfg), sort_keys=False))
        return path

    def callback(self, draws: list[dict[str, Any]] | None, searched: list[Param] | None = None) -> Any:
        """The Ray Tune callback that records each trial as it ends (run by the study's driver)."""
        from ray import tune

        table = self

        class _Record(tune.Callback):
            def __init__(self) -> None:
                self.scores: dict[str, list[float]] = {}
                self.started: dict[str, float] = {}

            def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                self.started.setdefault(trial.trial_id, time.monotonic())

            def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
                self.scores.setdefault(trial.trial_id, []).append(float(result["fold_auc"]))

            def _record(self, trial: Any, error: str) -> None:
                if draws is not None:
                    params = draws[trial.config["index"]]
                else:
                    params = decode(searched or table.params, trial.config["params"])
                # Wall time from the trial's start: a trial that fails before its first fold reports no
                # result (Tune's time_total_s would say 0), and one that fails in a later fold ran longer.
                started = self.started.get(trial.trial_id)
                seconds = time.monotonic() - started if started is not None else 0.0
                table.record(str(trial), params, self.scores.get(trial.trial_id, []), seconds, error)

            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                self._record(trial, "")

            def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                self._record(trial, _cause(trial))

        return _Record()


def _cause(trial: Any) -> str:
    """The failed trial's error in one line: its own exception's message, not Ray's wrapper traceback.

    Read from the files Tune writes beside the trial when it fails (the storage copy that
    ``Trial.get_error`` reads is synced later, after the callbacks run)."""
    import ray.cloudpickle as pickle

    error: Any = None
    for path, load in ((trial.pickled_error_file, pickle.loads), (trial.error_file, bytes.decode)):
        if path and Path(path).is_file():
            error = load(Path(path).read_bytes())
            break
    text = str(getattr(error, "cause", None) or error or "failed (no error recorded by Ray Tune)")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else f"failed with {type(error).__name__} and no message"
