"""Model names in a run's metrics: which predictions column holds each, and the order tables and plots use."""

from __future__ import annotations

from collections.abc import Iterable

# The trailing-volatility baseline is stored under its historical column name (rstack/features/table.py).
TRAILING_VOL = "baseline_trailing_vol"
TRAILING_VOL_COL = "baseline_p"

# What kind of model a metrics entry is; the order is the order of tables and legends.
LEVEL2, LEVEL1, LEVEL0, BASELINE, OTHER = range(5)


def column_for(model: str) -> str:
    """The predictions column that holds a metrics entry's probabilities."""
    if model == "level2":
        return "l2"
    if model == "level1":
        return "l1"
    if model.startswith("batch_"):
        return f"l0_{model}"
    if model == TRAILING_VOL:
        return TRAILING_VOL_COL
    return model


def model_kind(model: str) -> int:
    """LEVEL2, LEVEL1, LEVEL0 (a batch), BASELINE or OTHER."""
    if model == "level2":
        return LEVEL2
    if model == "level1":
        return LEVEL1
    if model.startswith("batch_"):
        return LEVEL0
    if model.startswith("baseline_"):
        return BASELINE
    return OTHER


def ordered_models(names: Iterable[str]) -> list[str]:
    """Stack first (L2, L1, L0 batches), then baselines with trailing volatility leading, then the rest."""
    return sorted(names, key=lambda n: (model_kind(n), n != TRAILING_VOL, n))
