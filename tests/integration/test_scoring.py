"""Scores a user can trust: every word of a CoNLL file is scored (checked against an independent conlleval-style
span computation on the written predictions file), and skipped SQuAD questions count as the official script
counts a missing answer."""

import json
import subprocess
import sys

import pytest

from nlpbatch.metrics import squad_scores

pytestmark = pytest.mark.integration


def nlpbatch(*args):
    proc = subprocess.run([sys.executable, "-m", "nlpbatch", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def conll_chunks(tags: list[str]) -> set[tuple[int, int, str]]:
    """Entity spans the way conlleval reads IOB tags: B- or a type change starts an entity, I- after O too."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, typ = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if start is not None and (prefix in ("B", "O") or typ != kind):
            spans.add((start, i, kind))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, typ
    return spans


def prf(gold: set, pred: set) -> tuple[float, float, float]:
    correct = len(gold & pred)
    p = correct / len(pred) if pred else 0.0
    r = correct / len(gold) if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def test_every_word_is_scored_against_an_independent_span_count(tiny_ner_model, tmp_path):
    long_sentence = [(f"Word{i}", "O") for i in range(40)] + [("Angela", "B-PER"), ("Merkel", "I-PER")]
    sentences = [
        [("Angela", "B-PER"), ("\u200b", "I-PER"), ("Merkel", "I-PER"), ("visited", "O"), ("Paris", "B-LOC")],
        [("EU", "B-ORG"), ("\u00ad", "B-MISC"), ("rejects", "O"), ("German", "B-MISC"), ("lamb", "O")],
        long_sentence,  # longer than one --max-length 24 window: scored from its windows, as annotate labels it
        [("Peter", "B-PER"), ("Blackburn", "I-PER"), ("\u0096", "O"), ("in", "O"), ("London", "B-LOC")],
    ]
    data = tmp_path / "dev.txt"
    data.write_text("\n\n".join("\n".join(f"{w} NNP B-NP {t}" for w, t in s) for s in sentences) + "\n")
    out = tmp_path / "pred.conll"
    metrics = nlpbatch(
        "evaluate",
        "ner",
        "--model",
        str(tiny_ner_model),
        "--data",
        str(data),
        "--max-length",
        "24",
        "--predictions",
        str(out),
    )
    blocks = [b.splitlines() for b in out.read_text().strip().split("\n\n")]
    assert [len(b) for b in blocks] == [len(s) for s in sentences]  # every original word, in order
    rows = [[line.rsplit(" ", 2) for line in block] for block in blocks]
    assert [[(w, g) for w, g, _ in r] for r in rows] == [[(w, t) for w, t in s] for s in sentences]
    assert metrics["words"] == sum(len(s) for s in sentences)
    assert metrics["unpredicted_words"] == 3  # the three zero-subtoken words; the long sentence is windowed
    assert metrics["windows"] > len(sentences)

    gold, pred = set(), set()
    for k, r in enumerate(rows):
        gold |= {(k, *c) for c in conll_chunks([g for _, g, _ in r])}
        pred |= {(k, *c) for c in conll_chunks([p for _, _, p in r])}
    assert len(gold) == 8 and pred  # the zero-subtoken entities stay in the recall denominator
    p, r, f = prf(gold, pred)
    assert (metrics["overall_precision"], metrics["overall_recall"], metrics["overall_f1"]) == pytest.approx((p, r, f))
    for kind in {c[3] for c in gold | pred}:
        tp, tr, tf = prf({c for c in gold if c[3] == kind}, {c for c in pred if c[3] == kind})
        got = metrics["per_type"][kind]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((tp, tr, tf)), kind


def test_skipped_questions_score_zero_like_the_official_script(tiny_qa_model, tmp_path):
    context = "Paris Paris Paris Paris Paris Paris Paris Paris"  # any span a random model picks overlaps the answer
    qas = [
        {"id": "q1", "question": "Where is the tower?", "answers": [{"text": "Paris Paris", "answer_start": 0}]},
        {"id": "q2", "question": "Where is the river?", "answers": [{"text": "Paris", "answer_start": 6}]},
        {"id": "bad", "question": "Who built it?", "answers": [{"text": "Paris", "answer_start": 3}]},
    ]
    squad = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad))
    out = tmp_path / "preds.json"
    metrics = nlpbatch(
        "evaluate",
        "qa",
        "--model",
        str(tiny_qa_model),
        "--data",
        str(path),
        "--skip-invalid",
        "--max-length",
        "64",
        "--doc-stride",
        "16",
        "--predictions",
        str(out),
    )
    predictions = json.loads(out.read_text())
    assert set(predictions) == {"q1", "q2"} and metrics["skipped"]["count"] == 1
    official = squad_scores({**predictions, "bad": ""}, {q["id"]: [a["text"] for a in q["answers"]] for q in qas})
    assert metrics["n"] == 3 and metrics["n_answered"] == 2
    assert metrics["f1"] == pytest.approx(official["f1"]) and metrics["exact_match"] == pytest.approx(
        official["exact_match"]
    )
    answered = squad_scores(predictions, {q["id"]: [a["text"] for a in q["answers"]] for q in qas[:2]})
    assert metrics["f1_answered"] == pytest.approx(answered["f1"]) and answered["f1"] > 0
    assert metrics["f1"] == pytest.approx(answered["f1"] * 2 / 3)
