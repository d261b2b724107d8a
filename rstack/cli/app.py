"""The ``rstack`` command. Thin: parse, build the config once, call the library, map errors to exit codes.

Exit codes: 0 success, 1 runtime failure, 2 bad input or usage.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from rstack.errors import InputError, RstackError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Leakage-safe stacked ensembles, Spark on Ray.")
data_app = typer.Typer(no_args_is_help=True, help="Make and inspect kline datasets.")
app.add_typer(data_app, name="data")
runs_app = typer.Typer(help="List and show the runs in a models folder.")
app.add_typer(runs_app, name="runs")

# The --models option of the commands that read runs (evaluate, runs, runs show).
RunsFolder = Annotated[Path, typer.Option("--models", "-m", help="Folder holding the runs.", envvar="RSTACK_MODELS")]

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "laptop.yaml"


class _Console(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at emit time: a test runner swaps (and closes) it per call."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger("rstack")
    root.setLevel(logging.DEBUG)
    # Replace, not reuse: a second invocation in one process may have a different sys.stderr.
    for h in [h for h in root.handlers if getattr(h, "_rstack_console", False)]:
        root.removeHandler(h)
    console = _Console()
    console._rstack_console = True  # type: ignore[attr-defined]
    console.setFormatter(logging.Formatter("%(asctime)s rstack: %(message)s", "%H:%M:%S"))
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.addHandler(console)
    root.propagate = False
    import ray  # noqa: F401 - importing ray resets its logger levels; set ours after it

    for noisy in ("py4j", "ray", "raydp", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _fail(exc: RstackError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exc.exit_code)


def format_metrics(metrics: dict[str, dict[str, Any]], threshold: float) -> str:
    """The metrics table; the confusion counts are at the run's ``eval.threshold``."""
    head = (
        f"{'model':<24}{'ROC-AUC':>9}{'PR-AUC':>9}{'logloss':>9}{'Brier':>8}{'rows':>9}{'pos%':>7}"
        f"   tp/fp/tn/fn @{threshold:g}"
    )
    lines = [head, "-" * len(head)]
    for name, m in metrics.items():
        c = m["confusion"]
        lines.append(
            f"{name:<24}{m['roc_auc']:>9.4f}{m['pr_auc']:>9.4f}{m['log_loss']:>9.4f}{m['brier']:>8.4f}"
            f"{m['rows']:>9d}{100 * m['positive_rate']:>7.1f}   {c['tp']}/{c['fp']}/{c['tn']}/{c['fn']}"
        )
    return "\n".join(lines)


@app.command()
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
    feature_set: Annotated[str | None, typer.Option(help="seed or extended.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Level-0 batches fitted at once.")] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address; omit to start a local Ray.", envvar="RAY_ADDRESS")
    ] = None,
    executors: Annotated[int | None, typer.Option(help="Spark executors.")] = None,
    executor_cores: Annotated[int | None, typer.Option(help="Cores per Spark executor.")] = None,
    executor_memory: Annotated[str | None, typer.Option(help="Memory per executor, e.g. 2g.")] = None,
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug lines.")] = False,
) -> None:
    """Train, evaluate and save a 3-level stacked ensemble."""
    from rstack.cluster.runtime import Runtime
    from rstack.training.driver import train as run_train

    _setup_logging(verbose)
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
    }
    # `ray job stop` and service managers send SIGTERM: stop as on Ctrl-C, leaving a resumable run.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        cfg = _runtime_config(config, overrides)
        # Threads for the Level-0 batches, the baselines, and control calls (cancel, release).
        runtime = Runtime(cfg.runtime, max_concurrency=cfg.level0.concurrency + len(cfg.eval.baselines) + 3)
        try:
            if walk_forward is not None:
                from rstack.training.walkforward import walk_forward as run_walk_forward

                if resume or run_id:
                    raise InputError("--walk-forward makes K new runs; it cannot be combined with --resume or --run-id")
                result = run_walk_forward(data_dir, models, cfg, runtime, walk_forward)
            else:
                result = run_train(data_dir, models, cfg, runtime, resume=resume, run_id=run_id)
        finally:
            runtime.stop()
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
    except RstackError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    m = result.manifest
    typer.echo(f"\nrun {m['run_id']} -> {result.run_dir}")
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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    data_dir: Annotated[str, typer.Argument(help="Data folder as the cluster's nodes see it (shared file system).")],
    models: Annotated[
        str, typer.Option("--models", "-m", help="Models folder all nodes reach (a shared path or file://).")
    ],
    address: Annotated[
        str,
        typer.Option(help="The cluster's Ray dashboard / job server.", envvar="RSTACK_JOB_ADDRESS"),
    ] = "http://127.0.0.1:8265",
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="YAML config, relative to the working dir.")
    ] = None,
    working_dir: Annotated[Path, typer.Option(help="Repository uploaded as the job's working_dir.")] = Path("."),
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the job, e.g. RSTACK_LEVEL0__CONCURRENCY=4.")
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: time + random).", show_default=False)] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job's log until it ends.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the job.")] = 6 * 3600,
) -> None:
    """Run `rstack train` on a Ray cluster with `ray job submit`; extra args go to `rstack train`."""
    from rstack.cluster.submit import build_job
    from rstack.cluster.submit import submit as submit_job
    from rstack.cluster.submit import wait as wait_job

    _setup_logging(False)
    try:
        pairs = dict(e.split("=", 1) for e in env or [] if "=" in e)
        if len(pairs) != len(env or []):
            raise InputError(f"--env takes KEY=VALUE, got {env}")
        job = build_job(data_dir, models, working_dir.resolve(), config, list(ctx.args), pairs, run_id, address)
        jobs = submit_job(address, job)
        typer.echo(f"job {job.submission_id} submitted; run {job.run_id} -> {models}")
        if wait:
            wait_job(jobs, job.submission_id, timeout)
            typer.echo(f"job {job.submission_id} SUCCEEDED")
    except RstackError as exc:
        raise _fail(exc) from None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _runtime_config(config: Path | None, overrides: dict[str, Any]) -> Any:
    from rstack.config import load_config

    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    return load_config(config, overrides)


