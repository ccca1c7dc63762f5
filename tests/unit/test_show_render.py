"""`show` for one's own labels: every label its own stable colour, a QA "no answer" marked, a sentence pair shown
whole."""

from __future__ import annotations

import io

from nlpbatch.show import colour_of, html_page, print_rows


def _manifest(task: str, **config) -> dict:
    return {"task": task, "run_id": "r1", "rows_out": 1, "rows_rejected": 0, "config": config}


def test_own_labels_get_distinct_stable_colours():
    labels = ["DRUG", "DOSE", "ROUTE", "person", "corporation", "location", "product", "creative-work", "group"]
    colours = [colour_of(label) for label in labels]
    assert len(set(colours)) >= 6  # not one colour for every non-CoNLL type
    assert colours == [colour_of(label) for label in labels]  # the same in every run (no per-process hash seed)
    assert colour_of("PER") == "#aa9cfc"
    row = {"id": "a", "text": "Take aspirin 100 mg", "entities": [{"label": "DRUG", "start": 5, "end": 12}]}
    assert f"background:{colour_of('DRUG')}" in html_page(_manifest("ner"), [row])


def test_a_qa_row_without_an_answer_is_marked():
    row = {
        "id": "q1",
        "text": "Paris is in France.",
        "question": "Who won?",
        "answer": {"text": "Paris", "start": 0, "end": 5, "score": 0.1},
        "no_answer": True,
        "null_margin": 2.5,
    }
    out = io.StringIO()
    print_rows(_manifest("qa"), [row], colour=False, stream=out)
    assert "NO ANSWER (null margin 2.50 over the best span 'Paris')" in out.getvalue()
    assert "[Paris](ANSWER)" not in out.getvalue()


def test_a_sentence_pair_is_shown_whole():
    row = {"id": "p1", "s1": "The cat sat.", "s2": "A cat was sitting.", "label": "1", "score": 0.9}
    out = io.StringIO()
    manifest = _manifest("classify", text_column="s1", text_pair_column="s2")
    print_rows(manifest, [row], colour=False, stream=out)
    assert "The cat sat.\n  + A cat was sitting." in out.getvalue()
    assert "+ A cat was sitting." in html_page(manifest, [row])
