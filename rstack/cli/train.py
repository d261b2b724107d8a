"""``rstack train`` and ``rstack evaluate``: fit a stack, then judge it."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

import rstack
from rstack.cli.common import RunsFolder, fail, interrupt, run_folder, runtime_config, setup_logging
from rstack.errors import RstackError
from rstack.reporting.tables import format_metrics


def train(
    data_dir: Annotated[
        Path | None,
        typer.Argument(
            help="Folder of kline Parquet files (one per symbol, or several with a symbol column).",
            envvar="RSTACK_DATA_DIR",
            show_default=False,
        ),
    ] = None,
    models: Annotated[
        Path, typer.Option("--models", "-m", help="Folder that receives the run.", envvar="RSTACK_MODELS")
    ] = Path("models"),
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML config; defaults to configs/laptop.yaml when present.", envvar="RSTACK_CONFIG"
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Symbols per Level-0 model.")] = None,
    horizon: Annotated[int | None, typer.Option(help="Label look-ahead in bars.")] = None,
    feature_set: Annotated[str | None, typer.Option(help="scaled (the default), seed or extended.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Level-0 batches fitted at once.")] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address; omit to start a local Ray.", envvar="RAY_ADDRESS")
    ] = None,
    executors: Annotated[int | None, typer.Option(help="Spark executors.")] = None,
    executor_cores: Annotated[int | None, typer.Option(help="Cores per Spark executor.")] = None,
    executor_memory: Annotated[str | None, typer.Option(help="Memory per executor, e.g. 2g (default 1g).")] = None,
    dashboard: Annotated[
        bool | None, typer.Option("--dashboard/--no-dashboard", help="Start the Ray dashboard with a local Ray.")
    ] = None,
    max_retries: Annotated[int | None, typer.Option(help="Retries of a failed Level-0 batch.")] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue the unfinished run with this id (MODELS/_tmp-ID or _failed-ID): same config and "
            "data; finished Level-0 batches are not refitted.",
            show_default=False,
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(help="Id for the new run (default: time + random); `rstack submit` sets it.", show_default=False),
    ] = None,
    walk_forward: Annotated[
        int | None,
        typer.Option(
            help="Refit the stack on K expanding time windows (K runs, consecutive test periods); "
            "prints per-fold and mean ± std test ROC-AUC.",
            show_default=False,
        ),
    ] = None,
    mlflow: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI: log the run there (tracking.uri).", show_default=False),
    ] = None,
    register: Annotated[
        str | None,
        typer.Option(help="With --mlflow: register the stack under this model name.", show_default=False),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug lines.")] = False,
) -> None:
    """Train, evaluate and save a 3-level stacked ensemble."""
    setup_logging(verbose)
    if data_dir is None:
        typer.echo("error: give DATA_DIR (or set RSTACK_DATA_DIR); `rstack data synth DIR` makes a demo set", err=True)
        raise typer.Exit(2)
    overrides = {
        "level0.batch_size": batch_size,
        "label.horizon": horizon,
        "features.feature_set": feature_set,
        "level0.concurrency": concurrency,
        "runtime.address": address,
        "runtime.num_executors": executors,
        "runtime.executor_cores": executor_cores,
        "runtime.executor_memory": executor_memory,
        "runtime.dashboard": dashboard,
        "level0.max_retries": max_retries,
        "tracking.uri": mlflow,
        "tracking.register": register,
    }
    # `ray job stop` and service managers send SIGTERM: stop as on Ctrl-C, leaving a resumable run.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if main_thread else None
    try:
        cfg = runtime_config(config, overrides)
        try:
            result = rstack.train(data_dir, models, cfg, resume=resume, run_id=run_id, walk_forward=walk_forward)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
    except RstackError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    m = result.manifest
    typer.echo(f"\nrun {m['run_id']} -> {result.run_dir}")
    if (tracked := result.run_dir / "mlflow.json").is_file():
        typer.echo(f"mlflow: {tracked.read_text().strip()}")
    typer.echo(f"test segment from {m['cutoffs']['cutoffs_utc'][2]}, {m['rows_by_segment']['test']} rows\n")
    typer.echo(format_metrics(m["metrics"], m["config"]["eval"]["threshold"]))
    t = m["timings"]
    stages = ["startup", "features", "level0", "level1_level2", "save", "total"]
    typer.echo("\nseconds: " + ", ".join(f"{k} {t[k]:.1f}" for k in stages))
    if "walk_forward" in m:
        from rstack.training.walkforward import format_walk_forward

        # The last fold's test is the final test segment: compare configs on the validation row, not the all-fold one.
        typer.echo(f"\nwalk-forward, {len(m['walk_forward']['folds'])} folds, ROC-AUC on each fold's test period:")
        typer.echo(format_walk_forward(m["walk_forward"]))


def evaluate(
    run: Annotated[str, typer.Argument(help="Run id in MODELS, or a run folder.")] = "latest",
    models: RunsFolder = Path("models"),
    data: Annotated[
        Path | None,
        typer.Option(help="Klines from after the run's training: score them and judge the run on that period."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="With --data: folder for the period's metrics, predictions and report.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML for the runtime section.", envvar="RSTACK_CONFIG")
    ] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address.", envvar="RAY_ADDRESS")] = None,
) -> None:
    """Write report.html (curves, calibration, confusion, per-symbol AUC, importances, leakage audit).
    With --data, first score those klines with the run (labels from its own thresholds) and report
    on that period, beside the naive baselines."""

    setup_logging(False)
    try:
        from rstack.reporting.report import summary_table, write_report

        run_dir = run_folder(models, run)
        if data is not None:
            from rstack.cluster.runtime import Runtime
            from rstack.data.discover import discover
            from rstack.models.bundle import Bundle
            from rstack.serving.evaluate import evaluate_new_data

            bundle = Bundle.open(run_dir)  # refuse a bad bundle before starting Spark
            target = (out or Path(f"evaluation-{bundle.manifest['run_id']}-{data.name}")).resolve()
            dataset = discover(data)
            cfg = runtime_config(config, {"runtime.address": address})
            with Runtime(cfg.runtime, max_concurrency=3) as runtime:
                result = runtime.get(
                    runtime.call(evaluate_new_data, str(run_dir), dataset, str(target), name="evaluate")
                )
            typer.echo(
                f"run {result['run_id']} on {data}: {result['rows']} rows from {result['period_utc'][0]} to "
                f"{result['period_utc'][1]} -> {target}"
            )
            trained_run, run_dir = run_dir, target
        else:
            trained_run = run_dir
        summary = write_report(run_dir)
        if (trained_run / "mlflow.json").is_file():
            from rstack.reporting.tracking import log_report

            # The training run's MLflow run gets the report too (an evaluation's under its folder's name).
            where = None if run_dir == trained_run else f"evaluation/{run_dir.name}"
            mlflow_run = log_report(trained_run, Path(summary["html"]), where)
            typer.echo(f"mlflow: report added to run {mlflow_run}")
    except RstackError as exc:
        raise fail(exc) from None
    typer.echo(summary_table(summary))
    typer.echo(f"\nreport: {summary['html']}")