@app.command()
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
    from rstack.training.runs import resolve_run

    _setup_logging(False)
    try:
        from rstack.reporting.report import summary_table, write_report

        run_dir = Path(run) if (Path(run) / "manifest.json").is_file() else resolve_run(models, run)
        if data is not None:
            from rstack.cluster.runtime import Runtime
            from rstack.data.discover import discover
            from rstack.models.bundle import Bundle
            from rstack.serving.evaluate import evaluate_new_data

            bundle = Bundle.open(run_dir)  # refuse a bad bundle before starting Spark
            target = (out or Path(f"evaluation-{bundle.manifest['run_id']}-{data.name}")).resolve()
            dataset = discover(data)
            cfg = _runtime_config(config, {"runtime.address": address})
            with Runtime(cfg.runtime, max_concurrency=3) as runtime:
                result = runtime.get(
                    runtime.call(evaluate_new_data, str(run_dir), dataset, str(target), name="evaluate")
                )
            typer.echo(
                f"run {result['run_id']} on {data}: {result['rows']} rows from {result['period_utc'][0]} to "
                f"{result['period_utc'][1]} -> {target}"
            )
            run_dir = target
        summary = write_report(run_dir)
    except RstackError as exc:
        raise _fail(exc) from None
    typer.echo(summary_table(summary))
    typer.echo(f"\nreport: {summary['html']}")


@runs_app.callback(invoke_without_command=True)
def runs_list(
    ctx: typer.Context,
    models: RunsFolder = Path("models"),
) -> None:
    """List the runs in MODELS as a leaderboard, ranked on validation (never test); test ROC-AUC shown."""
    if ctx.invoked_subcommand is not None:
        return
    from rstack.reporting.leaderboard import format_runs, list_runs

    rows = list_runs(models)
    if not rows:
        typer.echo(f"no runs in {models}; train one with `rstack train`", err=True)
        raise typer.Exit(2)
    latest = (models / "latest").resolve().name if (models / "latest").exists() else None
    typer.echo(format_runs(rows, latest))


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run id in MODELS (or latest).")] = "latest",
    models: RunsFolder = Path("models"),
) -> None:
    """Print one run: data, config changes, cutoffs, timings and its metrics table."""
    from rstack._io import load_manifest
    from rstack.reporting.leaderboard import config_diff
    from rstack.training.runs import resolve_run

    try:
        m = load_manifest(resolve_run(models, run))
    except RstackError as exc:
        raise _fail(exc) from None
    typer.echo(f"run {m['run_id']}  created {m['created_utc']}  resumed {bool(m.get('resumed'))}")
    typer.echo(f"data {m['data']['root']}: {m['data']['total_rows']} rows, sha256 {m['data']['sha256'][:12]}")
    diff = config_diff(m["config"])
    typer.echo("config vs default: " + (", ".join(f"{k}={v}" for k, v in diff.items()) or "default"))
    typer.echo("cutoffs: " + ", ".join(m["cutoffs"]["cutoffs_utc"]))
    typer.echo("rows by segment: " + ", ".join(f"{k} {v}" for k, v in m["rows_by_segment"].items()))
    typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in m["timings"].items() if "." not in k))
    typer.echo("")
    typer.echo(format_metrics(m["metrics"], m["config"]["eval"]["threshold"]))


