"""SQuAD v2.0: unanswerable questions read, trained towards CLS, predicted by the null score, and scored as the
official evaluate-v2.0.py scores them (checked against a line-by-line transcription of that script's rules)."""

import collections
import json
import random
import re
import string

import numpy as np
import pytest

from nlpbatch.data import DataError
from nlpbatch.data.squad import load_squad
from nlpbatch.metrics import squad_v2_scores
from nlpbatch.tasks import qa

# --- the official evaluate-v2.0.py, transcribed rule by rule (the reference; no code shared with nlpbatch) ---


def _normalize(s):
    def remove_articles(text):
        return re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _get_tokens(s):
    return _normalize(s).split() if s else []


def _compute_exact(a_gold, a_pred):
    return int(_normalize(a_gold) == _normalize(a_pred))


def _compute_f1(a_gold, a_pred):
    gold_toks, pred_toks = _get_tokens(a_gold), _get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision, recall = 1.0 * num_same / len(pred_toks), 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def _official(references, preds, na_probs=None):
    exact_scores, f1_scores, has_ans = {}, {}, {}
    for qid, golds in references.items():
        gold_answers = [a for a in golds if _normalize(a)] or [""]
        has_ans[qid] = bool([a for a in golds if _normalize(a)])
        exact_scores[qid] = max(_compute_exact(a, preds[qid]) for a in gold_answers)
        f1_scores[qid] = max(_compute_f1(a, preds[qid]) for a in gold_answers)

    def make(keys):
        total = len(keys)
        return {
            "exact": 100.0 * sum(exact_scores[k] for k in keys) / total,
            "f1": 100.0 * sum(f1_scores[k] for k in keys) / total,
            "total": total,
        }

    out = make(list(references))
    for name, keys in (
        ("HasAns", [k for k in has_ans if has_ans[k]]),
        ("NoAns", [k for k in has_ans if not has_ans[k]]),
    ):
        if keys:
            out.update({f"{name}_{k}": v for k, v in make(keys).items()})

    def find_best_thresh(scores):
        num_no_ans = sum(1 for k in has_ans if not has_ans[k])
        cur_score = best_score = num_no_ans
        best_thresh = 0.0
        for qid in sorted(na_probs, key=lambda k: na_probs[k]):
            if qid not in scores:
                continue
            if has_ans[qid]:
                diff = scores[qid]
            else:
                diff = -1 if preds[qid] else 0
            cur_score += diff
            if cur_score > best_score:
                best_score, best_thresh = cur_score, na_probs[qid]
        return 100.0 * best_score / len(scores), best_thresh

    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(exact_scores)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(f1_scores)
    return out


def _ours_as_official(ours: dict) -> dict:
    renamed = {"exact_match": "exact", "n": "total"}
    return {renamed.get(k, k): v for k, v in ours.items()}


def test_unanswerable_and_answerable_questions_score_as_the_official_script():
    references = {"a": ["Paris"], "b": [], "c": [], "d": ["the Eiffel Tower", "Eiffel Tower"], "e": ["a"]}
    preds = {"a": "", "b": "", "c": "somewhere", "d": "Eiffel", "e": ""}
    ours = squad_v2_scores(preds, references)
    # an empty prediction is right for an unanswerable question (1), any span wrong (0); the reverse when it has
    # an answer; "a" normalises to nothing, so "e" counts as unanswerable, as the script counts it
    assert (ours["NoAns_total"], ours["HasAns_total"]) == (3, 2)
    assert ours["NoAns_exact"] == pytest.approx(100 * 2 / 3) and ours["HasAns_exact"] == 0.0
    assert _ours_as_official(ours) == pytest.approx(_official(references, preds))


def test_random_cases_and_best_thresholds_equal_the_official_script():
    rng = random.Random(7)
    words = "the a Paris river Seine flows through northern France".split()
    for _ in range(50):
        references, preds, na = {}, {}, {}
        for i in range(rng.randint(1, 12)):
            qid = f"q{i}"
            references[qid] = [" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(rng.randint(0, 2))]
            preds[qid] = "" if rng.random() < 0.3 else " ".join(rng.choices(words, k=rng.randint(1, 4)))
            na[qid] = rng.choice([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0])
        assert _ours_as_official(squad_v2_scores(preds, references, na)) == pytest.approx(
            _official(references, preds, na)
        )


def _v2_file(path, questions):
    doc = {
        "version": "v2.0",
        "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": questions}]}],
    }
    path.write_text(json.dumps(doc))
    return path


