"""What the command modules share: logging to the console, error to exit code, the config, run lookup."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rstack.errors import RstackError

# The --models option of the commands that read runs (evaluate, runs, runs show).
RunsFolder = Annotated[Path, typer.Option("--models", "-m", help="Folder holding the runs.", envvar="RSTACK_MODELS")]
# The options every command that starts Spark shares (predict, stream, export).
RuntimeYaml = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML for the runtime section.", envvar="RSTACK_CONFIG")
]
RayAddress = Annotated[str | None, typer.Option(help="Ray cluster address.", envvar="RAY_ADDRESS")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show debug lines.")]

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "laptop.yaml"


class _Console(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time: a test runner swaps (and closes) it per call."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(verbose: bool) -> None:
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


def fail(exc: RstackError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exc.exit_code)


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def runtime_config(config: Path | None, overrides: dict[str, Any]) -> Any:
    from rstack.config import load_config

    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    return load_config(config, overrides)


def run_folder(models: Path, run: str) -> Path:
    """``run`` as a run folder itself, or as a run id (or ``latest``) in ``models``."""
    from rstack._io import MANIFEST
    from rstack.training.runs import resolve_run

    return Path(run) if (Path(run) / MANIFEST).is_file() else resolve_run(models, run)


def utc_minutes(ms: int | None) -> str:
    from rstack._io import UTC_MINUTES, utc_text

    return "-" if ms is None else utc_text(ms, UTC_MINUTES)
