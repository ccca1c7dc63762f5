"""NER (token classification): subword label alignment, batching, word-level scoring. Pure functions."""

from __future__ import annotations

import time
from glob import glob
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from nlpbatch.data.conll import HUB_NAME, NER_LABELS, load_conll_hub
from nlpbatch.rows import failure, flat_lists, offsets_array, passthrough, timed
from nlpbatch.tasks.base import (
    PAD_MULTIPLE,
    Task,
    eval_stride,
    locate_split,
    model_inputs,
    no_errors,
    nothing,
    softmax,
)

IGNORE = -100
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "index")


def continuation_ids(label_names: list[str]) -> list[int]:
    """For each label id, the id a word's continuation subtokens get: B-X -> I-X, everything else unchanged."""
    index = {name: i for i, name in enumerate(label_names)}
    return [index.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(label_names)]


def align_labels(word_ids: list[int | None], word_tags: list[int], cont: list[int]) -> tuple[list[int], list[int]]:
    """Subword labels for one sentence.

    `train`: the first subtoken keeps the word's tag, continuation subtokens get its I- form, special tokens -100
    (subtoken_labels="all"). `first_only`: only first subtokens keep a tag: the eval labels (scoring is at the word
    level) and the default training labels (subtoken_labels="first": CoNLL F1 0.914 vs 0.911, see README).
    """
    train, first_only = [], []
    previous = None
    for word in word_ids:
        if word is None:
            train.append(IGNORE)
            first_only.append(IGNORE)
        elif word != previous:
            train.append(word_tags[word])
            first_only.append(word_tags[word])
        else:
            train.append(cont[word_tags[word]])
            first_only.append(IGNORE)
        previous = word
    return train, first_only


def load_split(
    source: str | None,
    split: str,
    max_examples: int | None = None,
    labels: list[str] | str | None = None,
    tag_scheme: str = "auto",
    span_alignment: str = "expand",
    data_format: str = "auto",
    annotations: str = "auto",
    overlaps: str = "longest",
    text_key: str | None = None,
    tokens_column: str | None = None,
    tags_column: str | None = None,
    tag_column: int | None = None,
    **_: Any,
):
    """`source`: a file (column file, JSON Lines, Label Studio export, Parquet), a glob of such files, a data dir
    (DIR/conll2003/SPLIT.txt or DIR/SPLIT.txt), a folder laid out as a hub dataset, or a hub dataset name.
    `labels`: the label list to use (types it lacks are appended). The format comes from the extension and the
    content unless `data_format` names it."""
    if isinstance(labels, str):  # --labels as given; a list when it is the training split's
        from nlpbatch.data.conll import parse_labels

        labels = parse_labels(labels)
    if source and any(c in source for c in "*?["):
        paths = sorted(Path(p) for p in glob(source, recursive=True))
        if not paths:
            raise FileNotFoundError(f"{source}: no file matches")
    else:
        path = locate_split(source, split, "conll2003", ".txt", "CoNLL")
        if path is None:
            return load_conll_hub(source or HUB_NAME, split, max_examples, tokens_column, tags_column, tag_scheme)
        paths = [path]
    from nlpbatch.data.conll import parse_conll, rows_dataset
    from nlpbatch.data.spans import REPORTS, load_records

    rows = []
    for path in paths:
        columns = path.suffix.lower() not in (".jsonl", ".json", ".parquet", ".spacy")
        if data_format == "conll" or (data_format == "auto" and columns):
            found = parse_conll(path, tag_scheme, tag_column)
            REPORTS.append({"file": str(path), "format": "conll", "examples": len(found)})
        else:  # token/tag lists, or character spans as labelling tools export them
            found = load_records(
                path,
                span_alignment,
                tag_scheme,
                data_format,
                tokens_column,
                tags_column,
                labels,
                annotations,
                overlaps,
                text_key,
            )
        rows += [{**row, "id": f"{path.name}:{row['id']}" if len(paths) > 1 else row["id"]} for row in found]
    return rows_dataset(rows, max_examples, labels)


