"""``rstack predict`` and ``rstack stream``: score klines with a saved run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rstack.cli.common import RayAddress, RuntimeYaml, Verbose, fail, run_folder, runtime_config, setup_logging
from rstack.errors import InputError, RstackError


def predict(
    data_dir: Annotated[Path, typer.Argument(help="Folder of kline Parquet files to score.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")] = Path("predictions.parquet"),
    run: Annotated[str, typer.Option(help="Run id in --models, or a run folder.")] = "latest",
    models: Annotated[Path, typer.Option("--models", "-m", help="Folder of runs.", envvar="RSTACK_MODELS")] = Path(
        "models"
    ),
    threshold: Annotated[float | None, typer.Option(help="Class threshold on L2; default: the run's.")] = None,
    config: RuntimeYaml = None,
    address: RayAddress = None,
    dashboard: Annotated[bool | None, typer.Option("--dashboard/--no-dashboard", help="Ray dashboard.")] = None,
    verbose: Verbose = False,
) -> None:
    """Score klines with a saved run: every level's probability and the predicted class."""
    from rstack.cluster.runtime import Runtime
    from rstack.data.discover import discover
    from rstack.models.bundle import Bundle
    from rstack.serving.predict import predict_dir

    setup_logging(verbose)
    try:
        run_dir = run_folder(models, run)
        Bundle.open(run_dir)  # refuse a bad bundle before starting Spark
        dataset = discover(data_dir)
        cfg = runtime_config(config, {"runtime.address": address, "runtime.dashboard": dashboard})
        with Runtime(cfg.runtime, max_concurrency=3) as runtime:
            summary = runtime.get(
                runtime.call(predict_dir, str(run_dir), dataset, str(out.resolve()), threshold, name="predict")
            )
    except RstackError as exc:
        raise fail(exc) from None
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
    config: RuntimeYaml = None,
    address: RayAddress = None,
    verbose: Verbose = False,
) -> None:
    """Score new kline files as they land (Spark Structured Streaming), until Ctrl-C or --once."""
    from rstack.cluster.runtime import Runtime
    from rstack.models.bundle import Bundle
    from rstack.serving.stream import stream_dir

    setup_logging(verbose)
    try:
        run_dir = run_folder(models, run)
        Bundle.open(run_dir)
        if not watch_dir.is_dir():
            raise InputError(f"watch folder {watch_dir} does not exist; create it or pass another")
        ckpt = checkpoint or out / "_checkpoint"
        cfg = runtime_config(config, {"runtime.address": address})
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
        raise fail(exc) from None
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
