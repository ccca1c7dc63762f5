"""The review queue's choice: the documents a hand-built set of predictions is least sure of, never twice."""

from nlpbatch.review import priority, select
from nlpbatch.tasks.ner import spans

ROWS = [
    {
        "id": "sure",
        "text": "Angela Merkel visited Paris",
        "entities": [{"label": "PER", "start": 0, "end": 13, "score": 0.97}],
    },
    {"id": "none", "text": "nothing here at all", "entities": []},
    {"id": "weak", "text": "Siemens in Munich", "entities": [{"label": "ORG", "start": 0, "end": 7, "score": 0.31}]},
    {
        "id": "many",
        "text": " ".join(["word"] * 10),
        "entities": [{"label": "LOC", "start": 0, "end": 4, "score": s} for s in (0.6, 0.6, 0.6)],
    },
    {
        "id": "long",
        "text": " ".join(["word"] * 400),
        "entities": [{"label": "LOC", "start": 0, "end": 4, "score": 0.5}],
    },
]


def test_least_sure_first_documents_without_entities_last():
    chosen = select(ROWS, spans, 5, "least-sure", "text", set())
    assert [r["id"] for r in chosen] == ["weak", "long", "many", "sure", "none"]
    assert priority([], "x", "least-sure") < priority([0.99], "x", "least-sure")


def test_expected_errors_per_hundred_words_and_no_document_twice():
    chosen = select(ROWS, spans, 3, "expected-errors", "text", set())
    # many: 3 x 0.4 over 10 words = 12 per 100; weak: 0.69 over 3 words = 23; long: 0.5 over 400 words = 0.125
    assert [r["id"] for r in chosen] == ["weak", "many", "sure"]
    again = select(ROWS, spans, 3, "expected-errors", "text", {r["id"] for r in chosen})
    assert [r["id"] for r in again] == ["long", "none"]
