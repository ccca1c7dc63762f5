"""Annotate's entities are evaluate's entities: a file's sentences evaluated (on the data's words) and annotated as
text (the words joined by spaces) give the same entities, character for character, hyphenated, dotted and
apostrophe names included; no entity is cut inside a whitespace token."""

from __future__ import annotations

import json

import pytest

from nlpbatch.annotate.pipeline import annotate_texts
from nlpbatch.config import load_annotate_config
from nlpbatch.evaluation import eval_config, evaluate_model

pytestmark = pytest.mark.integration

SENTENCES = [
    "AL-AIN beat Jean-Luc Brassard 's team in the U.S. on Monday .",
    "Nihad al-Boushi and O'Neill met at St. Louis , Mo. , with Coca-Cola executives .",
    "The E.U. and the U.K. signed the Franco-German pact in Baden-Baden .",
    "Dr. J.R.R. Tolkien wrote about Middle-earth and the Ring-bearer 's quest .",
]


def _spans(words: list[str], tags: list[str]) -> list[tuple[int, int, str]]:
    """IOB2 word tags -> character spans in the words joined by single spaces."""
    starts, at = [], 0
    for word in words:
        starts.append(at)
        at += len(word) + 1
    spans, open_ = [], None
    for i, tag in enumerate([*tags, "O"]):
        if open_ is not None and not (tag.startswith("I-") and tag[2:] == open_[1]):
            spans.append((starts[open_[0]], starts[i - 1] + len(words[i - 1]), open_[1]))
            open_ = None
        if tag.startswith("B-") or (tag.startswith("I-") and open_ is None):
            open_ = (i, tag[2:])
    return spans


def test_annotate_writes_the_entities_evaluate_scores(tiny_ner_model, tmp_path):
    lines = "\n\n".join("\n".join(f"{w} O" for w in s.split()) for s in SENTENCES * 10)
    (tmp_path / "test.txt").write_text(lines + "\n")
    _, predictions = evaluate_model(eval_config("ner", str(tiny_ner_model)), str(tmp_path / "test.txt"))
    texts = [" ".join(p["words"]) for p in predictions]
    rows = annotate_texts(load_annotate_config(task="ner", model=str(tiny_ner_model), input="-", output="-"), texts)
    evaluated = [_spans(p["words"], p["pred"]) for p in predictions]
    annotated = [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in rows]
    assert sum(map(len, evaluated)) > 30  # the random tiny model tags plenty: the comparison is not vacuous
    assert annotated == evaluated
    boundaries = [{i for i, c in enumerate(t) if c == " "} | {-1, len(t)} for t in texts]
    for spans, edges, text in zip(annotated, boundaries, texts):
        assert all(s - 1 in edges and e in edges for s, e, _ in spans), text  # never inside a whitespace token
    pieces = {text[s:e] for spans, text in zip(annotated, texts) for s, e, _ in spans}
    assert any("-" in p or "." in p for p in pieces), pieces  # the names with inner punctuation were tagged whole


def test_a_model_trained_on_span_exports_keeps_the_tokenizers_words(tiny_ner_model, tmp_path):
    """word_unit pretokenized (the card of a model trained on span files): a span on 'Paris' in 'Paris,' stays
    without its comma, as the span readers cut it."""
    model = tmp_path / "model"
    import shutil

    shutil.copytree(tiny_ner_model, model)
    texts = ["Angela Merkel visited Paris, Berlin."]
    whitespace = annotate_texts(load_annotate_config(task="ner", model=str(model), input="-", output="-"), texts)
    (model / "nlpbatch.json").write_text(json.dumps({"task": "ner", "word_unit": "pretokenized"}))
    pre = annotate_texts(load_annotate_config(task="ner", model=str(model), input="-", output="-"), texts)
    ends = {e["end"] for e in pre[0]["entities"]}
    assert ends and ends <= {6, 13, 21, 27, 28, 35, 36}  # word ends of the tokenizer's words (',' and '.' apart)
    assert {e["end"] for e in whitespace[0]["entities"]} <= {6, 13, 21, 28, 36}  # whitespace words: 'Paris,' whole