@app.command()
def predict(
    data_dir: Annotated[Path, typer.Argument(help="Folder of kline Parquet files to score.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")] = Path("predictions.parquet"),
    run: Annotated[str, typer.Option(help="Run id in --models, or a run folder.")] = "latest",
    models: Annotated[Path, typer.Option("--models", "-m", help="Folder of runs.", envvar="RSTACK_MODELS")] = Path(
        "models"
    ),
    threshold: Annotated[float | None, typer.Option(help="Class threshold on L2; default: the run's.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML for the runtime section.", envvar="RSTACK_CONFIG")
    ] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address.", envvar="RAY_ADDRESS")] = None,
    dashboard: Annotated[bool | None, typer.Option("--dashboard/--no-dashboard", help="Ray dashboard.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug lines.")] = False,
) -> None:
    """Score klines with a saved run: every level's probability and the predicted class."""
    from rstack.cluster.runtime import Runtime
    from rstack.data.discover import discover
    from rstack.models.bundle import Bundle
    from rstack.serving.predict import predict_dir
    from rstack.training.runs import resolve_run

    _setup_logging(verbose)
    try:
        run_dir = Path(run) if (Path(run) / "manifest.json").is_file() else resolve_run(models, run)
        Bundle.open(run_dir)  # refuse a bad bundle before starting Spark
        dataset = discover(data_dir)
        cfg = _runtime_config(config, {"runtime.address": address, "runtime.dashboard": dashboard})
        with Runtime(cfg.runtime, max_concurrency=3) as runtime:
            summary = runtime.get(
                runtime.call(predict_dir, str(run_dir), dataset, str(out.resolve()), threshold, name="predict")
            )
    except RstackError as exc:
        raise _fail(exc) from None
    typer.echo(
        f"run {summary['run_id']}: {summary['rows_written']} rows -> {summary['out']} ({summary['seconds']:.1f}s)"
    )
    typer.echo(f"{'symbol':<14}{'scored':>9}{'warm-up':>9}{'invalid':>9}")
    for sym, c in sorted(summary["per_symbol"].items()):
        flag = ""
        if c.get("unknown_symbol"):
            flag = f"  (unknown at training time: no volatility scale, {c['unknown_symbol']} rows not scored)"
        elif sym in summary["unknown_symbols"]:
            flag = "  (unknown at training time)"
        typer.echo(f"{sym:<14}{c['ok']:>9}{c['warmup']:>9}{c['invalid']:>9}{flag}")
    # The same repairs and facts `rstack train` counts: nothing is dropped without a number.
    repaired: dict[str, int] = {}
    for own in summary["repairs"].values():
        for name, n in own.items():
            repaired[name] = repaired.get(name, 0) + n
    typer.echo(
        f"checks: {summary['duplicate_rows_removed']} exact duplicate rows removed, {summary['gaps']} gaps "
        f"({summary['missing_candles']} missing candles); repairs on scored rows: "
        + (", ".join(f"{k} {v}" for k, v in sorted(repaired.items())) or "none")
    )
    if summary.get("unknown_symbol_rows"):
        typer.echo(
            f"warning: {summary['unknown_symbol_rows']} rows of symbols the run was not trained on were not scored: "
            "its features are in units of each training symbol's own scale; retrain with those symbols included",
            err=True,
        )


