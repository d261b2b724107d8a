"""The ``rstack`` command. Thin: parse, build the config once, call the library, map errors to exit codes.

Exit codes: 0 success, 1 runtime failure, 2 bad input or usage. One module per command group; this
one only assembles them.
"""

from __future__ import annotations

import typer

from rstack.cli import cluster, export, serve, train, tune
from rstack.cli.data import data_app
from rstack.cli.runs import runs_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Leakage-safe stacked ensembles, Spark on Ray.")
app.command()(train.train)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(cluster.submit)
app.command()(train.evaluate)
app.command()(serve.predict)
app.command()(serve.stream)
app.command()(export.export)
app.command()(tune.tune)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
