from __future__ import annotations

import itertools

import numpy as np
import pytest

from rstack.models.metrics import EPS, average_precision, brier, confusion, log_loss, roc_auc


def brute_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_pair_counting_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60).astype(float)
    p = np.round(rng.random(60) + 0.3 * y, 1)  # rounding makes many ties
    assert roc_auc(y, p) == pytest.approx(brute_auc(y, p), abs=1e-12)


def test_average_precision_by_hand() -> None:
    # Ranked: 0.9(1) 0.8(0) 0.7(1) 0.1(0): precision at the two recalls = 1 and 2/3.
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.7, 0.1])
    assert average_precision(y, p) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_perfect_and_constant_scores() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.full(4, 0.5)) == 0.5
    assert average_precision(y, np.full(4, 0.5)) == 0.5
    assert np.isnan(roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])))


def test_log_loss_brier_confusion() -> None:
    y = np.array([1, 0])
    p = np.array([0.8, 0.4])
    assert log_loss(y, p) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert brier(y, p) == pytest.approx((0.04 + 0.16) / 2)
    assert confusion(y, p, 0.5) == {"tp": 1, "fp": 0, "tn": 1, "fn": 0}
    assert np.isfinite(log_loss(np.array([1]), np.array([0.0])))


def tied_scores(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and scores rounded to 2 decimals (many ties), with some exact 0 and 1 like a forest's."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    p = np.clip(np.round(rng.random(n) * 0.8 + 0.2 * y, 2), 0, 1)
    p[rng.random(n) < 0.02] = 0.0
    p[rng.random(n) < 0.02] = 1.0
    return y, p


def step_average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision as rstack computed it by hand before scikit-learn: at each distinct score, highest
    first, the precision times the recall gained."""
    total, pos, prev_recall = 0.0, y.sum(), 0.0
    for t in np.unique(p)[::-1]:
        pred = p >= t
        tp = float((pred & (y == 1)).sum())
        total += (tp / pos - prev_recall) * tp / pred.sum()
        prev_recall = tp / pos
    return total


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_ranking_metrics_keep_their_definitions_on_ties(seed: int) -> None:
    # The manifests' figures must not change: ROC-AUC is the pair count, PR-AUC the step sum (not a trapezoid).
    y, p = tied_scores(seed)
    pos, neg = p[y == 1], p[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, p) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)
    assert average_precision(y, p) == pytest.approx(step_average_precision(y, p), abs=1e-12)


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_hand_written_metrics_match_sklearn_on_ties(seed: int) -> None:
    from sklearn.metrics import brier_score_loss, confusion_matrix
    from sklearn.metrics import log_loss as sklearn_log_loss

    y, p = tied_scores(seed)
    # sklearn clips at machine epsilon, rstack at EPS: on pre-clipped scores the two definitions coincide.
    assert log_loss(y, p) == pytest.approx(sklearn_log_loss(y, np.clip(p, EPS, 1 - EPS)), abs=1e-12)
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    for threshold in (0.0, 0.35, 0.5, 1.0):  # on tied values, so ">=" is what is tested
        tn, fp, fn, tp = confusion_matrix(y == 1, p >= threshold, labels=[False, True]).ravel()
        assert confusion(y, p, threshold) == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def test_log_loss_clips_at_eps_not_machine_epsilon() -> None:
    # A confident miss costs -log(1e-15), the figure older manifests hold, not sklearn's -log(2.2e-16).
    assert log_loss(np.array([1.0]), np.array([0.0])) == pytest.approx(-np.log(EPS), rel=1e-12)


def test_one_label_class_gives_nan_not_an_error() -> None:
    p = np.array([0.2, 0.4, 0.6])
    assert np.isnan(roc_auc(np.zeros(3), p))
    assert np.isnan(average_precision(np.zeros(3), p))
    assert average_precision(np.ones(3), p) == 1.0
    assert np.isnan(roc_auc(np.array([]), np.array([])))