def label_names(raw) -> list[str]:
    return list(raw.features["ner_tags"].feature.names)


def load_trained(model_path: str):
    from transformers import AutoModelForTokenClassification

    from nlpbatch.models import load_quietly

    return load_quietly(AutoModelForTokenClassification, model_path)


def build_model(model_path: str, raw_train, cfg: Any = None):
    from transformers import AutoModelForTokenClassification

    from nlpbatch.models import load_quietly

    names = label_names(raw_train)
    return load_quietly(
        AutoModelForTokenClassification,
        model_path,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,  # a fresh head for this label set, whatever head the base model had
    )


def train_features(raw, tokenizer, cfg: Any) -> list[dict]:
    """One window per sentence, truncated at max_length; continuation subtokens trained or not (subtoken_labels)."""
    enc = tokenizer(list(raw["tokens"]), is_split_into_words=True, truncation=True, max_length=cfg.max_length)
    cont = continuation_ids(label_names(raw))
    first_only = getattr(cfg, "subtoken_labels", "first") == "first"
    feats = []
    for i, tags in enumerate(raw["ner_tags"]):
        train, first = align_labels(enc.word_ids(i), tags, cont)
        inputs = model_inputs({k: enc[k][i] for k in enc.keys()})
        feats.append({**inputs, "labels": first if first_only else train, "index": i})
    return feats


def eval_features(raw, tokenizer, cfg: Any) -> list[dict]:
    """The windows annotate cuts: `max_length` tokens overlapping by `eval_stride`, so a sentence longer than one
    window is scored as annotate would label it (not truncated). Labels on first subtokens only (scoring is per
    word); each window records its sentence ("example"), each position its word and the word-relative start
    character of its subtoken, which identify a token seen by two windows."""
    enc = tokenizer(
        list(raw["tokens"]),
        is_split_into_words=True,
        truncation=True,
        max_length=cfg.max_length,
        stride=eval_stride(cfg),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    cont = continuation_ids(label_names(raw))
    all_tags = raw["ner_tags"]
    feats = []
    for j, example in enumerate(enc["overflow_to_sample_mapping"]):
        word_ids = enc.word_ids(j)
        _, first = align_labels(word_ids, all_tags[example], cont)
        feature = {**model_inputs({k: enc[k][j] for k in enc.keys()}), "labels": first, "index": j}
        feature["example"] = example
        feature["word_index"] = [-1 if w is None else w for w in word_ids]
        feature["word_start"] = [start for start, _ in enc["offset_mapping"][j]]
        feats.append(feature)
    return feats


def collator(tokenizer):
    from transformers import DataCollatorForTokenClassification

    pad = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=PAD_MULTIPLE, label_pad_token_id=IGNORE)

    def collate(features: list[dict]) -> dict:
        return pad([{k: f[k] for k in BATCH_KEYS if k in f} for f in features])

    return collate


def outputs_to_gather(output, batch) -> dict:
    return {"pred": (output.logits.argmax(-1), IGNORE), "labels": (batch["labels"], IGNORE)}


def window_margins(token_windows: np.ndarray, positions: np.ndarray, n_windows: int) -> np.ndarray:
    """Each scored token's distance from the nearest edge of its window's scored tokens (`positions`: the token's
    place in its window). Where windows overlap, the window in which a token lies farthest from an edge (the most
    context on both sides) predicts it: annotate's decode and evaluate's word tags both take this rule."""
    first = np.full(n_windows, np.iinfo(np.int64).max)
    last = np.full(n_windows, -1)
    np.minimum.at(first, token_windows, positions)
    np.maximum.at(last, token_windows, positions)
    return np.minimum(positions - first[token_windows], last[token_windows] - positions)


