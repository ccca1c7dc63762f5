"""The CPU stages of annotation as pure batch functions (pyarrow Table in, pyarrow Table out).

Every row carries `_reject`: null for a good row, else the reason it cannot be annotated. Rejected rows flow
through every stage untouched so they reach the rejects output: nothing is dropped silently.
"""

from __future__ import annotations

import functools
import json
import time

import pyarrow as pa

from nlpbatch.tasks.ner import decode_entities
from nlpbatch.tasks.qa import best_spans

ROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("question", pa.string()),
        ("source", pa.string()),
        ("_reject", pa.string()),
        ("_input", pa.string()),
    ]
)
INT_LISTS = pa.list_(pa.list_(pa.int32()))
FLOAT_LISTS = pa.list_(pa.list_(pa.float32()))
ENTITY = pa.struct(
    [("label", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("text", pa.string()), ("score", pa.float64())]
)
ANSWER = pa.struct([("text", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])


@functools.lru_cache(maxsize=4)
def get_tokenizer(model_path: str):
    """One tokenizer per worker process, not one per batch."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def _timed(table: pa.Table, stage: str, seconds: float) -> pa.Table:
    """Per-stage seconds ride along as a column (on the first row) and are summed by the writer."""
    values = [seconds] + [0.0] * (table.num_rows - 1) if table.num_rows else []
    return table.append_column(f"_sec_{stage}", pa.array(values, pa.float64()))


def _check_row(doc_id, text, question, needs_question: bool, max_chars: int) -> str | None:
    if doc_id is None:
        return "id is null"
    if text is None:
        return "text is null"
    if not isinstance(text, str):
        return f"text is not a string ({type(text).__name__})"
    if not text.strip():
        return "text is empty"
    if len(text) > max_chars:
        return f"text has {len(text)} characters, over max_chars {max_chars}"
    if needs_question and (not isinstance(question, str) or not question.strip()):
        return "question is null or empty"
    return None


def parse_rows(
    batch: pa.Table,
    fmt: str,
    id_column: str,
    text_column: str,
    question_column: str | None,
    questions: list[str] | None,
    max_chars: int,
) -> pa.Table:
    """Raw input rows (parquet columns, or JSONL lines from read_text) -> validated document rows.

    With `questions`, every document is paired with every question (QA over a fixed question list).
    """
    t0 = time.perf_counter()
    rows = []
    paths = batch.column("path").to_pylist() if "path" in batch.column_names else [None] * batch.num_rows
    needs_question = question_column is not None or questions is not None
    if fmt == "jsonl":
        records = []
        for line in batch.column("text").to_pylist():
            try:
                record = json.loads(line)
                records.append((record, None) if isinstance(record, dict) else ({}, "JSON line is not an object"))
            except (json.JSONDecodeError, TypeError) as err:
                records.append(({}, f"invalid JSON line: {err}"))
        raws = batch.column("text").to_pylist()
    else:
        columns = {name: batch.column(name).to_pylist() for name in batch.column_names if name != "path"}
        records = [({k: v[i] for k, v in columns.items()}, None) for i in range(batch.num_rows)]
        raws = [None] * batch.num_rows
    for (record, error), path, raw in zip(records, paths, raws):
        doc_id = record.get(id_column)
        text = record.get(text_column)
        asked = [record.get(question_column)] if question_column else (questions or [None])
        for question in asked:
            reason = error or _check_row(doc_id, text, question, needs_question, max_chars)
            keep_text = text if isinstance(text, str) else None
            snippet = raw if raw is not None else (None if keep_text is not None else repr(text)[:1000])
            rows.append(
                {
                    "id": None if doc_id is None else str(doc_id),
                    "text": keep_text,
                    "question": question,
                    "source": path,
                    "_reject": reason,
                    "_input": snippet if reason else None,
                }
            )
    return _timed(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), "parse", time.perf_counter() - t0)


def tokenize(batch: pa.Table, task: str, model_path: str, max_length: int, stride: int) -> pa.Table:
    """Overlapping windows with character offsets for every good row (tokenization in CPU tasks)."""
    t0 = time.perf_counter()
    tokenizer = get_tokenizer(model_path)
    rejects = batch.column("_reject").to_pylist()
    good = [i for i, r in enumerate(rejects) if r is None]
    texts = batch.column("text").to_pylist()
    ids = [[] for _ in rejects]
    type_ids = [[] for _ in rejects]
    offsets = [[] for _ in rejects]
    word_ids = [[] for _ in rejects]
    if good:
        if task == "qa":
            questions = batch.column("question").to_pylist()
            enc = tokenizer(
                [questions[i].lstrip() for i in good],
                [texts[i] for i in good],
                truncation="only_second",
                max_length=max_length,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
        else:
            enc = tokenizer(
                [texts[i] for i in good],
                truncation=True,
                max_length=max_length,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
        for w, sample in enumerate(enc["overflow_to_sample_mapping"]):
            row = good[sample]
            seq = enc.sequence_ids(w)
            keep = 1 if task == "qa" else 0  # QA: only context tokens may start or end an answer
            ids[row].append(enc["input_ids"][w])
            if "token_type_ids" in enc:
                type_ids[row].append(enc["token_type_ids"][w])
            offsets[row].append(
                [x for (s, e), q in zip(enc["offset_mapping"][w], seq) for x in ((s, e) if q == keep else (-1, -1))]
            )
            word_ids[row].append([-1 if q != keep or wid is None else wid for wid, q in zip(enc.word_ids(w), seq)])
    out = batch.append_column("_input_ids", pa.array(ids, INT_LISTS))
    out = out.append_column("_type_ids", pa.array(type_ids, INT_LISTS))  # segment ids: QA's question vs context
    out = out.append_column("_offsets", pa.array(offsets, INT_LISTS))
    out = out.append_column("_word_ids", pa.array(word_ids, INT_LISTS))
    out = out.append_column("n_tokens", pa.array([sum(len(w) for w in row) for row in ids], pa.int64()))
    return _timed(out, "tokenize", time.perf_counter() - t0)


def _windows(row_offsets, row_word_ids) -> list[tuple[list, list]]:
    return [([(o[i], o[i + 1]) for i in range(0, len(o), 2)], w) for o, w in zip(row_offsets, row_word_ids)]


def _passthrough(batch: pa.Table, columns: list[str]) -> pa.Table:
    """The columns every output row keeps, plus the bookkeeping ones the writer consumes."""
    extra = ["source", "n_tokens", "_reject", "_input"] + [c for c in batch.column_names if c.startswith("_sec_")]
    return batch.select(columns + extra)


def decode_ner(batch: pa.Table, id2label: dict[int, str], aggregation: str) -> pa.Table:
    t0 = time.perf_counter()
    texts, rejects = batch.column("text").to_pylist(), batch.column("_reject").to_pylist()
    entities = []
    for text, reject, offs, wids, labels, scores in zip(
        texts,
        rejects,
        batch.column("_offsets").to_pylist(),
        batch.column("_word_ids").to_pylist(),
        batch.column("_labels").to_pylist(),
        batch.column("_scores").to_pylist(),
    ):
        if reject is not None:
            entities.append(None)
            continue
        windows = [
            {"offsets": o, "word_ids": w, "labels": lab, "scores": sc}
            for (o, w), lab, sc in zip(_windows(offs, wids), labels, scores)
        ]
        entities.append(decode_entities(windows, text, id2label, aggregation))
    out = _passthrough(batch, ["id"]).append_column("entities", pa.array(entities, pa.list_(ENTITY)))
    return _timed(out, "decode", time.perf_counter() - t0)


def _pad_rows(rows: list[list[float]]):
    """Ragged per-window logits -> one [windows, max_len] array; the padding is never read (offsets bound it)."""
    import numpy as np

    width = max(len(r) for r in rows)
    return np.array([r + [-1e4] * (width - len(r)) for r in rows], dtype=np.float32)


def decode_qa(batch: pa.Table, n_best: int, max_answer_length: int) -> pa.Table:
    t0 = time.perf_counter()
    answers, empty = [], []
    rows = zip(
        batch.column("text").to_pylist(),
        batch.column("_reject").to_pylist(),
        batch.column("_offsets").to_pylist(),
        batch.column("_start").to_pylist(),
        batch.column("_end").to_pylist(),
    )
    for text, reject, offs, starts, ends in rows:
        if reject is not None:
            answers.append(None)
            empty.append(None)
            continue
        windows = [
            {"offsets": [None if s < 0 else (s, e) for s, e in o], "example_idx": 0}
            for o, _ in _windows(offs, [None] * len(offs))
        ]
        [best] = best_spans(_pad_rows(starts), _pad_rows(ends), windows, [text], n_best, max_answer_length)
        answers.append(
            {k: best[k] for k in ("text", "start", "end")} | {"score": None if best["empty"] else best["score"]}
        )
        empty.append(best["empty"])
    out = _passthrough(batch, ["id", "question"]).append_column("answer", pa.array(answers, ANSWER))
    out = out.append_column("no_answer", pa.array(empty, pa.bool_()))
    return _timed(out, "decode", time.perf_counter() - t0)
