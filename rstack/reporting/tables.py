"""The metrics table, one definition for every place that shows it: the HTML report and the command line.

A metrics entry is what rstack.models.metrics.evaluate returns (and the manifest stores): roc_auc, pr_auc,
log_loss, brier, rows, positive_rate and the confusion counts at the run's ``eval.threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rstack.models.metrics import finite

# Width of the model-name column in the command-line table.
MODEL_WIDTH = 24
# The figure columns after the model name: (HTML header, command-line header, command-line width).
METRIC_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("ROC-AUC", "ROC-AUC", 9),
    ("PR-AUC", "PR-AUC", 9),
    ("log loss", "logloss", 9),
    ("Brier", "Brier", 8),
    ("rows", "rows", 9),
    ("pos %", "pos%", 7),
)
# The command line sets the confusion counts apart from the figures, unpadded, after this gap.
CONFUSION_GAP = "   "


def fmt(value: Any, digits: int = 4) -> str:
    """A figure to ``digits`` decimals, or "n/a" when missing or NaN (the manifest writes NaN as null)."""
    f = finite(value)
    return "n/a" if f is None else f"{f:.{digits}f}"


def confusion_head(threshold: float) -> str:
    """The confusion column's header, naming the threshold its counts use."""
    return f"tp/fp/tn/fn @{threshold:g}"


def metrics_head(threshold: float) -> list[str]:
    """The HTML table's header row."""
    return ["model", *(html for html, _, _ in METRIC_COLUMNS), confusion_head(threshold)]


def metrics_row(name: str, m: dict[str, Any]) -> list[str]:
    """One model's cells: name, the METRIC_COLUMNS figures, then the confusion counts as tp/fp/tn/fn."""
    m = m or {}
    c = m.get("confusion") or {}
    pos = finite(m.get("positive_rate"))
    return [
        name,
        fmt(m.get("roc_auc")),
        fmt(m.get("pr_auc")),
        fmt(m.get("log_loss")),
        fmt(m.get("brier")),
        str(m.get("rows", "n/a")),
        "n/a" if pos is None else f"{100 * pos:.1f}",
        "/".join(str(c.get(k, "?")) for k in ("tp", "fp", "tn", "fn")),
    ]


def text_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """The first cell left-aligned in its width (a name), the others right-aligned in theirs (figures)."""
    first, *rest = cells
    return f"{first:<{widths[0]}}" + "".join(f"{c:>{w}}" for c, w in zip(rest, widths[1:], strict=True))


def format_metrics(metrics: dict[str, dict[str, Any]], threshold: float) -> str:
    """The command-line metrics table, models in the given order; the confusion counts are at ``threshold``."""
    widths = [MODEL_WIDTH, *(width for _, _, width in METRIC_COLUMNS)]
    head = text_line(["model", *(text for _, text, _ in METRIC_COLUMNS)], widths)
    head += CONFUSION_GAP + confusion_head(threshold)
    lines = [head, "-" * len(head)]
    for name, m in metrics.items():
        *cells, counts = metrics_row(name, m)
        lines.append(text_line(cells, widths) + CONFUSION_GAP + counts)
    return "\n".join(lines)
