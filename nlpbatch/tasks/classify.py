"""Text and sentence-pair classification (one label per document: sentiment, topic, paraphrase or not). Pure
functions, and the task record that plugs them into training, evaluation, annotation and `show`.

Data: TSV / CSV files with a header (GLUE's files as distributed: tab-separated, unquoted, a UTF-8 BOM before the
header) or JSON Lines, with the columns `--text-column` (default `text`, else `sentence`), optionally
`--text-pair-column`, and `--label-column` (default `label`). Labels are the column's values as strings, sorted
(`0`, `1` for GLUE), or `--labels`. Training sees one window per example (truncated at `--max-length`, as the
Trainer does); evaluation and annotation classify a text longer than one window from all its windows, reduced the
same way (`--window-reduce`: the mean of the windows' probabilities, the first window's, or each label's maximum),
so `evaluate` scores what `annotate` writes. A sentence pair is one window (truncated, longest side first).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from nlpbatch.data import DataError, read_text
from nlpbatch.rows import passthrough, timed
from nlpbatch.tasks.base import PAD_MULTIPLE, Task, eval_stride, locate_split, no_errors

PROBABILITIES = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))


def read_rows(path: Path) -> list[dict]:
    """The rows of a TSV / CSV (header first; TSV unquoted as GLUE writes it) or JSONL file, as dicts."""
    text = read_text(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as err:
                    raise DataError(f"{path}:{number}: not a JSON line ({err})") from err
        return rows
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if path.suffix.lower() == ".tsv" else {}
    return list(csv.DictReader(text.splitlines(), **dialect))


def load_split(
    source: str | None,
    split: str,
    max_examples: int | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str = "label",
    labels: list[str] | None = None,
    **_: Any,
):
    """A Dataset with `text` (and `text_pair`) and a ClassLabel `label`, from a file, a data dir (DIR/SPLIT.tsv) or
    a hub dataset name. Every missing column or value names the file and row."""
    from datasets import ClassLabel, Dataset, Features, Value

    path = locate_split(source, split, "classify", ".tsv", "classification")
    if path is None:
        if source is None:
            raise DataError("classify: give --train/--validation files or --data-dir (no default dataset)")
        from nlpbatch.data import load_hub_dataset

        rows = load_hub_dataset(source, split, "SPLIT.tsv files").to_list()
        where = f"hub dataset {source}"
    else:
        rows = read_rows(path)
        where = str(path)
    if not rows:
        raise DataError(f"{where}: no rows")
    text_column = text_column or ("text" if "text" in rows[0] else "sentence")
    for column in (text_column, text_pair_column, label_column):
        if column and column not in rows[0]:
            flag = {text_column: "--text-column", text_pair_column: "--text-pair-column"}.get(column, "--label-column")
            raise DataError(f"{where}: no column {column!r} (columns: {', '.join(map(str, rows[0]))}); set {flag}")
    if max_examples is not None:
        rows = rows[:max_examples]
    texts, pairs, values = [], [], []
    for number, row in enumerate(rows, 2 if path is not None and path.suffix.lower() in (".tsv", ".csv") else 1):
        text, label = row.get(text_column), row.get(label_column)
        pair = row.get(text_pair_column) if text_pair_column else None
        if not isinstance(text, str) or label in (None, "") or (text_pair_column and not isinstance(pair, str)):
            raise DataError(
                f"{where}:{number}: a row needs {text_column!r}, {label_column!r}"
                + (f" and {text_pair_column!r}" if text_pair_column else "")
            )
        texts.append(text)
        pairs.append(pair)
        values.append(str(label))
    names = [n.strip() for n in labels.split(",")] if isinstance(labels, str) else list(labels or [])
    names += sorted(set(values) - set(names))
    columns = {"text": texts, "label": [names.index(v) for v in values]}
    features = {"text": Value("string"), "label": ClassLabel(names=names)}
    if text_pair_column:
        columns["text_pair"], features["text_pair"] = pairs, Value("string")
    return Dataset.from_dict(columns, features=Features(features))


def label_names(raw) -> list[str]:
    return list(raw.features["label"].names)


def _model_class():
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification


def build_model(model_path: str, raw_train, cfg: Any = None):
    from nlpbatch.models import load_quietly

    names = label_names(raw_train)
    return load_quietly(
        _model_class(),
        model_path,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,  # a fresh head, whatever head the base model had
    )


def load_trained(model_path: str):
    from nlpbatch.models import load_quietly

    return load_quietly(_model_class(), model_path)


INPUTS = ("input_ids", "attention_mask", "token_type_ids")
REDUCTIONS = ("mean", "first", "max")


def features(raw, tokenizer, cfg: Any) -> list[dict]:
    """One window per example, truncated at max_length (the pair's longer side first, as the Trainer does)."""
    pairs = list(raw["text_pair"]) if "text_pair" in raw.column_names else None
    enc = tokenizer(list(raw["text"]), pairs, truncation=True, max_length=cfg.max_length)
    keys = [k for k in INPUTS if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "labels": label, "index": i} for i, label in enumerate(raw["label"])]


