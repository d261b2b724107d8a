from __future__ import annotations

import itertools

import numpy as np
import pytest

from rstack.models.metrics import average_precision, brier, confusion, log_loss, roc_auc


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
