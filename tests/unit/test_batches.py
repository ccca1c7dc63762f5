"""Training batches cut from features padded once (and kept on the device) hold exactly what the task's collator
builds from the same features, step by step, for NER and QA."""

import random

import pytest
import torch

from nlpbatch.config import TrainConfig
from nlpbatch.tasks import get_task
from nlpbatch.train.batches import ResidentBatches
from nlpbatch.train.sampler import GlobalBatchSampler


@pytest.mark.parametrize("task_name, examples", [("ner", 300), ("qa", 40)])
def test_resident_batches_equal_the_collator(data_dir, task_name, examples):
    from transformers import AutoTokenizer

    from nlpbatch.models import resolve_model

    task = get_task(task_name)
    cfg = TrainConfig(task=task_name, output="", max_length=192 if task_name == "qa" else None, doc_stride=64)
    raw = task.load_split(str(data_dir), "train", examples)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    feats = task.train_features(raw, tokenizer, cfg)
    collate = task.collator(tokenizer)
    batches = ResidentBatches(feats, collate, torch.device("cpu"))
    lengths = [len(f["input_ids"]) for f in feats]
    assert len(set(lengths)) > 3  # features of many lengths: the cut width changes from batch to batch
    sampler = GlobalBatchSampler(len(feats), 16, 0, 1, seed=0, lengths=lengths)
    steps = list(sampler) + [random.Random(0).sample(range(len(feats)), 5)]
    for indices in steps:
        expected = collate([feats[i] for i in indices])
        expected.pop("index")
        got = batches(indices)
        assert got.keys() == expected.keys()
        for key, tensor in expected.items():
            assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key
        assert batches.tokens(indices) == int(expected["attention_mask"].sum())


@pytest.mark.parametrize("multi", [False, True])
def test_resident_classification_batches_equal_the_collator(data_dir, tmp_path, multi):
    """Per-example targets (a label id; multi-label: a multi-hot row of 40 floats, wider than most batches) come
    out whole and in their own dtype."""
    import json

    from transformers import AutoTokenizer

    from nlpbatch.models import resolve_model

    task = get_task("classify")
    lines = (data_dir / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:200]
    rows = [{"text": line.rsplit("\t", 1)[0], "label": line.rsplit("\t", 1)[1]} for line in lines]
    if multi:
        rows = [{**r, "label": [f"l{(i * k) % 40}" for k in range(1, 4)]} for i, r in enumerate(rows)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = task.load_split(str(tmp_path / "d.jsonl"), "train")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    feats = task.train_features(raw, tokenizer, TrainConfig(task="classify", output="", max_length=64))
    collate = task.collator(tokenizer)
    batches = ResidentBatches(feats, collate, torch.device("cpu"))
    lengths = [len(f["input_ids"]) for f in feats]
    for indices in GlobalBatchSampler(len(feats), 16, 0, 1, seed=0, lengths=lengths):
        expected = collate([feats[i] for i in indices])
        expected.pop("index")
        got = batches(indices)
        for key, tensor in expected.items():
            assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key
    assert expected["labels"].shape == ((len(indices), 40) if multi else (len(indices),))
