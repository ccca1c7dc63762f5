"""Scores: seqeval for NER (word level), official SQuAD v1.1 exact match / F1 for QA."""

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