def word_labels(eval_feats: list[dict], pred) -> dict[tuple[int, int], int]:
    """{(sentence, word): predicted label id} from all windows: each token from the window where it has the
    largest margin (ties: the earlier window), each word from its first subtoken, as annotate's `first`
    aggregation decides. A word with no subtoken in any window is absent."""
    if not eval_feats:
        return {}
    words = [np.asarray(f["word_index"], np.int64) for f in eval_feats]
    window = np.concatenate([np.full(len(w), k) for k, w in enumerate(words)])
    position = np.concatenate([np.arange(len(w)) for w in words])
    example = np.concatenate([np.full(len(w), f["example"]) for f, w in zip(eval_feats, words)])
    word = np.concatenate(words)
    start = np.concatenate([np.asarray(f["word_start"], np.int64) for f in eval_feats])
    pred = np.asarray(pred)
    label = pred[window, np.minimum(position, pred.shape[1] - 1)]
    scored = word >= 0
    window, position, example, word, start, label = (a[scored] for a in (window, position, example, word, start, label))
    margin = window_margins(window, position, len(eval_feats))
    order = np.lexsort((window, -margin, start, word, example))
    best = order[_run_starts(example[order], word[order], start[order])]  # one prediction per token
    first = best[_run_starts(example[best], word[best])]  # tokens sorted by start: a word's first subtoken
    return dict(zip(zip(example[first].tolist(), word[first].tolist()), label[first].tolist()))


def score(gathered: dict, eval_feats: list[dict], raw, model_config, cfg: Any = None) -> tuple[dict, list[dict]]:
    """Entity-level scores over every word of the data (seqeval, conlleval-compatible). Gold tags come from the
    data's label list, predictions from the model's id2label, so a model whose labels are ordered differently
    from the data is still scored correctly. A word with no subtoken at all (U+200B) has no prediction and counts
    as "O", so its gold entity stays in the recall denominator, as conlleval would score it. Predictions: per
    sentence {"words", "gold", "pred"}."""
    from nlpbatch.metrics import seqeval_scores

    pred_names = {int(k): v for k, v in model_config.id2label.items()}
    gold_names = label_names(raw)
    known = {name[2:] for name in pred_names.values() if name != "O"}
    labels = word_labels(eval_feats, gathered["pred"])
    golds, preds, predictions = [], [], []
    unpredicted_words = unpredicted_sentences = 0
    for i, (words, tags) in enumerate(zip(raw["tokens"], raw["ner_tags"])):
        gold = [gold_names[t] for t in tags]
        found = [labels.get((i, w)) for w in range(len(words))]
        pred = ["O" if p is None else pred_names[int(p)] for p in found]
        missing = found.count(None)
        unpredicted_words += missing
        unpredicted_sentences += missing > 0
        golds.append(gold)
        preds.append(pred)
        predictions.append({"words": list(words), "gold": gold, "pred": pred})
    metrics = seqeval_scores(golds, preds)
    # types of the data the model was never trained on: scored (they count against recall), and named
    metrics["unknown_types"] = sorted({t[2:] for g in golds for t in g if t != "O"} - known)
    metrics["n"] = len(preds)
    metrics["words"] = sum(len(g) for g in golds)
    metrics["windows"] = len(eval_feats)  # more than n where sentences are longer than one window
    # words without a prediction (scored as "O"): no subtokens at all
    metrics["unpredicted_words"] = unpredicted_words
    metrics["unpredicted_sentences"] = unpredicted_sentences
    return metrics, predictions


def conll_lines(predictions: list[dict]) -> str:
    """`word gold pred` per word, a blank line between sentences: the format conlleval reads."""
    blocks = ["\n".join(f"{w} {g} {p}" for w, g, p in zip(s["words"], s["gold"], s["pred"])) for s in predictions]
    return "\n\n".join(blocks) + "\n"


# --- inference: per-token predictions of overlapping windows -> entity spans with character offsets ---

AGGREGATIONS = ("simple", "first", "max")


