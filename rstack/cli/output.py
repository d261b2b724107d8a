"""Tables the commands print."""

from __future__ import annotations

from typing import Any


def format_metrics(metrics: dict[str, dict[str, Any]], threshold: float) -> str:
    """The metrics table; the confusion counts are at the run's ``eval.threshold``."""
    head = (
        f"{'model':<24}{'ROC-AUC':>9}{'PR-AUC':>9}{'logloss':>9}{'Brier':>8}{'rows':>9}{'pos%':>7}"
        f"   tp/fp/tn/fn @{threshold:g}"
    )
    lines = [head, "-" * len(head)]
    for name, m in metrics.items():
        c = m["confusion"]
        lines.append(
            f"{name:<24}{m['roc_auc']:>9.4f}{m['pr_auc']:>9.4f}{m['log_loss']:>9.4f}{m['brier']:>8.4f}"
            f"{m['rows']:>9d}{100 * m['positive_rate']:>7.1f}   {c['tp']}/{c['fp']}/{c['tn']}/{c['fn']}"
        )
    return "\n".join(lines)