def eval_features(raw, tokenizer, cfg: Any) -> list[dict]:
    """The windows annotate cuts: a single text longer than max_length in windows overlapping by the stride, each
    window recording its example; a pair in one truncated window."""
    if "text_pair" in raw.column_names:
        return [{**f, "example": f["index"]} for f in features(raw, tokenizer, cfg)]
    enc = tokenizer(
        list(raw["text"]),
        truncation=True,
        max_length=cfg.max_length,
        stride=eval_stride(cfg),
        return_overflowing_tokens=True,
    )
    keys = [k for k in INPUTS if k in enc]
    labels = raw["label"]
    return [
        {**{k: enc[k][j] for k in keys}, "labels": labels[example], "index": j, "example": example}
        for j, example in enumerate(enc["overflow_to_sample_mapping"])
    ]


def reduce_windows(probabilities: np.ndarray, how: str = "mean") -> np.ndarray:
    """One document's label probabilities from its windows' [windows, labels]: their mean, the first window's, or
    each label's maximum over the windows."""
    if how not in REDUCTIONS:
        raise ValueError(f"window_reduce {how!r} is not one of {REDUCTIONS}")
    probabilities = np.asarray(probabilities, np.float64)
    return {"mean": probabilities.mean(0), "first": probabilities[0], "max": probabilities.max(0)}[how]


def collator(tokenizer):
    import torch

    def collate(batch: list[dict]) -> dict:
        inputs = [{k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in f} for f in batch]
        padded = dict(tokenizer.pad(inputs, pad_to_multiple_of=PAD_MULTIPLE, return_tensors="pt"))
        padded["labels"] = torch.tensor([f["labels"] for f in batch])
        padded["index"] = torch.tensor([f["index"] for f in batch])
        return padded

    return collate


def outputs_to_gather(output, batch) -> dict:
    return {"probs": (output.logits.float().softmax(-1), -1.0), "labels": (batch["labels"][:, None], -1)}


def classification_scores(gold: list[int], pred: list[int], names: list[str]) -> dict:
    """Accuracy, per-class precision / recall / F1, macro and micro F1, the confusion matrix (rows: gold), and for
    two classes the F1 of the positive one (the second label: `1`), GLUE's MRPC figure."""
    n = len(names)
    matrix = np.zeros((n, n), np.int64)
    np.add.at(matrix, (np.asarray(gold, np.int64), np.asarray(pred, np.int64)), 1)
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(0), matrix.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(n), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=precision + recall > 0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "number": int(a)}
        for name, p, r, f, a in zip(names, precision, recall, f1, actual)
    }
    metrics = {
        "accuracy": float(tp.sum() / max(1, matrix.sum())),
        "macro_f1": float(f1.mean()) if n else 0.0,
        "micro_f1": float(tp.sum() / max(1, matrix.sum())),  # single-label: equals accuracy
        "per_class": per_class,
        "confusion_matrix": {"labels": names, "rows_gold_columns_predicted": matrix.tolist()},
        "n": int(matrix.sum()),
    }
    if n == 2:
        metrics["f1"] = float(f1[1])
    return metrics