def _split_tag(name: str) -> tuple[str, str]:
    """("B"|"I", type) the way the transformers pipeline reads tags: anything not B-/I- continues as I."""
    if name.startswith(("B-", "I-")):
        return name[0], name[2:]
    return "I", name


def _run_starts(*keys: np.ndarray, also: np.ndarray | None = None) -> np.ndarray:
    """Indices where a run of equal consecutive key tuples starts (or where `also` is set)."""
    changed = np.zeros(len(keys[0]), bool)
    changed[:1] = True
    for key in keys:
        changed[1:] |= key[1:] != key[:-1]
    if also is not None:
        changed |= also
    return np.flatnonzero(changed)


def _run_ends(starts: np.ndarray, n: int) -> np.ndarray:
    """The last index of each run, given the runs' starts over n elements."""
    return np.append(starts[1:], n)[: len(starts)] - 1


def decode_spans(
    window_rows: np.ndarray,
    token_windows: np.ndarray,
    offsets: np.ndarray,
    word_ids: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    id2label: dict[int, str],
    aggregation: str = "first",
) -> dict[str, np.ndarray]:
    """Entity spans of a whole batch of documents from their windows' per-token predictions, in array code:
    Python runs per label name, never per token.

    Per token (flat over all windows, each window's tokens in order): `token_windows` its window, `offsets`
    [n, 2] its characters, `word_ids` its word (-1: special or question token), `labels`/`scores` the argmax
    label and its probability; `window_rows`: each window's document. A token seen by several windows takes the
    prediction of the window in which it lies farthest from an edge (the most context on both sides; ties: the
    earlier window), so entities are neither cut nor duplicated at the seams. Aggregation: "simple" groups tokens,
    "first"/"max" first make words (the first / highest-scoring subtoken decides). Consecutive units of one type,
    not restarted by a B- tag, form an entity (the transformers pipeline's grouping), scored by the mean of its
    members. Returns equal-length arrays, one element per entity in document then character order: row, label
    (type name), start, end, score.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} is not one of {AGGREGATIONS}")
    # each scored token's margin: its distance from its window's first/last scored token
    scored = np.flatnonzero(word_ids >= 0)
    window = token_windows[scored]
    position = scored - np.searchsorted(token_windows, token_windows[scored])
    margin = window_margins(window, position, len(window_rows))
    row, start, end = window_rows[window], offsets[scored, 0].astype(np.int64), offsets[scored, 1].astype(np.int64)
    # one prediction per (document, start, end): the best window's, sorted by document and characters
    order = np.lexsort((scored, -margin, end, start, row))
    best = order[_run_starts(row[order], start[order], end[order])]
    row, start, end, token = row[best], start[best], end[best], scored[best]
    word, label, score = word_ids[token], labels[token].astype(np.int64), scores[token].astype(np.float64)
    if aggregation != "simple" and len(row):  # tokens -> words
        words = _run_starts(row, word)
        last_token = _run_ends(words, len(row))
        chosen = words
        if aggregation == "max":  # the first subtoken with its word's highest score
            word_of = np.repeat(np.arange(len(words)), np.diff(np.append(words, len(row))))
            top = np.maximum.reduceat(score, words)[word_of]
            chosen = np.minimum.reduceat(np.where(score == top, np.arange(len(row)), len(row)), words)
        row, start, end, label, score = row[words], start[words], end[last_token], label[chosen], score[chosen]
    # units -> entities: a new group at each document, type change or B- tag; "O" groups are dropped
    tags = [_split_tag(id2label.get(i, "O")) for i in range(max(id2label) + 1)]
    kinds = sorted({kind for _, kind in tags})
    kind = np.array([kinds.index(kind) for _, kind in tags])[label]
    groups = _run_starts(row, kind, also=np.array([bi == "B" for bi, _ in tags])[label])
    last_unit = _run_ends(groups, len(row))
    means = np.add.reduceat(score, groups) / np.diff(np.append(groups, len(row))) if len(row) else score
    entity = kind[groups] != (kinds.index("O") if "O" in kinds else -1)
    return {
        "row": row[groups][entity],
        "label": np.array(kinds, dtype=object)[kind[groups][entity]],
        "start": start[groups][entity],
        "end": end[last_unit][entity],
        "score": means[entity],
    }


def label_scores(logits: np.ndarray) -> list[np.ndarray]:
    """Logits [..., labels] -> the argmax label (int8) and its softmax probability (float32) per token."""
    probs = softmax(logits)
    return [probs.argmax(-1).astype(np.int8), probs.max(-1).astype(np.float32)]


def _reduce_numpy(outputs: list[np.ndarray]) -> list[np.ndarray]:
    return label_scores(outputs[0])


def _reduce_torch(outputs: list) -> list:
    """On the device: one label byte and one probability per token come back instead of a row of logits."""
    import torch

    scores, labels = outputs[0].float().softmax(-1).max(-1)
    return [labels.to(torch.int8), scores]


ENTITY = pa.struct(
    [("label", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("text", pa.string()), ("score", pa.float64())]
)


def _ner_entities(
    batch: pa.Table, id2label: dict[int, str], aggregation: str, calibration=None, min_score=None
) -> pa.ListArray:
    window_rows, token_windows, word_ids = flat_lists(batch.column("_word_ids"))
    offsets = flat_lists(batch.column("_offsets"))[2].reshape(-1, 2)
    labels, scores = flat_lists(batch.column("_labels"))[2], flat_lists(batch.column("_scores"))[2]
    spans = decode_spans(window_rows, token_windows, offsets, word_ids, labels, scores, id2label, aggregation)
    from nlpbatch.calibration import apply

    spans["score"] = apply(calibration, spans["score"])  # the card's calibrator: P(the entity is exactly right)
    if min_score is not None:  # the card's threshold for a target precision: only entities at or above it
        keep = spans["score"] >= min_score
        spans = {k: v[keep] for k, v in spans.items()}
    texts = batch.column("text").to_pylist()
    cut = [texts[r][a:b] for r, a, b in zip(spans["row"].tolist(), spans["start"].tolist(), spans["end"].tolist())]
    fields = [spans["label"], spans["start"], spans["end"], cut, spans["score"]]
    entities = pa.StructArray.from_arrays([pa.array(v, f.type) for v, f in zip(fields, ENTITY)], fields=list(ENTITY))
    rejected = pa.array([r is not None for r in batch.column("_reject").to_pylist()], pa.bool_())
    counts = np.bincount(spans["row"], minlength=batch.num_rows)
    return pa.ListArray.from_arrays(offsets_array(counts), entities, type=pa.list_(ENTITY), mask=rejected)


def decode_table(
    batch: pa.Table, id2label: dict[int, str], aggregation: str, calibration=None, min_score=None
) -> pa.Table:
    """Entity spans per document (`tasks.ner.decode_spans` over the whole batch), their scores calibrated when the
    model card holds a calibrator (`calibration.py`). A row the decode fails on becomes a reject with the reason,
    never the job's failure."""
    t0 = time.perf_counter()
    reasons = batch.column("_reject").to_pylist()
    try:
        entities = _ner_entities(batch, id2label, aggregation, calibration, min_score)
    except Exception:  # find the row(s) at fault
        parts = []
        for row in range(batch.num_rows):
            try:
                parts.append(_ner_entities(batch.slice(row, 1), id2label, aggregation, calibration, min_score))
            except Exception as err:
                reasons[row] = "decode failed: " + failure(err)
                parts.append(pa.nulls(1, pa.list_(ENTITY)))
        entities = pa.concat_arrays(parts)
    out = passthrough(batch, ["id"], reasons).append_column("entities", entities)
    return timed(out, "decode", time.perf_counter() - t0)


