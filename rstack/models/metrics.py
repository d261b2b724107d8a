"""Binary classification metrics, computed the same way for every level and baseline.

The ranking metrics (ROC-AUC, average precision) are scikit-learn's; the rest are numpy one-liners (see each).
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-15


def finite(value: Any) -> float | None:
    """A metric as a float, or None when missing, not a number or NaN (manifests write NaN as null; a
    NaN ROC-AUC, from one label class, would sort arbitrarily and poison a mean)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _has(y: np.ndarray, label: int) -> bool:
    return bool((y == label).any())


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve, tied scores counting one half (the Mann-Whitney statistic); NaN when the
    labels hold one class only, where scikit-learn would raise."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if not (_has(y, 1) and _has(y, 0)):
        return float("nan")
    # Imported here: sklearn.metrics takes seconds to import, and `rstack runs` reaches this module for finite().
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the precision-recall curve as the step sum over distinct thresholds (average precision,
    not the trapezoid, which overstates it); NaN without a positive label."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if not _has(y, 1):
        return float("nan")
    # Imported here for the same reason as in roc_auc.
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood, probabilities clipped to [EPS, 1 - EPS].

    Hand-written, not sklearn.metrics.log_loss: recent scikit-learn clips at the float's machine epsilon
    (2.2e-16) with no way to ask for 1e-15, so a forest's exact 0 or 1 would give another figure than the
    manifests hold; it is also 15-20x slower on 1e6 rows. tests/test_metrics.py cross-checks the two on
    pre-clipped scores.
    """
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the probabilities; a one-liner ~30x faster than sklearn's brier_score_loss,
    which tests/test_metrics.py checks it against."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    return float(np.mean((p - y) ** 2))


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts of the rule ``p >= threshold``; four sums ~40x faster than sklearn's confusion_matrix, which
    tests/test_metrics.py checks them against."""
    y = np.asarray(y, dtype=float) == 1
    pred = np.asarray(p, dtype=float) >= threshold
    return {
        "tp": int((pred & y).sum()),
        "fp": int((pred & ~y).sum()),
        "tn": int((~pred & ~y).sum()),
        "fn": int((~pred & y).sum()),
    }


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    y = np.asarray(y, dtype=float)
    return {
        "roc_auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "confusion": confusion(y, p, threshold),
        "rows": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
    }
