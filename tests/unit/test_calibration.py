"""Calibrated scores: the calibrator, the expected calibration error and the threshold for a target precision,
on synthetic scores whose miscalibration is known."""

from __future__ import annotations

import numpy as np
import pytest

from nlpbatch import calibration


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores s whose predictions are right with probability s**3 (overconfident, as NER entity scores are)."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.3, 1.0, n)
    return scores, rng.uniform(size=n) < scores**3


def reference_ece(scores, correct, bins=10):
    """A few-line ECE written apart from the library's: equal-width bins, the last one closed at 1."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(s, c) for s, c in zip(scores, correct) if lo <= s < hi or (b == bins - 1 and s == 1.0)]
        if inside:
            conf = sum(s for s, _ in inside) / len(inside)
            acc = sum(c for _, c in inside) / len(inside)
            total += len(inside) / len(scores) * abs(acc - conf)
    return total


def test_ece_equals_an_independent_reference():
    scores, correct = _overconfident(3000, 0)
    scores = np.append(scores, [0.0, 1.0, 0.1, 0.2])  # bin edges too
    correct = np.append(correct, [False, True, False, True])
    assert calibration.ece(scores, correct) == pytest.approx(reference_ece(scores, correct), abs=1e-12)
    assert calibration.ece(np.full(10, 0.7), np.arange(10) < 7) == pytest.approx(0.0)


@pytest.mark.parametrize("method", calibration.METHODS)
def test_a_known_miscalibration_is_removed_on_held_out_data(method):
    scores, correct = _overconfident(20000, 1)
    held_scores, held_correct = _overconfident(20000, 2)
    before = calibration.ece(held_scores, held_correct)
    fitted = calibration.fit(scores, correct, method)
    after = calibration.ece(calibration.apply(fitted, held_scores), held_correct)
    assert before > 0.15 and after < 0.03, (before, after)
    # the calibrated score is the probability of being right: at s = 0.9, 0.9**3 = 0.729
    assert calibration.apply(fitted, np.array([0.9]))[0] == pytest.approx(0.729, abs=0.05)
    # no calibrator: the scores as given
    np.testing.assert_array_equal(calibration.apply(None, held_scores), held_scores)


def test_cross_fitting_never_fits_on_what_it_scores():
    scores, correct = _overconfident(4000, 3)
    crossed = calibration.cross_fitted(scores, correct, "isotonic")
    own = calibration.apply(calibration.fit(scores, correct, "isotonic"), scores)
    assert calibration.ece(own, correct) < calibration.ece(crossed, correct) < calibration.ece(scores, correct)


def test_the_threshold_reaches_the_target_precision_and_is_the_lowest_that_does():
    scores, correct = _overconfident(5000, 4)
    found = calibration.threshold_for_precision(scores, correct, 0.8)
    kept = scores >= found["threshold"]
    assert correct[kept].mean() >= 0.8 and found["precision"] == pytest.approx(correct[kept].mean())
    assert found["kept"] == kept.sum() and found["recall_of_correct"] == pytest.approx(
        correct[kept].sum() / correct.sum()
    )
    lower = scores[scores < found["threshold"]].max()  # the next lower cut falls under the target
    assert correct[scores >= lower].mean() < 0.8
    assert calibration.threshold_for_precision(scores, np.zeros_like(correct), 0.5) is None
    ties = calibration.threshold_for_precision(np.array([0.9, 0.5, 0.5]), np.array([True, True, False]), 0.9)
    assert ties["threshold"] == 0.9  # equal scores are kept or dropped together


def test_a_fold_of_one_outcome_is_left_as_scored_not_a_failure():
    """Cross-fitting on few predictions: a fold whose complement holds one outcome only cannot be fitted (a
    training run's validation of a weak model crashed on it): that fold keeps its scores."""
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.3, 0.95])
    correct = np.array([True, False, False, False, False, False])
    crossed = calibration.cross_fitted(scores, correct, "platt", folds=2, seed=0)
    assert crossed.shape == scores.shape and np.isfinite(crossed).all()
