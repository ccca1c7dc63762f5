"""Scores: seqeval for NER (word level), the official SQuAD v1.1 and v2.0 exact match / F1 for QA."""

from __future__ import annotations

import collections
import re
import string


def seqeval_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Overall precision/recall/F1/accuracy plus one entry per entity type (as `evaluate`'s seqeval reports)."""
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    per_type = {
        name: {
            "precision": float(v["precision"]),
            "recall": float(v["recall"]),
            "f1": float(v["f1-score"]),
            "number": int(v["support"]),
        }
        for name, v in report.items()
        if not name.endswith(" avg")
    }
    return {
        "overall_precision": float(precision_score(gold, pred, zero_division=0)),
        "overall_recall": float(recall_score(gold, pred, zero_division=0)),
        "overall_f1": float(f1_score(gold, pred, zero_division=0)),
        "overall_accuracy": float(accuracy_score(gold, pred)),
        "per_type": per_type,
    }


# --- SQuAD v1.1, as the official evaluate-v1.1.py script normalises and scores ---


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_f1(prediction: str, truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(truth_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_exact(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def squad_scores(predictions: dict[str, str], references: dict[str, list[str]]) -> dict:
    """EM and F1 in percent, max over each question's gold answers; every reference needs a prediction."""
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[:3]}")
    em = f1 = 0.0
    for qid, golds in references.items():
        em += max(squad_exact(predictions[qid], g) for g in golds)
        f1 += max(squad_f1(predictions[qid], g) for g in golds)
    n = len(references)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "n": n}


# --- SQuAD v2.0, as the official evaluate-v2.0.py script scores (unanswerable questions have no gold answer) ---


def _v2_f1(prediction: str, truth: str) -> float:
    """evaluate-v2.0's compute_f1: where either side is empty, 1 if both are, else 0."""
    pred_tokens, truth_tokens = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if not pred_tokens or not truth_tokens:
        return float(pred_tokens == truth_tokens)
    return squad_f1(prediction, truth)


def _best_threshold(raw: dict[str, float], na_scores: dict[str, float], has_answer: dict[str, bool], preds) -> tuple:
    """evaluate-v2.0's find_best_thresh: predicting "no answer" for every question whose no-answer score is above
    the threshold, the threshold (one of the scores) that maximises the total, and that total in percent."""
    score = best = float(sum(not has for has in has_answer.values()))
    threshold = 0.0
    for qid in sorted(na_scores, key=lambda q: na_scores[q]):
        if has_answer[qid]:
            score += raw[qid]
        else:
            score += -1.0 if preds[qid] else 0.0
        if score > best:
            best, threshold = score, na_scores[qid]
    return 100.0 * best / len(raw), threshold


def squad_v2_scores(
    predictions: dict[str, str], references: dict[str, list[str]], na_scores: dict[str, float] | None = None
) -> dict:
    """EM and F1 in percent as evaluate-v2.0.py reports them: over all questions (`exact_match`, `f1`, `n`), the
    answerable ones (`HasAns_*`) and the unanswerable ones (`NoAns_*`, whose only right answer is the empty string).
    With `na_scores` (per question, how much the model prefers "no answer"; `predictions` then hold the best span
    of every question), also the best no-answer threshold for EM and for F1 and the scores it gives."""
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[:3]}")
    exact, f1, has_answer = {}, {}, {}
    for qid, golds in references.items():
        golds = [g for g in golds if normalize_answer(g)] or [""]
        has_answer[qid] = golds != [""]
        exact[qid] = max(float(normalize_answer(predictions[qid]) == normalize_answer(g)) for g in golds)
        f1[qid] = max(_v2_f1(predictions[qid], g) for g in golds)

    def mean(values: dict[str, float], keep) -> float:
        chosen = [v for qid, v in values.items() if keep(qid)]
        return 100.0 * sum(chosen) / len(chosen) if chosen else 0.0

    out = {"exact_match": mean(exact, bool), "f1": mean(f1, bool), "n": len(references)}
    for name, keep in (("HasAns", lambda q: has_answer[q]), ("NoAns", lambda q: not has_answer[q])):
        total = sum(map(keep, references))
        if total:  # as the script: a group's figures only where the group has questions
            out[f"{name}_exact"], out[f"{name}_f1"], out[f"{name}_total"] = mean(exact, keep), mean(f1, keep), total
    if na_scores is not None:
        out["best_exact"], out["best_exact_thresh"] = _best_threshold(exact, na_scores, has_answer, predictions)
        out["best_f1"], out["best_f1_thresh"] = _best_threshold(f1, na_scores, has_answer, predictions)
    return out


def with_skipped_questions(metrics: dict, skipped: int) -> dict:
    """SQuAD scores as the official script reports them when `skipped` questions got no answer (each scores 0:
    the denominator is every question), with the figures over the answered questions kept under their own names."""
    if not skipped or "exact_match" not in metrics:
        return metrics
    answered = metrics["n"]
    total = answered + skipped
    return {
        **metrics,
        "exact_match": metrics["exact_match"] * answered / total,
        "f1": metrics["f1"] * answered / total,
        "n": total,
        "exact_match_answered": metrics["exact_match"],
        "f1_answered": metrics["f1"],
        "n_answered": answered,
    }
