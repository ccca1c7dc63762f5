"""Distributed evaluation must equal single-process evaluation: same predictions, same scores, any worker count."""

import pytest

from nlpbatch.evaluation import eval_config, evaluate_model

pytestmark = pytest.mark.integration


def test_ner_eval_identical_with_0_2_3_workers(ray_cluster, tiny_ner_model, data_dir):
    cfg = eval_config("ner", str(tiny_ner_model), eval_batch_size=16)
    # 301 sentences: 2 and 3 workers get padded shards whose duplicates must be dropped
    runs = {n: evaluate_model(cfg, str(data_dir), "validation", num_workers=n, max_examples=301) for n in (0, 2, 3)}
    metrics0, preds0 = runs[0]
    assert len(preds0) == 301 and metrics0["n"] == 301
    assert all(len(p) > 0 for p in preds0)  # one word-level tag sequence per sentence
    for n in (2, 3):  # one worker is the gather with nothing to pad: 2 and 3 cover it
        metrics, preds = runs[n]
        assert preds == preds0, f"{n} workers changed predictions"
        assert metrics == metrics0, f"{n} workers changed metrics"


def test_qa_eval_identical_with_0_2_3_workers(ray_cluster, tiny_qa_model, data_dir):
    cfg = eval_config("qa", str(tiny_qa_model), max_length=128, doc_stride=32, eval_batch_size=16)
    runs = {n: evaluate_model(cfg, str(data_dir), "validation", num_workers=n, max_examples=53) for n in (0, 2, 3)}
    metrics0, preds0 = runs[0]
    assert metrics0["n"] == 53 and metrics0["windows"] > 53  # multi-window questions are in the slice
    for n in (2, 3):
        assert runs[n] == runs[0], f"{n} workers changed QA predictions or scores"