@app.command()
def stream(
    watch_dir: Annotated[Path, typer.Argument(help="Folder where new kline Parquet files land.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for one predictions file per micro-batch.")],
    run: Annotated[str, typer.Option(help="Run id in --models, or a run folder.")] = "latest",
    models: Annotated[Path, typer.Option("--models", "-m", help="Folder of runs.", envvar="RSTACK_MODELS")] = Path(
        "models"
    ),
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint folder; default OUT/_checkpoint. Keep it to resume.")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Process the files present, then stop.")] = False,
    files_per_trigger: Annotated[int, typer.Option(help="Files per micro-batch.")] = 1,
    trigger_seconds: Annotated[float, typer.Option(help="Seconds between micro-batches.")] = 1.0,
    threshold: Annotated[float | None, typer.Option(help="Class threshold on L2; default: the run's.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML for the runtime section.", envvar="RSTACK_CONFIG")
    ] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address.", envvar="RAY_ADDRESS")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug lines.")] = False,
) -> None:
    """Score new kline files as they land (Spark Structured Streaming), until Ctrl-C or --once."""
    from rstack.cluster.runtime import Runtime
    from rstack.models.bundle import Bundle
    from rstack.serving.stream import stream_dir
    from rstack.training.runs import resolve_run

    _setup_logging(verbose)
    try:
        run_dir = Path(run) if (Path(run) / "manifest.json").is_file() else resolve_run(models, run)
        Bundle.open(run_dir)
        if not watch_dir.is_dir():
            raise InputError(f"watch folder {watch_dir} does not exist; create it or pass another")
        ckpt = checkpoint or out / "_checkpoint"
        cfg = _runtime_config(config, {"runtime.address": address})
        with Runtime(cfg.runtime, max_concurrency=3) as runtime:
            summary = runtime.get(
                runtime.call(
                    stream_dir,
                    str(run_dir),
                    str(watch_dir.resolve()),
                    str(out.resolve()),
                    str(ckpt.resolve()),
                    once,
                    files_per_trigger,
                    trigger_seconds,
                    threshold,
                    name="stream",
                )
            )
    except RstackError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        typer.echo("stopped; run the same command again to resume from the checkpoint", err=True)
        raise typer.Exit(130) from None
    rows = sum(b["scored"] for b in summary["batches"])
    typer.echo(f"run {summary['run_id']}: {len(summary['batches'])} micro-batches, {rows} rows scored -> {out}")
    skipped: dict[str, int] = {}
    for b in summary["batches"]:
        for why, n in b["skipped_rows"].items():
            skipped[why] = skipped.get(why, 0) + n
    duplicates = sum(b["duplicate_rows_removed"] for b in summary["batches"])
    unknown = sum(b.get("unknown_symbol", 0) for b in summary["batches"])
    if skipped or duplicates or unknown:
        parts = [f"{n} {why}" for why, n in sorted(skipped.items())]
        typer.echo(
            f"skipped rows by reason: {', '.join(parts) or 'none'}; {duplicates} exact duplicate row(s) removed; "
            f"{unknown} row(s) of symbols the run was not trained on; per batch and file in "
            f"{ckpt / 'lookback'}/stats-*.json",
            err=True,
        )


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write one Parquet file per symbol into.")],
    symbols: Annotated[int, typer.Option(help="Number of symbols.")] = 12,
    rows: Annotated[int, typer.Option(help="Candles per symbol.")] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 7,
    interval: Annotated[str, typer.Option(help="Candle interval: 1m, 5m, 15m, 1h, 4h.")] = "1h",
) -> None:
    """Write synthetic klines (GARCH volatility clustering, fat tails) in rstack's layout."""
    from rstack.data.synth import write_synthetic

    try:
        paths = write_synthetic(out, symbols=symbols, rows=rows, seed=seed, interval=interval)
    except RstackError as exc:
        raise _fail(exc) from None
    typer.echo(f"wrote {len(paths)} files x {rows} rows to {out}")


def _ms(ms: int | None) -> str:
    from rstack._io import UTC_MINUTES, utc_text

    return "-" if ms is None else utc_text(ms, UTC_MINUTES)


@data_app.command("import")
def import_(
    sources: Annotated[list[Path], typer.Argument(help="Kline .zip/.csv archives, or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for one Parquet file per symbol.")],
    symbol: Annotated[str | None, typer.Option(help="Symbol, when file names do not carry it.")] = None,
    interval: Annotated[str | None, typer.Option(help="Interval, when file names do not carry it.")] = None,
) -> None:
    """Import Binance kline archives (as published on data.binance.vision) into rstack's layout."""
    from rstack.data.binance import import_archives

    files = [
        p
        for src in sources
        for p in ([src] if src.is_file() else sorted(src.rglob("*")))
        if p.suffix in (".zip", ".csv")
    ]
    try:
        with typer.progressbar(length=max(len(files), 1), label="importing", file=sys.stderr) as bar:
            summary = import_archives(sources, out, symbol, interval, progress=lambda _p: bar.update(1))
    except RstackError as exc:
        raise _fail(exc) from None
    typer.echo(f"{summary.files} archives -> {len(summary.symbols)} symbols, {summary.rows} rows in {out}")
    for sym, s in summary.symbols.items():
        typer.echo(
            f"  {sym:<14}{s['rows']:>10}  {_ms(s['first_ms'])} .. {_ms(s['last_ms'])}  {','.join(s['intervals'])}"
        )
    for key, count in sorted(summary.repairs.items()):
        typer.echo(f"  repair/check: {key} = {count}")


