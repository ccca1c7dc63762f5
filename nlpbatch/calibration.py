"""Scores with a meaning: a calibrator fitted on validation outcomes maps the score annotate writes (for an NER
entity, the mean of its tokens' top softmax probabilities) to the probability that the prediction is exactly right,
and the model card keeps it, so every later run writes calibrated scores. Pure functions over (scores, outcomes)
arrays; the task says what an outcome is (`Task.score_outcomes`).

Methods: Platt scaling (a logistic fit on the score's logit: two numbers; the default) and isotonic regression
(scikit-learn's, monotone and free-form). On held-out CoNLL sentences (benchmarks/results/calibration_cpu.json) the
raw entity scores' ECE of 0.074 fell to 0.023 with Platt and 0.033 with isotonic, which overfits its steps to the
fitting half.
Expected calibration error: 10 equal-width bins of the score, |accuracy - mean score| weighted by the bin's share.
"""

from __future__ import annotations

import numpy as np

METHODS = ("platt", "isotonic")
BINS = 10


def reliability(scores: np.ndarray, correct: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per equal-width score bin: its range, count, mean score and share of correct predictions (empty bins out)."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, float)
    which = np.minimum((scores * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            table.append(
                {
                    "from": b / bins,
                    "to": (b + 1) / bins,
                    "n": int(inside.sum()),
                    "mean_score": float(scores[inside].mean()),
                    "accuracy": float(correct[inside].mean()),
                }
            )
    return table


def ece(scores: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error over equal-width bins (0: every bin's accuracy equals its mean score)."""
    n = len(scores)
    if n == 0:
        return 0.0
    return float(sum(r["n"] / n * abs(r["accuracy"] - r["mean_score"]) for r in reliability(scores, correct, bins)))


def fit(scores: np.ndarray, correct: np.ndarray, method: str = "platt") -> dict:
    """A calibrator (a small JSON-able dict) fitted to outcomes: apply it with `apply`."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, float)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, correct)
        return {"method": method, "x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e6).fit(_logit(scores)[:, None], correct.astype(int))
        return {"method": method, "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}
    raise ValueError(f"calibration method {method!r}: one of {', '.join(METHODS)}")


def apply(calibrator: dict | None, scores: np.ndarray) -> np.ndarray:
    """The calibrated scores (the scores as given without a calibrator)."""
    scores = np.asarray(scores, float)
    if not calibrator or len(scores) == 0:
        return scores
    if calibrator["method"] == "isotonic":
        return np.interp(scores, calibrator["x"], calibrator["y"])
    return 1.0 / (1.0 + np.exp(-(calibrator["a"] * _logit(scores) + calibrator["b"])))


def cross_fitted(scores: np.ndarray, correct: np.ndarray, method: str, folds: int = 2, seed: int = 0) -> np.ndarray:
    """Each prediction's score calibrated by a calibrator fitted on the other folds: an honest estimate of how the
    calibrator does on data it has not seen (the ECE of a calibrator on its own fitting data flatters it)."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, float)
    fold = np.random.default_rng(seed).integers(0, folds, len(scores))
    out = np.empty_like(scores)
    for k in range(folds):
        held = fold == k
        if held.any() and len(np.unique(correct[~held])) == 2:
            out[held] = apply(fit(scores[~held], correct[~held], method), scores[held])
        else:  # the other folds hold one outcome only: nothing to fit there, the fold stays as scored
            out[held] = scores[held]
    return out


def threshold_for_precision(scores: np.ndarray, correct: np.ndarray, target: float) -> dict | None:
    """The lowest score threshold whose kept predictions (score >= threshold) reach `target` precision, with the
    precision and recall there (recall: of the correct predictions); None when no threshold reaches it."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(correct[order])
    precision = hits / np.arange(1, len(order) + 1)
    # a threshold keeps every prediction scored at or above it: only the last of equal scores is a valid cut
    last_of_equal = np.append(scores[order][1:] != scores[order][:-1], True)
    ok = np.flatnonzero((precision >= target) & last_of_equal)
    if len(ok) == 0:
        return None
    cut = ok[-1]
    return {
        "threshold": float(scores[order][cut]),
        "precision": float(precision[cut]),
        "recall_of_correct": float(hits[cut] / max(1, correct.sum())),
        "kept": int(cut + 1),
        "of": len(order),
    }


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))
