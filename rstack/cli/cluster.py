"""``rstack submit``: the same training as a Ray job on a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rstack.cli.common import fail, setup_logging
from rstack.errors import InputError, RstackError


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

    setup_logging(False)
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
        raise fail(exc) from None
