"""``rstack export``: a saved run in another project's layout (the seed's, for its own loading code)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rstack.cli.common import (
    RayAddress,
    RunsFolder,
    RuntimeYaml,
    Verbose,
    fail,
    run_folder,
    runtime_config,
    setup_logging,
)
from rstack.errors import RstackError


def export(
    run: Annotated[str, typer.Argument(help="Run id in --models (or latest), or a run folder.")],
    out: Annotated[Path, typer.Argument(help="Folder to create; the models go to OUT/models/.")],
    layout: Annotated[str, typer.Option(help="Layout to write: seed (bare Spark ML models, features.json).")] = "seed",
    models: RunsFolder = Path("models"),
    config: RuntimeYaml = None,
    address: RayAddress = None,
    verbose: Verbose = False,
) -> None:
    """Write RUN so that the seed's loaders read it: OUT/models/level0_batch_0, level1_model, level2_model."""
    from rstack.cluster.runtime import Runtime
    from rstack.serving.export import check_exportable, export_seed

    setup_logging(verbose)
    try:
        run_dir = run_folder(models, run)
        check_exportable(run_dir, layout, out)  # refuse before starting Spark
        cfg = runtime_config(config, {"runtime.address": address, "runtime.dashboard": False})
        with Runtime(cfg.runtime, max_concurrency=2) as runtime:
            index = runtime.get(runtime.call(export_seed, str(run_dir), str(out.resolve()), name="export"))
    except RstackError as exc:
        raise fail(exc) from None
    typer.echo(f"run {index['run_id']} -> {out}/models ({len(index['models'])} models, features.json)")
    for name, entry in index["models"].items():
        typer.echo(f"  {name:<18} {entry['class']:<40} {len(entry['inputs'])} inputs -> {entry['output']}")
