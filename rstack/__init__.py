"""rstack: leakage-safe stacked ensembles for market data, Spark on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rstack.errors import ConfigError, InputError, RstackError, RuntimeStartError, TrainingError

__version__ = "0.1.0"


def load(run_dir: str | Path) -> Bundle:
    """Open and verify a saved run; ``rstack.load("models/latest").predict(klines_df)``."""
    from rstack.models.bundle import Bundle

    return Bundle.open(run_dir)


if TYPE_CHECKING:
    from rstack.models.bundle import Bundle

__all__ = [
    "load",
    "ConfigError",
    "InputError",
    "RstackError",
    "RuntimeStartError",
    "TrainingError",
    "__version__",
]
