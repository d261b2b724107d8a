"""``rstack tune``: a Ray Tune study over configs, each trial scored before the test segment.

A trial is the base config with some keys changed (``tuning/space.py``). It trains the whole stack
on walk-forward folds 1..K-1 (``training/walkforward.py``): fold k uses only the candles before
``(1 - f) ** (K - k)`` of the time range, so fold K-1 ends where the final test segment begins and
no trial reads a test candle (fold K, the ordinary run, is never trained here). Its score is the
mean Level-2 ROC-AUC over those folds, reported after each fold so ASHA can end a hopeless trial
after its first folds. Trials run as Ray Tune trainables (``tuning/trial.py``) that join the study's
one Spark host (RayDP allows one Spark application per namespace); each run's Spark jobs go to FAIR
pools named after the run, so concurrent trials share the executors fairly.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack.config import Config
from rstack.data.discover import discover
from rstack.errors import ConfigError, RstackError
from rstack.training.host import host_time_span
from rstack.training.walkforward import validation_folds
from rstack.tuning.results import METRIC, StudyTable
from rstack.tuning.space import Param, base_values, covering_base, draw_trials

if TYPE_CHECKING:
    from rstack.cluster.runtime import Runtime

log = logging.getLogger("rstack")

SEARCHES = ("random", "optuna")


def check_study(out: Path, base: Config, *, trials: int, search: str, concurrency: int, folds: int) -> int:
    """Refuse a study that cannot run, before Ray starts; returns the number of validation folds."""
    if search not in SEARCHES:
        raise ConfigError(f"--search {search!r} is not one rstack knows; use one of {', '.join(SEARCHES)}")
    if trials < 1 or concurrency < 1:
        raise ConfigError(f"--trials {trials} and --concurrency {concurrency}: use 1 or more of each")
    try:  # the extra's imports, checked before Ray starts rather than as a traceback in the first trial
        import ray.tune  # noqa: F401

        if search == "optuna":
            import optuna  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"rstack tune needs Ray Tune and Optuna ({exc}); pip install 'rstack[tune]'") from exc
    if (out / "trials.csv").exists():
        raise ConfigError(f"{out} holds a study already (trials.csv); pass another --out or remove it")
    return len(validation_folds(base, folds))


@dataclass(frozen=True)
class StudyResult:
    out: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    base: dict[str, Any] | None  # the base config's row (trial 0)
    command: str
    tracking_error: RstackError | None = None  # the study ran, but logging it to MLflow failed


# Per study, trial id -> name, in the study's driver process: Tune copies the name creator with each
# trial's spec, so a counter kept in the creator itself would start again at 0 for every trial.
_TRIAL_NAMES: dict[str, dict[str, str]] = {}


class TrialNames:
    """trial_00000, trial_00001, ... in the order Tune creates the trials, so trial 0 is the base config
    whatever the searcher (a grid's trial ids end in a counter, Optuna's are random hex)."""

    def __init__(self) -> None:
        self.study = uuid.uuid4().hex

    def __call__(self, trial: Any) -> str:
        names = _TRIAL_NAMES.setdefault(self.study, {})
        return names.setdefault(trial.trial_id, f"trial_{len(names):05d}")


def optuna_search(params: list[Param], base: Config, seed: int) -> tuple[dict[str, Any], Any, list[Param]]:
    """Optuna's TPE over ``params`` (widened to hold the base), the base config its first point: the
    Tune param space, the searcher, and the params that decode its draws (:func:`decode`)."""
    from ray.tune.search.optuna import OptunaSearch

    params = covering_base(params, base)
    reference = base_values(base, params)
    # Tune flattens the space to params/<key>; the base's point must name the same keys.
    first = {f"params/{p.key}": p.index_of(reference[p.key]) for p in params}
    space = {"params": {p.key: p.tune_domain() for p in params}}
    return space, OptunaSearch(seed=seed, points_to_evaluate=[first]), params


def run_study(
    data_dir: Path,
    out: Path,
    base: Config,
    params: list[Param],
    *,
    trials: int,
    search: str,
    concurrency: int,
    seed: int,
    folds: int,
    runtime: Runtime,
    base_path: Path | None = None,
) -> StudyResult:
    """Run the study on ``runtime`` (started, and sized for ``concurrency`` runs) and write ``out``."""
    from ray import tune

    from rstack.tuning.trial import RstackTrial

    n_folds = check_study(out, base, trials=trials, search=search, concurrency=concurrency, folds=folds)
    runtime.start()  # the trials join its Ray and its Spark host by name
    data_dir, out = data_dir.resolve(), out.resolve()  # Tune runs each trial in a folder of its own
    span = runtime.get(runtime.call(host_time_span, discover(data_dir), base.label.horizon, name="tune-time-span"))
    ends = validation_folds(base, folds, span)
    log.info("tune: validation folds end at %s of the time range", ", ".join(f"{e:.4f}" for e in ends))
    out.mkdir(parents=True, exist_ok=True)
    # Trials skip the extra baselines: they cost time and do not change the Level-2 score.
    spec: dict[str, Any] = {
        "base": base.to_dict(),
        "fixed": {"eval.baselines": []},
        "data_dir": str(data_dir),
        "out": str(out),
        "ends": ends,
    }
    # Trial 0 (one of the ``trials``) is the base config itself, scored on the same folds: what the
    # search has to beat.
    reference = base_values(base, params)
    table = StudyTable(out, params, n_folds, search, seed)
    if search == "random":
        spec["draws"] = [reference, *draw_trials(params, trials - 1, seed, taken=[reference])]
        space: dict[str, Any] = {"index": tune.grid_search(list(range(trials)))}
        searcher = None
    else:
        space, searcher, spec["params"] = optuna_search(params, base, seed)
    names = TrialNames()
    # ASHA over folds: a trial whose first folds' mean is in the bottom half stops there.
    asha = tune.schedulers.ASHAScheduler
    scheduler = asha(max_t=n_folds, grace_period=1, reduction_factor=2) if n_folds > 1 else None
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(RstackTrial, spec=spec), {"cpu": 0.01}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            num_samples=1 if search == "random" else trials,
            max_concurrent_trials=concurrency,
            search_alg=searcher,
            scheduler=scheduler,
            trial_name_creator=names,
            trial_dirname_creator=names,
        ),
        run_config=tune.RunConfig(
            name="study",
            storage_path=str(out / "ray_results"),
            callbacks=[table.callback(spec.get("draws"), spec.get("params"))],
            verbose=1,
        ),
    )
    t0 = time.time()
    tuner.fit()  # Ctrl-C ends the study after the running trials stop; the table holds the finished ones
    rows = table.write()
    best = table.best()
    command = f"rstack train {data_dir} --config {out / 'best.yaml'}"
    if best is not None:
        table.write_best(base, best, base_path)
    log.info("tune: %d trials in %.1fs; table %s", len(rows), time.time() - t0, out / "trials.csv")
    return StudyResult(out, rows, best, table.base_row(), command)