def test_v2_files_keep_unanswerable_questions_and_v1_files_still_need_answers(tmp_path):
    answerable = {"id": "1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]}
    impossible = {"id": "2", "question": "Where is Rome?", "answers": [], "is_impossible": True}
    raw = load_squad(_v2_file(tmp_path / "v2.json", [answerable, impossible]))
    assert [a["text"] for a in raw["answers"]] == [["France"], []]
    missing = {"id": "3", "question": "Where is Rome?", "answers": []}
    with pytest.raises(DataError, match=r"question '3': no answers .*is_impossible"):
        load_squad(_v2_file(tmp_path / "v1.json", [answerable, missing]))


def test_unanswerable_windows_point_at_cls_and_null_wins_by_the_threshold(tmp_path):
    from transformers import AutoTokenizer

    from nlpbatch.models import resolve_model

    answerable = {"id": "1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]}
    impossible = {"id": "2", "question": "Where is Rome?", "answers": [], "is_impossible": True}
    raw = load_squad(_v2_file(tmp_path / "v2.json", [answerable, impossible]))
    tok = AutoTokenizer.from_pretrained(resolve_model(None))
    from types import SimpleNamespace

    cfg = SimpleNamespace(max_length=64, doc_stride=16)
    feats = qa.train_features(raw, tok, cfg)
    assert (feats[1]["start_positions"], feats[1]["end_positions"]) == (0, 0)
    assert feats[0]["start_positions"] > 0

    windows = qa.eval_features(raw, tok, cfg)
    n = max(len(w["input_ids"]) for w in windows)
    start, end = np.full((2, n), -5.0), np.full((2, n), -5.0)
    france = windows[0]["offsets"].index((12, 18))
    start[0, france] = end[0, france] = 2.0  # a span scoring 4.0, the CLS 1.0: the answer wins
    start[0, 0] = end[0, 0] = 0.5
    ctx = next(i for i, o in enumerate(windows[1]["offsets"]) if o is not None)
    start[1, ctx] = end[1, ctx] = 1.0  # a span scoring 2.0, the CLS 3.0: no answer by a margin of 1.0
    start[1, 0] = end[1, 0] = 1.5
    spans = qa.best_spans(start, end, windows, list(raw["context"]))
    assert [s["null_margin"] for s in spans] == pytest.approx([-3.0, 1.0])
    assert [qa.is_null(s, 0.0) for s in spans] == [False, True]
    assert [qa.is_null(s, 1.5) for s in spans] == [False, False]  # a higher threshold: "no answer" needs more
    assert [qa.is_null(s, None) for s in spans] == [False, False]  # a v1.1 model always answers
    gathered = {"start_logits": start, "end_logits": end}
    metrics, predictions = qa.score(
        gathered, windows, raw, None, SimpleNamespace(n_best=20, max_answer_length=30, null_threshold=None)
    )
    assert predictions == {"1": "France", "2": ""} and metrics["exact_match"] == 100.0
    assert metrics["HasAns_total"] == metrics["NoAns_total"] == 1 and "best_f1_thresh" in metrics


@pytest.mark.parametrize("layout", ["jsonl", "parquet", "jsonl-answer-list"])
def test_hub_layout_rows_read_as_the_squad_file(layout, data_dir, tmp_path):
    """SQuAD v2.0 as the hub lays it out (one row per question, answers{text, answer_start}; empty answers for an
    unanswerable question), in JSON Lines and Parquet, reads back as the nested JSON file does."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from nlpbatch.tasks.qa import load_split

    source = data_dir / "squad_v2" / "validation.json"
    expected = load_squad(source)
    rows = [{k: r[k] for k in ("id", "title", "context", "question", "answers")} for r in expected.to_list()]
    assert sum(not r["answers"]["text"] for r in rows) > 600  # unanswerable questions are in it
    path = tmp_path / f"rows.{layout.split('-')[0]}"
    if layout == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        if layout == "jsonl-answer-list":
            rows = [
                {**r, "answers": [{"text": t, "answer_start": s} for t, s in zip(*r["answers"].values())]} for r in rows
            ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_split(str(path), "train").to_list() == expected.to_list()


def test_a_qa_row_without_its_fields_names_the_row(tmp_path):
    from nlpbatch.data import DataError
    from nlpbatch.tasks.qa import load_split

    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"id": "a", "context": "c", "question": "q", "answers": {"text": [], "answer_start": []}}\n'
        '{"id": "b", "text": "c"}\n'
    )
    with pytest.raises(DataError, match=r"rows.jsonl:2: a QA row needs .*context, question missing"):
        load_split(str(path), "train")