def char_spans(words: list[str], tags: list[str]) -> set[tuple[int, int, str]]:
    """IOB2 word tags -> (start, end, type) character spans in the words joined by single spaces (conlleval: an I-
    after O opens one)."""
    starts, at = [], 0
    for word in words:
        starts.append(at)
        at += len(word) + 1
    found, open_ = set(), None
    for i, tag in enumerate([*tags, "O"]):
        if open_ is not None and not (tag.startswith("I-") and tag[2:] == open_[1]):
            found.add((starts[open_[0]], starts[i - 1] + len(words[i - 1]), open_[1]))
            open_ = None
        if tag.startswith("B-") or (tag.startswith("I-") and open_ is None):
            open_ = (i, tag[2:])
    return found


def score_outcomes(raw, annotate) -> tuple[np.ndarray, np.ndarray]:
    """(score, exactly right) of every entity annotate writes for labelled sentences: `annotate` gets the
    sentences as texts (words joined by spaces, as the model's words), an entity is right when its start, end and
    type equal a gold entity's (conlleval's rule): what a calibrated entity score is the probability of."""
    names = raw.features["ner_tags"].feature.names
    words = raw["tokens"]
    golds = [char_spans(w, [names[t] for t in tags]) for w, tags in zip(words, raw["ner_tags"])]
    rows = annotate([" ".join(w) for w in words])
    scores, correct = [], []
    for row, gold in zip(rows, golds):
        for entity in row.get("entities") or []:
            scores.append(entity["score"])
            correct.append((entity["start"], entity["end"], entity["label"]) in gold)
    return np.asarray(scores, float), np.asarray(correct, bool)


