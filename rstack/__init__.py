"""rstack: leakage-safe stacked ensembles for market data, Spark on Ray."""

from rstack.errors import ConfigError, InputError, RstackError, RuntimeStartError, TrainingError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InputError",
    "RstackError",
    "RuntimeStartError",
    "TrainingError",
    "__version__",
]
