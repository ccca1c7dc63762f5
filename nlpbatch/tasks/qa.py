"""Extractive QA: sliding-window features with offsets, n-best span post-processing, SQuAD scoring."""

from __future__ import annotations

from typing import Any

import numpy as np

from nlpbatch.data.squad import HUB_NAME, load_squad, load_squad_hub
from nlpbatch.tasks.base import PAD_MULTIPLE, Task, locate_split, model_inputs

BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions", "index")


def load_split(source: str | None, split: str, max_examples: int | None = None, skip_invalid=False, skips=None):
    """`source`: a SQuAD JSON file, a data dir (DIR/squad/SPLIT.json or DIR/SPLIT.json), or a hub dataset name."""
    path = locate_split(source, split, "squad", ".json", "SQuAD")
    if path is None:
        return load_squad_hub(source or HUB_NAME, split, max_examples, skip_invalid, skips)
    return load_squad(path, max_examples, skip_invalid, skips)


def build_model(model_path: str, raw_train=None, cfg: Any = None):
    """A QA head needs no label set: building and loading a trained model are the same call."""
    from transformers import AutoModelForQuestionAnswering

    from nlpbatch.models import load_quietly

    return load_quietly(AutoModelForQuestionAnswering, model_path)


def tokenize_windows(questions: list[str], contexts: list[str], tokenizer, max_length: int, stride: int):
    """Question first, only the context truncated, overlapping windows of `stride` tokens, char offsets kept."""
    if tokenizer.padding_side != "right":
        raise ValueError("question-first windows need a tokenizer that pads on the right")
    return tokenizer(
        [q.lstrip() for q in questions],
        list(contexts),
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def context_span(sequence_ids: list[int | None]) -> tuple[int, int]:
    """First and last token index of the context (sequence 1) in a window."""
    start = sequence_ids.index(1)
    end = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    return start, end


def answer_positions(offsets, sequence_ids, answer_start: int, answer_text: str) -> tuple[int, int]:
    """Token (start, end) of the answer in a window, or (0, 0) (the CLS token) when the window does not hold it."""
    start_char, end_char = answer_start, answer_start + len(answer_text)
    ctx_start, ctx_end = context_span(sequence_ids)
    if offsets[ctx_start][0] > start_char or offsets[ctx_end][1] < end_char:
        return 0, 0
    tok_start = ctx_start
    while tok_start <= ctx_end and offsets[tok_start][0] <= start_char:
        tok_start += 1
    tok_end = ctx_end
    while tok_end >= ctx_start and offsets[tok_end][1] >= end_char:
        tok_end -= 1
    return tok_start - 1, tok_end + 1


def train_features(raw, tokenizer, cfg: Any) -> list[dict]:
    enc = tokenize_windows(raw["question"], raw["context"], tokenizer, cfg.max_length, cfg.doc_stride)
    answers = raw["answers"]
    feats = []
    for i, example_idx in enumerate(enc["overflow_to_sample_mapping"]):
        ans = answers[example_idx]
        start, end = answer_positions(
            enc["offset_mapping"][i], enc.sequence_ids(i), ans["answer_start"][0], ans["text"][0]
        )
        inputs = model_inputs({k: enc[k][i] for k in enc.keys()})
        feats.append({**inputs, "start_positions": start, "end_positions": end, "index": i})
    return feats


def eval_features(raw, tokenizer, cfg: Any) -> list[dict]:
    """Windows for scoring: model inputs, the example each window came from, and its context-only offsets."""
    enc = tokenize_windows(raw["question"], raw["context"], tokenizer, cfg.max_length, cfg.doc_stride)
    feats = []
    for i, example_idx in enumerate(enc["overflow_to_sample_mapping"]):
        seq = enc.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq)]
        inputs = model_inputs({k: enc[k][i] for k in enc.keys()})
        feats.append({**inputs, "index": i, "example_idx": int(example_idx), "offsets": offsets})
    return feats


def collator(tokenizer):
    from transformers import DataCollatorWithPadding

    pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=PAD_MULTIPLE)

    def collate(features: list[dict]) -> dict:
        return pad([{k: f[k] for k in BATCH_KEYS if k in f} for f in features])

    return collate


def outputs_to_gather(output, batch) -> dict:
    return {
        "start_logits": (output.start_logits.float(), -1e4),
        "end_logits": (output.end_logits.float(), -1e4),
    }


def _context_softmax(logits: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Softmax over the window's context tokens (others get 0), as the transformers QA pipeline scores spans."""
    masked = np.where(context, logits.astype(np.float64), -np.inf)
    shifted = np.exp(masked - masked[context].max()) if context.any() else np.zeros_like(masked)
    return shifted / shifted.sum() if shifted.sum() else shifted


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    windows: list[dict],
    contexts: list[str],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> list[dict]:
    """The best answer per example over all its windows.

    For each window, the n-best start and end tokens are paired; a pair counts if both lie in the context
    (offsets not None), end >= start and the span is at most `max_answer_length` tokens. The score is
    start_logit + end_logit; `probability` is P(start) * P(end) under a softmax over the window's context tokens
    (in [0, 1], as the transformers QA pipeline reports). An example with no valid span gets the empty answer
    with `"empty": True`.
    """
    best: list[dict | None] = [None] * len(contexts)
    for w, window in enumerate(windows):
        offsets = window["offsets"]
        n_tokens = len(offsets)
        s_logits, e_logits = start_logits[w][:n_tokens], end_logits[w][:n_tokens]
        starts = np.argsort(s_logits)[::-1][:n_best]
        ends = np.argsort(e_logits)[::-1][:n_best]
        ex = window["example_idx"]
        context = np.array([o is not None for o in offsets])
        p_start, p_end = _context_softmax(s_logits, context), _context_softmax(e_logits, context)
        for s in starts:
            if offsets[s] is None:
                continue
            for e in ends:
                if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(s_logits[s] + e_logits[e])
                if best[ex] is None or score > best[ex]["score"]:
                    start_char, end_char = offsets[s][0], offsets[e][1]
                    probability = float(p_start[s] * p_end[e])
                    best[ex] = {"start": start_char, "end": end_char, "score": score, "probability": probability}
    answers = []
    for ex, span in enumerate(best):
        if span is None:
            answers.append(
                {"text": "", "start": -1, "end": -1, "score": float("-inf"), "probability": 0.0, "empty": True}
            )
        else:
            answers.append({**span, "text": contexts[ex][span["start"] : span["end"]], "empty": False})
    return answers


def score(gathered: dict, eval_feats: list[dict], raw, model_config, cfg: Any = None):
    from nlpbatch.metrics import squad_scores

    n_best, max_len = (cfg.n_best, cfg.max_answer_length) if cfg is not None else (20, 30)
    spans = best_spans(
        gathered["start_logits"], gathered["end_logits"], eval_feats, list(raw["context"]), n_best, max_len
    )
    ids = list(raw["id"])
    predictions = {qid: span["text"] for qid, span in zip(ids, spans)}
    references = {qid: ans["text"] for qid, ans in zip(ids, raw["answers"])}
    metrics = squad_scores(predictions, references)
    metrics["windows"] = len(eval_feats)
    metrics["empty_answers"] = sum(span["empty"] for span in spans)
    return metrics, predictions


QA_TASK = Task(
    name="qa",
    load_split=load_split,
    build_model=build_model,
    load_trained=build_model,
    train_features=train_features,
    eval_features=eval_features,
    collator=collator,
    outputs_to_gather=outputs_to_gather,
    score=score,
)
