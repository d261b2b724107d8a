"""``rstack runs``: the leaderboard of a models folder, and one run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rstack.cli.common import RunsFolder, fail
from rstack.errors import RstackError
from rstack.reporting.tables import format_metrics

runs_app = typer.Typer(help="List and show the runs in a models folder.")


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
        raise fail(exc) from None
    typer.echo(f"run {m['run_id']}  created {m['created_utc']}  resumed {bool(m.get('resumed'))}")
    typer.echo(f"data {m['data']['root']}: {m['data']['total_rows']} rows, sha256 {m['data']['sha256'][:12]}")
    diff = config_diff(m["config"])
    typer.echo("config vs default: " + (", ".join(f"{k}={v}" for k, v in diff.items()) or "default"))
    typer.echo("cutoffs: " + ", ".join(m["cutoffs"]["cutoffs_utc"]))
    typer.echo("rows by segment: " + ", ".join(f"{k} {v}" for k, v in m["rows_by_segment"].items()))
    typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in m["timings"].items() if "." not in k))
    typer.echo("")
    typer.echo(format_metrics(m["metrics"], m["config"]["eval"]["threshold"]))
