"""Extractive QA: sliding-window features with offsets, n-best span post-processing, SQuAD v1.1 / v2.0 scoring.

Unanswerable questions (SQuAD v2.0) are trained as Hugging Face's `run_qa --version_2_with_negative` trains them:
every window of such a question points at the CLS token. At prediction time a question's null score is the lowest
CLS score (start + end logit) over its windows; "no answer" wins when the null score beats the best span by more
than the null threshold (`--null-threshold`; training stores the best one found on the validation set in the
model card, and evaluate and annotate read it from there). A model without a threshold always answers (v1.1).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from nlpbatch.data.squad import HUB_NAME, load_squad, load_squad_hub
from nlpbatch.rows import failure, passthrough, timed, window_pairs
from nlpbatch.tasks.base import PAD_MULTIPLE, Task, identity, locate_split, model_inputs, no_labels

BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions", "index")


def load_split(
    source: str | None, split: str, max_examples: int | None = None, skip_invalid=False, skips=None, **_: Any
):
    """`source`: a SQuAD JSON file, a data dir (DIR/squad/SPLIT.json or DIR/SPLIT.json), or a hub dataset name."""
    path = locate_split(source, split, "squad", ".json", "SQuAD")
    if path is None:
        return load_squad_hub(source or HUB_NAME, split, max_examples, skip_invalid, skips)
    return load_squad(path, max_examples, skip_invalid, skips)


def build_model(model_path: str, raw_train=None, cfg: Any = None):
    """A QA head needs no label set: building and loading a trained model are the same call. Its head has two
    outputs (start, end) whatever head the base had: a fine-tuned NER or classification model's is replaced."""
    from transformers import AutoModelForQuestionAnswering

    from nlpbatch.models import load_quietly

    return load_quietly(AutoModelForQuestionAnswering, model_path, num_labels=2, ignore_mismatched_sizes=True)


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
        start, end = 0, 0  # an unanswerable question: every window points at CLS
        if ans["text"]:
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
    with `"empty": True`. `null_margin`: the example's null score (the lowest CLS start + end logit over its
    windows) minus its best span's score; "no answer" is predicted where it exceeds the null threshold.
    """
    best: list[dict | None] = [None] * len(contexts)
    null = np.full(len(contexts), np.inf)
    for w, window in enumerate(windows):
        offsets = window["offsets"]
        n_tokens = len(offsets)
        s_logits, e_logits = start_logits[w][:n_tokens], end_logits[w][:n_tokens]
        starts = np.argsort(s_logits)[::-1][:n_best]
        ends = np.argsort(e_logits)[::-1][:n_best]
        ex = window["example_idx"]
        null[ex] = min(null[ex], float(s_logits[0] + e_logits[0]))  # the CLS token
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
            empty = {"text": "", "start": -1, "end": -1, "score": float("-inf"), "probability": 0.0, "empty": True}
            answers.append({**empty, "null_margin": float("inf")})
        else:
            text = contexts[ex][span["start"] : span["end"]]
            answers.append({**span, "text": text, "empty": False, "null_margin": float(null[ex] - span["score"])})
    return answers


def is_null(span: dict, null_threshold: float | None) -> bool:
    """No answer: no valid span, or (with a threshold: a SQuAD v2.0 model) the null score wins by more than it."""
    return span["empty"] or (null_threshold is not None and span["null_margin"] > null_threshold)


def score(gathered: dict, eval_feats: list[dict], raw, model_config, cfg: Any = None):
    """SQuAD v1.1 scores, or, when the data has unanswerable questions or a null threshold is set, SQuAD v2.0's
    (HasAns / NoAns, and the best null threshold for EM and F1 over the best spans' null margins)."""
    from nlpbatch.metrics import squad_scores, squad_v2_scores

    n_best, max_len = (cfg.n_best, cfg.max_answer_length) if cfg is not None else (20, 30)
    threshold = getattr(cfg, "null_threshold", None)
    spans = best_spans(
        gathered["start_logits"], gathered["end_logits"], eval_feats, list(raw["context"]), n_best, max_len
    )
    ids = list(raw["id"])
    references = {qid: ans["text"] for qid, ans in zip(ids, raw["answers"])}
    if threshold is None and all(references.values()):  # SQuAD v1.1: every question has an answer
        predictions = {qid: span["text"] for qid, span in zip(ids, spans)}
        metrics = squad_scores(predictions, references)
    else:
        threshold = threshold or 0.0
        predictions = {qid: "" if is_null(span, threshold) else span["text"] for qid, span in zip(ids, spans)}
        metrics = squad_v2_scores(predictions, references)
        best = {qid: span["text"] for qid, span in zip(ids, spans)}
        margins = {qid: min(span["null_margin"], 1e9) for qid, span in zip(ids, spans)}
        tuned = squad_v2_scores(best, references, margins)
        metrics.update({k: tuned[k] for k in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")})
        metrics["null_threshold"] = threshold
    metrics["windows"] = len(eval_feats)
    metrics["empty_answers"] = sum(not text for text in predictions.values())
    return metrics, predictions


# --- inference: start/end logits of overlapping windows -> the best answer span per (document, question) ---

ANSWER = pa.struct([("text", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])


def _pad_rows(rows: list[list[float]]):
    """Ragged per-window logits -> one [windows, max_len] array; the padding is never read (offsets bound it)."""
    width = max(len(r) for r in rows)
    return np.array([r + [-1e4] * (width - len(r)) for r in rows], dtype=np.float32)


def decode_table(batch: pa.Table, n_best: int, max_answer_length: int, null_threshold: float | None = None) -> pa.Table:
    """The best answer per (document, question) over its windows; `no_answer` where there is none (or, for a SQuAD
    v2.0 model, where the null score wins), with `null_margin`: how much the model prefers "no answer"."""
    t0 = time.perf_counter()
    answers, empty, margins = [], [], []
    reasons = batch.column("_reject").to_pylist()
    rows = zip(
        batch.column("text").to_pylist(),
        batch.column("_reject").to_pylist(),
        batch.column("_offsets").to_pylist(),
        batch.column("_start").to_pylist(),
        batch.column("_end").to_pylist(),
    )
    for row, (text, reject, offs, starts, ends) in enumerate(rows):
        if reject is not None:
            answers.append(None)
            empty.append(None)
            margins.append(None)
            continue
        windows = [
            {"offsets": [None if s < 0 else (s, e) for s, e in o], "example_idx": 0}
            for o, _ in window_pairs(offs, [None] * len(offs))
        ]
        try:
            [best] = best_spans(_pad_rows(starts), _pad_rows(ends), windows, [text], n_best, max_answer_length)
        except Exception as err:  # one row's failure is that row's reject, never the job's
            reasons[row] = "decode failed: " + failure(err)
            answers.append(None)
            empty.append(None)
            margins.append(None)
            continue
        answers.append(
            {k: best[k] for k in ("text", "start", "end")} | {"score": None if best["empty"] else best["probability"]}
        )
        empty.append(is_null(best, null_threshold))
        margins.append(None if best["empty"] else best["null_margin"])
    out = passthrough(batch, ["id", "question"], reasons).append_column("answer", pa.array(answers, ANSWER))
    out = out.append_column("no_answer", pa.array(empty, pa.bool_()))
    out = out.append_column("null_margin", pa.array(margins, pa.float64()))
    return timed(out, "decode", time.perf_counter() - t0)


def decode_options(cfg: Any, model_config: Any) -> dict:
    return {"n_best": cfg.n_best, "max_answer_length": cfg.max_answer_length, "null_threshold": cfg.null_threshold}


def spans(row: dict) -> list[tuple[int, int, str, float | None]]:
    answer = row.get("answer")
    if not answer or row.get("no_answer") or answer.get("start") is None:
        return []
    return [(answer["start"], answer["end"], "ANSWER", answer.get("score"))]


def summary(row: dict) -> str:
    """`show`'s line for a QA row: "no answer" (and how much the model prefers it), else nothing beyond the span."""
    if not row.get("no_answer"):
        return ""
    margin = row.get("null_margin")
    best = (row.get("answer") or {}).get("text")
    return "NO ANSWER" + (f" (null margin {margin:.2f} over the best span {best!r})" if margin is not None else "")


def check_train(cfg: Any) -> list[str]:
    if not 0 <= cfg.doc_stride < cfg.seq_length // 2:
        return [f"doc_stride: {cfg.doc_stride} must be in [0, half of max_length {cfg.seq_length})"]
    return []


def fingerprint(cfg: Any) -> dict:
    return {"doc_stride": cfg.doc_stride}


def card_settings(metrics: dict, cfg: Any, data_files=()) -> dict:
    """The null threshold evaluate and annotate use: the one given, else (SQuAD v2.0 validation data) the best for
    F1 on the validation set; none for a model trained and validated on answerable questions only."""
    if cfg.null_threshold is not None:
        return {"null_threshold": cfg.null_threshold}
    return {"null_threshold": metrics["best_f1_thresh"]} if "best_f1_thresh" in metrics else {}


def headline(ev: dict) -> str:
    line = f"EM {ev['exact_match']:.2f} F1 {ev['f1']:.2f}"
    if "best_f1" in ev:  # SQuAD v2.0
        line += f" (HasAns F1 {ev.get('HasAns_f1', 0):.2f}, NoAns F1 {ev.get('NoAns_f1', 0):.2f}; best F1 "
        line += f"{ev['best_f1']:.2f} at null threshold {ev['best_f1_thresh']:.2f})"
    return line


def plot_scores(history: list[dict]) -> list[tuple[str, list[float], str]]:
    return [
        ("F1 / 100", [h["eval"]["f1"] / 100 for h in history], "o-"),
        ("EM / 100", [h["eval"]["exact_match"] / 100 for h in history], "s-"),
    ]


def write_predictions(predictions: dict, path: str) -> None:
    """{id: answer text}: the official SQuAD script's format."""
    Path(path).write_text(json.dumps(predictions, indent=1, ensure_ascii=False), encoding="utf-8")


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
    label_names=no_labels,
    check_train=check_train,
    fingerprint=fingerprint,
    headline=headline,
    gate_metric=("f1", 100.0),
    plot_scores=plot_scores,
    write_predictions=write_predictions,
    architecture="QuestionAnswering",
    head_outputs=("start_logits", "end_logits"),
    default_window=384,
    pair=True,
    token_columns=(("_start", "float32"), ("_end", "float32")),
    reduce_torch=identity,
    reduce_numpy=identity,
    decode=decode_table,
    decode_options=decode_options,
    output_columns=("answer", "no_answer", "null_margin", "question"),
    summary=summary,
    spans=spans,
    card_settings=card_settings,
)
TASK = QA_TASK
