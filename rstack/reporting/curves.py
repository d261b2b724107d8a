"""What the report draws and decides from scores: ROC, precision-recall and reliability points (scikit-learn),
the F1-best threshold, and the verdict on whether the stack beats its baselines."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from rstack.models.metrics import finite
from rstack.reporting.names import ordered_models

CALIBRATION_BINS = 10


def _both_classes(y: np.ndarray) -> bool:
    return bool((y == 1).any() and (y == 0).any())


def roc_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) from (0, 0) through every distinct threshold."""
    if not _both_classes(y):
        # One label class has no ROC curve (one rate is 0/0); draw nothing rather than sklearn's NaN and warning.
        return np.empty(0), np.empty(0)
    # Every distinct threshold, not only the corners sklearn keeps by default: the same line, the same PNG.
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    return fpr, tpr


def pr_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) by decreasing recall, ending at sklearn's (0, 1). Drawn ``steps-post``, each
    precision spans its own recall step, so the area under the steps is the average precision."""
    if not (y == 1).any():
        # No positive: recall is 0/0; draw nothing rather than sklearn's recall-1 stand-in and warning.
        return np.empty(0), np.empty(0)
    precision, recall, _ = precision_recall_curve(y, p)
    return recall, precision


def calibration_bins(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean prediction, observed positive rate) per non-empty equal-width bin on [0, 1]. A score on a
    bin edge (e.g. exactly 0.5) falls in the lower bin, scikit-learn's convention."""
    if len(y) == 0:
        return np.empty(0), np.empty(0)  # sklearn refuses empty input; a plot simply draws nothing
    rate, mean_p = calibration_curve(y, p, n_bins=CALIBRATION_BINS, strategy="uniform")
    return mean_p, rate


def f1_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float] | None:
    """(threshold, F1) maximising F1 for the rule ``p >= threshold``; ties go to the higher threshold."""
    pos = float((y == 1).sum())
    if len(y) == 0 or pos == 0:
        return None
    precision, recall, thresholds = precision_recall_curve(y, p)
    # The last point, (recall 0, precision 1), is sklearn's end marker and has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    # Back to whole counts: F1 from float precision and recall can split an exact tie by one ulp and pick
    # the lower threshold (sklearn's own per-threshold counts need scikit-learn 1.8, hence Python 3.11+).
    tp = np.rint(recall * pos)
    predicted = np.rint(np.divide(tp, precision, out=np.zeros_like(tp), where=tp > 0))
    f1 = 2 * tp / (predicted + pos)
    # Thresholds ascend, so the last maximum is the highest threshold among equals.
    best = len(f1) - 1 - int(np.argmax(f1[::-1]))
    return float(thresholds[best]), float(f1[best])


def f1_of(c: dict[str, int]) -> float:
    """F1 of a confusion dict (tp, fp, tn, fn); NaN when there is no positive, predicted or true.

    From the counts the panel already shows; sklearn's f1_score would need the rows again.
    """
    denom = 2 * c["tp"] + c["fp"] + c["fn"]
    return 2 * c["tp"] / denom if denom else float("nan")


def verdict(metrics: dict[str, dict[str, Any]]) -> tuple[str, bool | None, str | None]:
    """(sentence, whether level2 beats every baseline on test ROC-AUC, best baseline name).

    Strictly greater is required: a tie with a baseline means the stack added nothing.
    """
    l2 = finite(metrics.get("level2", {}).get("roc_auc"))
    baselines = {
        name: auc
        for name in ordered_models(metrics)
        if name.startswith("baseline_") and (auc := finite(metrics[name].get("roc_auc"))) is not None
    }
    if l2 is None:
        return "No verdict: level2 has no test ROC-AUC in the manifest (one-class test segment?).", None, None
    if not baselines:
        return "No verdict: the manifest's metrics hold no baseline with a test ROC-AUC.", None, None
    best = max(baselines, key=lambda n: baselines[n])
    b = baselines[best]
    margin = l2 - b
    if l2 > b:
        sentence = (
            f"The stack beats every baseline on test ROC-AUC: {l2:.4f} vs {b:.4f} for the best, {best} "
            f"(margin {margin:+.4f})."
        )
        return sentence, True, best
    return f"The stack does NOT beat {best}: {l2:.4f} vs {b:.4f} test ROC-AUC (margin {margin:+.4f}).", False, best