def card_settings(metrics: dict, cfg: Any, data_files=()) -> dict:
    """The words the model was trained on, which annotate must group tokens into: the data's own tokens
    (whitespace-delimited: CoNLL, token lists, hub datasets) or, when every training file was a span export,
    the pieces the span readers cut (BERT pre-tokenization: punctuation apart)."""
    spans_only = bool(data_files) and all(f.get("format") not in ("tokens", "conll") for f in data_files)
    return {"word_unit": "pretokenized" if spans_only else "whitespace"}


def decode_options(cfg: Any, model_config: Any) -> dict:
    return {"id2label": {int(k): v for k, v in model_config.id2label.items()}, "aggregation": cfg.aggregation}


def spans(row: dict) -> list[tuple[int, int, str, float | None]]:
    return [(e["start"], e["end"], e["label"], e.get("score")) for e in row.get("entities") or []]


def headline(ev: dict) -> str:
    return f"f1 {ev['overall_f1']:.4f}"


def plot_scores(history: list[dict]) -> list[tuple[str, list[float], str]]:
    return [("entity F1", [h["eval"]["overall_f1"] for h in history], "o-")]


def write_predictions(predictions: list[dict], path: str) -> None:
    Path(path).write_text(conll_lines(predictions), encoding="utf-8")


NER_TASK = Task(
    name="ner",
    load_split=load_split,
    build_model=build_model,
    load_trained=load_trained,
    train_features=train_features,
    eval_features=eval_features,
    collator=collator,
    outputs_to_gather=outputs_to_gather,
    score=score,
    label_names=label_names,
    check_train=no_errors,
    fingerprint=nothing,
    headline=headline,
    gate_metric=("overall_f1", 1.0),
    score_outcomes=score_outcomes,
    card_settings=card_settings,
    groups_words=True,
    plot_scores=plot_scores,
    write_predictions=write_predictions,
    architecture="TokenClassification",
    head_outputs=("logits",),
    default_window=512,
    pair=False,
    token_columns=(("_labels", "int8"), ("_scores", "float32")),
    reduce_torch=_reduce_torch,
    reduce_numpy=_reduce_numpy,
    decode=decode_table,
    decode_options=decode_options,
    output_columns=("entities",),
    spans=spans,
    span_formats=True,
)
TASK = NER_TASK

__all__ = ["NER_LABELS", "NER_TASK", "align_labels", "conll_lines", "continuation_ids", "decode_spans", "word_labels"]