@data_app.command("download")
def download_(
    out: Annotated[Path, typer.Argument(help="Folder for the imported Parquet files.")],
    symbols: Annotated[str, typer.Option(help="Comma-separated, e.g. BTCUSDT,ETHUSDT.")],
    start: Annotated[str, typer.Option(help="First month, YYYY-MM.")],
    end: Annotated[str, typer.Option(help="Last month, YYYY-MM.")],
    interval: Annotated[str, typer.Option(help="Kline interval, e.g. 1m, 5m, 1h.")] = "1h",
    market: Annotated[str, typer.Option(help="spot or futures-um.")] = "spot",
    base_url: Annotated[str, typer.Option(help="Archive site.", envvar="RSTACK_BINANCE_URL")] = (
        "https://data.binance.vision"
    ),
    archives: Annotated[Path | None, typer.Option(help="Where archives are kept; default OUT/_archives.")] = None,
    retries: Annotated[int, typer.Option(help="Retries per file, with exponential backoff.")] = 3,
) -> None:
    """Download monthly kline archives with their checksums, verify them, then import."""
    from rstack.data.binance import import_archives
    from rstack.data.download import download

    _setup_logging(False)
    keep = archives or out / "_archives"
    try:
        result = download(
            [s.strip() for s in symbols.split(",") if s.strip()],
            interval,
            start,
            end,
            keep,
            market=market,
            base_url=base_url,
            retries=retries,
            progress=lambda name: typer.echo(f"  fetched {name}", err=True),
        )
        if not result.fetched and not result.skipped_verified:
            raise InputError(f"no archive found for {symbols} {interval} {start}..{end} on {base_url} ({market})")
        summary = import_archives([keep], out)
    except RstackError as exc:
        raise _fail(exc) from None
    typer.echo(
        f"fetched {len(result.fetched)}, already verified {len(result.skipped_verified)}, "
        f"missing {len(result.missing)}{': ' + ', '.join(result.missing) if result.missing else ''}"
    )
    typer.echo(f"imported {summary.rows} rows of {len(summary.symbols)} symbols into {out}")


@data_app.command("check")
def check(data_dir: Annotated[Path, typer.Argument(help="Folder of kline Parquet files.")]) -> None:
    """Per-symbol health by training's own row rules: rows, range, the folder's interval, gaps,
    duplicates, zero volume, bad values. Exit 2 when a symbol would fail training (non-finite or
    non-positive prices, inconsistent OHLC, negative volume, conflicting duplicates, steps off the
    folder's interval)."""
    from rstack.data.check import check_dir
    from rstack.data.rules import interval_name

    try:
        stats = check_dir(data_dir)
    except RstackError as exc:
        raise _fail(exc) from None
    head = (
        f"{'symbol':<14}{'rows':>9}  {'first':<16}  {'last':<16}{'step':>7}{'gaps':>6}{'missing':>8}"
        f"{'dups':>6}{'conflict':>9}{'off_grid':>9}{'unsorted':>9}{'zero_vol':>9}{'bad':>6}"
    )
    typer.echo(head)
    for sym, s in stats.items():
        step = interval_name(s["interval_ms"]) if s["interval_ms"] else "-"
        typer.echo(
            f"{sym:<14}{s['rows']:>9}  {_ms(s['first_ms']):<16}  {_ms(s['last_ms']):<16}{step:>7}"
            f"{s['gaps']:>6}{s['missing_candles']:>8}{s['duplicate_rows']:>6}{s['conflicting_duplicates']:>9}"
            f"{s['off_grid_steps']:>9}{s['unsorted_steps']:>9}{s['zero_volume']:>9}{s['bad']:>6}"
        )
    bad = [sym for sym, s in stats.items() if s["bad"]]
    if bad:
        typer.echo(f"error: rows training would refuse in {', '.join(bad)}; see the columns above", err=True)
        raise typer.Exit(2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
