"""``rstack tune``: search configs with Ray Tune on folds before the test segment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import rstack
from rstack.cli.common import DEFAULT_CONFIG, RayAddress, Verbose, fail, runtime_config, setup_logging
from rstack.errors import RstackError


def tune(
    data_dir: Annotated[Path, typer.Argument(help="Folder of kline Parquet files, as for rstack train.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for trials.csv, best.yaml and the trials' runs.")],
    trials: Annotated[int, typer.Option(help="Configs to try, the base config's own first.")] = 8,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Base YAML config the trials change; defaults to configs/laptop.yaml."),
    ] = None,
    search: Annotated[str, typer.Option(help="random (the same --seed draws the same trials) or optuna.")] = "random",
    concurrency: Annotated[
        int, typer.Option(help="Trials at once, sharing the one Spark application (more pays with more cores).")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the search.")] = 0,
    folds: Annotated[
        int, typer.Option(help="Walk-forward folds K; trials train folds 1..K-1, which end before the test segment.")
    ] = 3,
    space: Annotated[
        Path | None,
        typer.Option(
            help="YAML search space: each key a list of choices or {low, high, log}; default: rstack's built-in one."
        ),
    ] = None,
    mlflow: Annotated[
        str | None, typer.Option(help="MLflow tracking URI: log the study, each trial a child run.", show_default=False)
    ] = None,
    address: RayAddress = None,
    verbose: Verbose = False,
) -> None:
    """Tune the stack's config with Ray Tune; the test segment is never read."""
    setup_logging(verbose)
    try:
        cfg = runtime_config(config, {"runtime.address": address, "tracking.uri": mlflow})
        result = rstack.tune(
            data_dir,
            out,
            cfg,
            trials=trials,
            search=search,
            concurrency=concurrency,
            seed=seed,
            folds=folds,
            space=space,
            config_path=config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None),
        )
    except RstackError as exc:
        raise fail(exc) from None
    ranked = sorted(result.rows, key=lambda r: (r["status"] != "complete", -(r["mean_auc"] or 0.0)))
    typer.echo(f"\n{len(result.rows)} trials, validation ROC-AUC (mean of {folds - 1} folds before the test segment):")
    for r in ranked:
        score = "-" if r["mean_auc"] is None else f"{r['mean_auc']:.4f}"
        typer.echo(f"  {r['trial']:<14} {r['source']:<7} {r['status']:<14} {score:>7}  {r['error'][:100]}")
    typer.echo(f"table: {result.out / 'trials.csv'}")
    if result.best is None:
        typer.echo("no trial scored every fold; see the error column", err=True)
        raise typer.Exit(1)
    base = result.base
    against = "" if base is None or base["mean_auc"] is None else f", the base config {base['mean_auc']:.4f}"
    if base is not None and base["status"] != "complete":
        against += f" ({base['status']}, {base['folds']} of {folds - 1} folds)"
    typer.echo(f"best: {result.best['trial']} ({result.best['mean_auc']:.4f}{against}); train it with:")
    typer.echo(f"  {result.command}")
    if result.tracking_error is not None:
        raise fail(result.tracking_error)
