"""QA post-processing on hand-built logits, window labelling, SQuAD validation and scoring."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from nlpbatch.data import DataError
from nlpbatch.metrics import normalize_answer, squad_scores
from nlpbatch.tasks import qa

CONTEXT = "Paris is the capital of France."
#          0     6  9   13      21 24    30


def window(offsets, example_idx=0):
    return {"offsets": offsets, "example_idx": example_idx}


# tokens: [CLS] q q [SEP] paris is the capital of france . [SEP]
CTX_OFFSETS = [(0, 5), (6, 8), (9, 12), (13, 20), (21, 23), (24, 30), (30, 31)]
OFFSETS = [None, None, None, None, *CTX_OFFSETS, None]


def logits(n, hot):
    arr = np.full(n, -10.0, dtype=np.float32)
    for pos, val in hot.items():
        arr[pos] = val
    return arr


def test_known_best_span():
    start = logits(len(OFFSETS), {9: 5.0})  # "france"
    end = logits(len(OFFSETS), {9: 5.0})
    [ans] = qa.best_spans(np.array([start]), np.array([end]), [window(OFFSETS)], [CONTEXT])
    assert ans["text"] == "France" and (ans["start"], ans["end"]) == (24, 30) and not ans["empty"]


def test_spans_in_the_question_or_reversed_are_never_chosen():
    start = logits(len(OFFSETS), {1: 9.0, 8: 3.0, 9: 2.0})  # the question token scores highest
    end = logits(len(OFFSETS), {2: 9.0, 4: 8.0, 8: 1.0})  # end at "paris" (4) would precede start 8
    [ans] = qa.best_spans(np.array([start]), np.array([end]), [window(OFFSETS)], [CONTEXT])
    assert ans["text"] == "of"  # start 8 ("of"), end 8: the only valid pair left


def test_too_long_spans_are_rejected():
    start = logits(len(OFFSETS), {4: 9.0, 9: 1.0})
    end = logits(len(OFFSETS), {10: 9.0, 9: 1.0})
    [long_ok] = qa.best_spans(np.array([start]), np.array([end]), [window(OFFSETS)], [CONTEXT])
    assert long_ok["text"] == "Paris is the capital of France."
    [short] = qa.best_spans(np.array([start]), np.array([end]), [window(OFFSETS)], [CONTEXT], max_answer_length=1)
    assert short["text"] == "France"  # longer spans are out; the best 1-token span wins


def test_best_answer_over_windows_of_one_example_and_padding_ignored():
    # window A sees "Paris is the capital", window B "capital of France." (overlap at "capital")
    a = [None, None, *CTX_OFFSETS[:4], None]
    b = [None, None, *CTX_OFFSETS[3:], None]
    starts = np.full((2, 12), -1e4, dtype=np.float32)
    ends = np.full((2, 12), -1e4, dtype=np.float32)
    starts[0, :7], ends[0, :7] = logits(7, {2: 12.0}), logits(7, {2: 12.0})  # "Paris", score 24
    starts[1, :7], ends[1, :7] = logits(7, {4: 13.0}), logits(7, {5: 13.0})  # "France.", score 26
    starts[1, 10] = ends[1, 10] = 1e6  # a padded position past the window must not be picked
    [ans] = qa.best_spans(starts, ends, [window(a), window(b)], [CONTEXT])
    assert ans["text"] == "France." and ans["score"] == pytest.approx(26.0)


def test_no_valid_span_gives_flagged_empty_answer():
    only_question = [None, None, None]
    [ans] = qa.best_spans(np.zeros((1, 3)), np.zeros((1, 3)), [window(only_question)], [CONTEXT])
    assert ans["empty"] and ans["text"] == ""


def test_windows_label_answers_and_map_offsets_back():
    from transformers import AutoTokenizer

    from nlpbatch.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(None))
    context = " ".join(f"word{i}" for i in range(200)) + " The answer is Marseille today."
    start_char = context.index("Marseille")
    raw = {
        "question": ["  Where?"],
        "context": [context],
        "answers": [{"text": ["Marseille"], "answer_start": [start_char]}],
    }
    cfg = SimpleNamespace(max_length=64, doc_stride=16)
    feats = qa.train_features(raw, tok, cfg)
    evals = qa.eval_features(raw, tok, cfg)
    assert len(feats) > 3 and len(feats) == len(evals)
    labelled = [f for f in feats if f["start_positions"] != 0]
    assert labelled, "some window must contain the answer"
    for f in feats:
        if f["start_positions"] == 0:
            assert f["end_positions"] == 0
    for f, e in zip(feats, evals):
        if f["start_positions"]:
            s, t = e["offsets"][f["start_positions"]], e["offsets"][f["end_positions"]]
            assert context[s[0] : t[1]] == "Marseille"
        # the question part never carries offsets, so no answer can come from it
        assert all(o is None for o in e["offsets"][: e["input_ids"].index(tok.sep_token_id) + 1])


def write_squad(tmp_path, qas, context="Paris is the capital of France."):
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]})
    )
    return path


def test_squad_reader_flattens_like_the_hub(tmp_path):
    ds = qa.load_split(
        str(
            write_squad(
                tmp_path,
                [{"id": "q1", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}]}],
            )
        ),
        "train",
    )
    assert ds[0] == {
        "id": "q1",
        "title": "T",
        "context": "Paris is the capital of France.",
        "question": "Capital?",
        "answers": {"text": ["Paris"], "answer_start": [0]},
    }


@pytest.mark.parametrize(
    ("qa_row", "reason"),
    [
        (
            {"id": "bad1", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 3}]},
            "not at answer_start 3",
        ),
        (
            {"id": "bad2", "question": " ", "answers": [{"text": "Paris", "answer_start": 0}]},
            "empty question",
        ),
        ({"id": "bad3", "question": "Capital?"}, "missing field 'answers'"),
    ],
)
def test_invalid_questions_name_their_id_or_are_counted(tmp_path, qa_row, reason):
    from nlpbatch.data.squad import SkipReport

    good = {"id": "ok", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}]}
    path = str(write_squad(tmp_path, [good, qa_row]))
    with pytest.raises(DataError, match=f"question {qa_row['id']!r}: .*{reason}"):
        qa.load_split(path, "train")
    skips = SkipReport()
    ds = qa.load_split(path, "train", skip_invalid=True, skips=skips)
    assert ds["id"] == ["ok"] and skips.count == 1 and skips.skipped[0]["id"] == qa_row["id"]


def test_squad_metric_matches_official_normalisation():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    scores = squad_scores({"a": "the Paris", "b": "capital of France"}, {"a": ["Paris"], "b": ["France", "Lyon"]})
    assert scores["exact_match"] == 50.0
    assert scores["f1"] == pytest.approx(100 * (1.0 + 0.5) / 2)  # b: P=1/3... max over golds -> F1 0.5
    assert scores["n"] == 2


def test_answer_probability_is_a_context_softmax_product():
    start = np.array([5.0, 2.0, 1.0, 0.5, 0.1])
    end = np.array([5.0, 0.1, 3.0, 0.5, 0.2])
    offsets = [None, (0, 3), (4, 9), (10, 12), (13, 20)]  # token 0: a question token, never in the softmax
    [ans] = qa.best_spans(np.array([start]), np.array([end]), [{"offsets": offsets, "example_idx": 0}], [CONTEXT])
    p_start = np.exp(start[1:]) / np.exp(start[1:]).sum()
    p_end = np.exp(end[1:]) / np.exp(end[1:]).sum()
    assert (ans["start"], ans["end"]) == (0, 9)  # start token 1, end token 2
    assert ans["probability"] == pytest.approx(p_start[0] * p_end[1]) and 0 < ans["probability"] < 1


def test_a_qa_model_starts_from_a_fine_tuned_model_of_another_task(tiny_ner_model):
    """A warm start from an NER model (a head of 9 labels): the QA head is replaced by one of two outputs."""
    from nlpbatch.tasks.qa import build_model

    model = build_model(str(tiny_ner_model))
    assert model.qa_outputs.out_features == 2 and model.config.num_labels == 2
