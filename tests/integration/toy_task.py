"""A task that exists only in the test suite: does a text mention Paris? One label per document, from a sequence
classification head. Everything nlpbatch needs to train, evaluate, annotate and show it is in this file, and no
module of the package names it: the proof that the next task is one file (`nlpbatch/tasks/__init__.py`)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from nlpbatch.rows import passthrough, timed
from nlpbatch.tasks.base import PAD_MULTIPLE, Task, no_errors, nothing

LABELS = ["no", "yes"]
WORDS = "the a river city museum quiet long walk north old bridge market".split()


def load_split(source: str | None, split: str, max_examples: int | None = None, **_: Any):
    from datasets import Dataset

    rng = random.Random(0 if split == "train" else 1)
    texts, labels = [], []
    for _ in range(max_examples or (96 if split == "train" else 24)):
        words = rng.choices(WORDS, k=rng.randint(4, 12))
        label = rng.random() < 0.5
        if label:
            words.insert(rng.randint(0, len(words)), "Paris")
        texts.append(" ".join(words))
        labels.append(int(label))
    return Dataset.from_dict({"text": texts, "label": labels})


def _model_class():
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification


def build_model(model_path: str, raw_train=None, cfg: Any = None):
    from nlpbatch.models import load_quietly

    return load_quietly(
        _model_class(),
        model_path,
        num_labels=2,
        id2label=dict(enumerate(LABELS)),
        label2id={"no": 0, "yes": 1},
        ignore_mismatched_sizes=True,  # a fresh head, whatever head the base checkpoint had
    )


def load_trained(model_path: str):
    from nlpbatch.models import load_quietly

    return load_quietly(_model_class(), model_path)


def features(raw, tokenizer, cfg: Any) -> list[dict]:
    enc = tokenizer(list(raw["text"]), truncation=True, max_length=cfg.max_length)
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": label, "index": i}
        for i, (ids, mask, label) in enumerate(zip(enc["input_ids"], enc["attention_mask"], raw["label"]))
    ]


def collator(tokenizer):
    import torch

    def collate(batch: list[dict]) -> dict:
        padded = tokenizer.pad(
            [{k: f[k] for k in ("input_ids", "attention_mask")} for f in batch],
            pad_to_multiple_of=PAD_MULTIPLE,
            return_tensors="pt",
        )
        padded["labels"] = torch.tensor([f["labels"] for f in batch])
        padded["index"] = torch.tensor([f["index"] for f in batch])
        return dict(padded)

    return collate


def outputs_to_gather(output, batch) -> dict:
    return {"pred": (output.logits.argmax(-1)[:, None], -1), "labels": (batch["labels"][:, None], -1)}


def score(gathered: dict, eval_feats: list[dict], raw, model_config, cfg: Any = None):
    pred = np.asarray(gathered["pred"])[:, 0]
    gold = np.asarray(gathered["labels"])[:, 0]
    return {"accuracy": float((pred == gold).mean()), "n": int(len(gold))}, [LABELS[p] for p in pred.tolist()]


def _softmax_yes(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return (shifted / shifted.sum(-1, keepdims=True))[:, 1].astype(np.float32)


def decode(batch: pa.Table) -> pa.Table:
    """A document's label from the mean of its windows' P(yes)."""
    t0 = time.perf_counter()
    reasons = batch.column("_reject").to_pylist()
    labels, scores = [], []
    for windows, reason in zip(batch.column("_p_yes").to_pylist(), reasons):
        p = float(np.mean(windows)) if reason is None and windows else None
        labels.append(None if p is None else LABELS[int(p >= 0.5)])
        scores.append(None if p is None else max(p, 1 - p))
    out = passthrough(batch, ["id"], reasons)
    out = out.append_column("label", pa.array(labels, pa.string())).append_column("score", pa.array(scores))
    return timed(out, "decode", time.perf_counter() - t0)


TASK = Task(
    name="integration.toy_task",
    load_split=load_split,
    build_model=build_model,
    load_trained=load_trained,
    train_features=features,
    eval_features=features,
    collator=collator,
    outputs_to_gather=outputs_to_gather,
    score=score,
    label_names=lambda raw: LABELS,
    check_train=no_errors,
    fingerprint=nothing,
    headline=lambda ev: f"accuracy {ev['accuracy']:.3f}",
    plot_scores=lambda history: [("accuracy", [h["eval"]["accuracy"] for h in history], "o-")],
    write_predictions=lambda predictions, path: Path(path).write_text(json.dumps(predictions)),
    architecture="SequenceClassification",
    head_outputs=("logits",),
    default_window=64,
    pair=False,
    token_columns=(),
    window_columns=(("_p_yes", "float32"),),
    reduce_torch=lambda outputs: [outputs[0].float().softmax(-1)[:, 1]],
    reduce_numpy=lambda outputs: [_softmax_yes(outputs[0])],
    decode=decode,
    decode_options=lambda cfg, model_config: {},
    output_columns=("label", "score"),
    spans=lambda row: [],
)