def score(gathered: dict, eval_feats: list[dict], raw, model_config, cfg: Any = None):
    """Scores by label name: the model's prediction ids through its id2label, the data's gold ids through the
    data's labels, so differently ordered label lists still score right."""
    model_names = [model_config.id2label[i] for i in range(len(model_config.id2label))]
    data_names = label_names(raw)
    names = data_names + [n for n in model_names if n not in data_names]
    how = getattr(cfg, "window_reduce", "mean")
    probs = np.asarray(gathered["probs"])[:, : len(model_names)]
    windows: list[list[int]] = [[] for _ in range(len(raw))]
    for j, feature in enumerate(eval_feats):
        windows[feature["example"]].append(j)
    pred = [names.index(model_names[int(reduce_windows(probs[w], how).argmax())]) for w in windows]
    gold = [int(g) for g in raw["label"]]
    metrics = classification_scores(gold, pred, names)
    metrics["windows"] = len(eval_feats)
    return metrics, [names[p] for p in pred]


def _softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return (shifted / shifted.sum(-1, keepdims=True)).astype(np.float32)


def decode(batch: pa.Table, id2label: dict[int, str], window_reduce: str = "mean") -> pa.Table:
    """A document's label from its windows' probabilities (`reduce_windows`): `label`, `score` and every label's
    probability, most likely first."""
    t0 = time.perf_counter()
    reasons = batch.column("_reject").to_pylist()
    names = [id2label[i] for i in range(len(id2label))]
    labels, scores, probabilities = [], [], []
    for windows, reason in zip(batch.column("_probs").to_pylist(), reasons):
        if reason is not None or not windows:
            labels.append(None)
            scores.append(None)
            probabilities.append(None)
            continue
        mean = reduce_windows(windows, window_reduce)
        order = np.argsort(-mean, kind="stable")
        labels.append(names[order[0]])
        scores.append(float(mean[order[0]]))
        probabilities.append([{"label": names[i], "score": float(mean[i])} for i in order])
    out = passthrough(batch, ["id"], reasons)
    out = out.append_column("label", pa.array(labels, pa.string()))
    out = out.append_column("score", pa.array(scores, pa.float64()))
    out = out.append_column("probabilities", pa.array(probabilities, PROBABILITIES))
    return timed(out, "decode", time.perf_counter() - t0)


def _write_predictions(predictions: list[str], path: str) -> None:
    Path(path).write_text("\n".join(json.dumps({"index": i, "label": p}) for i, p in enumerate(predictions)) + "\n")


def _plot_scores(history: list[dict]) -> list[tuple[str, list[float], str]]:
    return [
        ("accuracy", [h["eval"]["accuracy"] for h in history], "o-"),
        ("macro F1", [h["eval"]["macro_f1"] for h in history], "s-"),
    ]


def _headline(ev: dict) -> str:
    return f"accuracy {ev['accuracy']:.4f}" + (f" F1 {ev['f1']:.4f}" if "f1" in ev else "")


def _summary(row: dict) -> str:
    return f"{row['label']} ({row['score']:.2f})" if row.get("label") is not None else ""


TASK = Task(
    name="classify",
    load_split=load_split,
    build_model=build_model,
    load_trained=load_trained,
    train_features=features,
    eval_features=eval_features,
    collator=collator,
    outputs_to_gather=outputs_to_gather,
    score=score,
    label_names=label_names,
    check_train=no_errors,
    fingerprint=lambda cfg: {k: getattr(cfg, k) for k in ("text_column", "text_pair_column", "label_column")},
    headline=_headline,
    plot_scores=_plot_scores,
    write_predictions=_write_predictions,
    architecture="SequenceClassification",
    head_outputs=("logits",),
    default_window=512,
    pair=False,
    token_columns=(),
    window_columns=(("_probs", "float32"),),
    reduce_torch=lambda outputs: [outputs[0].float().softmax(-1)],
    reduce_numpy=lambda outputs: [_softmax(outputs[0])],
    decode=decode,
    decode_options=lambda cfg, model_config: {
        "id2label": {int(k): v for k, v in model_config.id2label.items()},
        "window_reduce": cfg.window_reduce,
    },
    output_columns=("label", "score", "probabilities"),
    spans=lambda row: [],
    summary=_summary,
)
