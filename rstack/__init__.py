"""rstack: leakage-safe stacked ensembles for market data, Spark on Ray.

The Python API: :func:`train` a stack from a folder of klines, :func:`load` a saved one to score
Spark DataFrames, :func:`load_config` for the typed config (YAML < environment < overrides).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack.errors import ConfigError, InputError, RstackError, RuntimeStartError, TrainingError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rstack.cluster.runtime import Runtime
    from rstack.config import Config
    from rstack.models.bundle import Bundle
    from rstack.training.driver import TrainResult
    from rstack.tuning.study import StudyResult


def load(run_dir: str | Path) -> Bundle:
    """Open and verify a saved run; ``rstack.load("models/latest").predict(klines_df)``."""
    from rstack.models.bundle import Bundle

    return Bundle.open(run_dir)


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """The validated config: defaults < the YAML file < ``RSTACK_SECTION__KEY`` variables < ``overrides``
    (dotted keys, e.g. ``{"level0.batch_size": 4}``)."""
    from rstack.config import load_config as load

    return load(Path(path) if path is not None else None, dict(overrides or {}))


def train(
    data_dir: str | Path,
    models: str | Path = "models",
    config: Config | None = None,
    *,
    runtime: Runtime | None = None,
    resume: str | None = None,
    run_id: str | None = None,
    walk_forward: int | None = None,
) -> TrainResult:
    """Train, evaluate and save a stack, as ``rstack train`` does; returns the run folder and manifest.
    With ``config.tracking.uri`` set, the saved run is then logged to MLflow (``reporting/tracking.py``).

    ``config`` defaults to :func:`load_config`'s. With ``runtime`` (a started or unstarted
    :class:`rstack.cluster.runtime.Runtime`) the run uses it and leaves it running: its owner stops
    it. Without, a Runtime is made for this call from ``config.runtime`` (it joins the Ray at
    ``runtime.address`` / ``RAY_ADDRESS``, reuses a Ray this process already started, or starts a
    local one) and stopped afterwards, Ray included only if it started it.
    """
    from rstack.cluster.runtime import Runtime
    from rstack.training.driver import train as train_run

    cfg = config if config is not None else load_config()
    if walk_forward is not None and (resume or run_id):
        raise InputError(
            "walk_forward (--walk-forward) makes K new runs; it cannot be combined with resume or run_id "
            "(--resume, --run-id): resume each fold's run on its own"
        )
    if cfg.tracking.uri is not None:
        from rstack.reporting.tracking import check_tracking

        check_tracking(cfg.tracking)  # before hours of training, not after
    own = runtime is None
    # Threads of the Spark host: the Level-0 batches, the baselines, and control calls (cancel, release).
    rt = runtime or Runtime(cfg.runtime, max_concurrency=cfg.level0.concurrency + len(cfg.eval.baselines) + 3)
    try:
        if walk_forward is not None:
            from rstack.training.walkforward import walk_forward as train_folds

            result = train_folds(Path(data_dir), Path(models), cfg, rt, walk_forward)
        else:
            result = train_run(Path(data_dir), Path(models), cfg, rt, resume=resume, run_id=run_id)
    finally:
        if own:
            rt.stop()
    if cfg.tracking.uri is not None:
        from rstack.reporting.tracking import log_run

        # The committed run (with walk-forward, the last fold's, which carries the fold table).
        log_run(result.run_dir, cfg.tracking)
    return result


def tune(
    data_dir: str | Path,
    out: str | Path,
    config: Config | None = None,
    *,
    trials: int = 8,
    search: str = "random",
    concurrency: int = 1,
    seed: int = 0,
    folds: int = 3,
    space: str | Path | None = None,
    config_path: str | Path | None = None,
) -> StudyResult:
    """Search configs with Ray Tune, as ``rstack tune`` does: each trial trains the stack on walk-forward
    folds 1..``folds``-1, all before the test segment, and is scored by their mean Level-2 ROC-AUC.
    Writes ``out/trials.csv`` and ``out/best.yaml``; ``space`` is a YAML search space (default:
    ``rstack.tuning.space.DEFAULT_SPACE``). With ``config.tracking.uri`` the study is logged to MLflow,
    each trial as a child run."""
    from rstack.cluster.runtime import Runtime
    from rstack.tuning.space import check_trials, load_space
    from rstack.tuning.study import check_study, run_study

    cfg = config if config is not None else load_config()
    # Checked before Ray starts: the options, the folds and every value of the search space.
    check_study(Path(out), cfg, trials=trials, search=search, concurrency=concurrency, folds=folds)
    params = load_space(Path(space) if space is not None else None, cfg)
    check_trials(params, trials, cfg)
    if cfg.tracking.uri is not None:
        from rstack.reporting.tracking import check_tracking

        check_tracking(cfg.tracking)
    # Host threads: per concurrent trial its Level-0 batches and control calls (trials run no baselines).
    with Runtime(cfg.runtime, max_concurrency=concurrency * (cfg.level0.concurrency + 3)) as rt:
        result = run_study(
            Path(data_dir),
            Path(out),
            cfg,
            params,
            trials=trials,
            search=search,
            concurrency=concurrency,
            seed=seed,
            folds=folds,
            runtime=rt,
            base_path=Path(config_path) if config_path is not None else None,
        )
    if cfg.tracking.uri is not None:
        from rstack.reporting.tracking import log_study

        try:
            log_study(result.out, result.rows, cfg.tracking)
        except RstackError as exc:  # the results are on disk: returned with the error, not hidden by it
            import dataclasses

            return dataclasses.replace(result, tracking_error=exc)
    return result


__all__ = [
    "load",
    "load_config",
    "train",
    "tune",
    "ConfigError",
    "InputError",
    "RstackError",
    "RuntimeStartError",
    "TrainingError",
    "__version__",
]
