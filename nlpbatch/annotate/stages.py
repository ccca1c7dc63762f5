"""The CPU stages of annotation as pure batch functions (pyarrow Table in, pyarrow Table out).

Every row carries `_reject`: null for a good row, else the reason it cannot be annotated. Rejected rows flow
through every stage untouched so they reach the rejects output: nothing is dropped silently.
"""

from __future__ import annotations

import functools
import itertools
import json
import time

import numpy as np
import pyarrow as pa

from nlpbatch.tasks.ner import decode_spans
from nlpbatch.tasks.qa import best_spans

ROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("question", pa.string()),
        ("source", pa.string()),
        ("line", pa.int64()),
        ("_reject", pa.string()),
        ("_input", pa.string()),
    ]
)
MAX_ID_CHARS = 1024
MAX_QUESTION_CHARS = 10_000
MAX_RAW_CHARS = 65_536  # of a rejected row's raw input kept in the rejects output
CALL_CHARS = 2_000_000  # characters tokenized (and run through the model, fused) at a time: memory stays bounded
INT_LISTS = pa.list_(pa.list_(pa.int32()))
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
    """Why a document row cannot be annotated, or None. Every field's type and size is checked here, so no later
    stage meets a value it cannot handle."""
    if doc_id is None:
        return "id is null"
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int):
        return f"id is not a string or integer ({type(doc_id).__name__})"
    if len(str(doc_id)) > MAX_ID_CHARS:
        return f"id has {len(str(doc_id))} characters, over {MAX_ID_CHARS}"
    if text is None:
        return "text is null"
    if not isinstance(text, str):
        return f"text is not a string ({type(text).__name__})"
    for name, value in (("id", doc_id), ("text", text), ("question", question)):
        if (problem := not_unicode(name, value)) is not None:
            return problem
    if not text.strip():
        return "text is empty"
    if len(text) > max_chars:
        return f"text has {len(text)} characters, over max_chars {max_chars}"
    if needs_question:
        if question is None:
            return "question is null"
        if not isinstance(question, str):
            return f"question is not a string ({type(question).__name__})"
        if not question.strip():
            return "question is empty"
        if len(question) > MAX_QUESTION_CHARS:
            return f"question has {len(question)} characters, over {MAX_QUESTION_CHARS}"
    return None


def not_unicode(name: str, value) -> str | None:
    """Why a string cannot be written as UTF-8 (JSON's "\\ud800" decodes to a lone surrogate), or None."""
    if not isinstance(value, str) or value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"{name} is not valid Unicode (a lone surrogate at character {err.start})"
    return None


def _writable(value: str | None) -> str | None:
    """A string that can be written as UTF-8 (a rejected row's id, for the rejects output)."""
    return value if not_unicode("", value) is None else value.encode("utf-8", "replace").decode("utf-8")


def _parse_line(raw: bytes) -> tuple[dict, str | None, str]:
    """(record, reason it is unusable or None, the line as text for the rejects)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return {}, f"line is not valid UTF-8 ({err.reason} at byte {err.start})", raw.decode("utf-8", "replace")
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as err:
        return {}, f"invalid JSON line: {err}"[:500], line
    if not isinstance(record, dict):
        return {}, f"JSON line is not an object ({type(record).__name__})", line
    return record, None, line


def _raw_json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=repr)


def parse_rows(
    batch: pa.Table,
    fmt: str,
    id_column: str,
    text_column: str,
    question_column: str | None,
    questions: list[str] | None,
    max_chars: int,
    keep: list[str] = (),
) -> pa.Table:
    """Raw input rows (`reader.JsonlLines` lines or `reader.ParquetRowGroups` columns) -> validated document rows.

    With `questions`, every document is paired with every question (QA over a fixed question list). A rejected row
    keeps its file, line and raw input; nothing in a row can raise out of this function. `keep`: input columns
    carried to the output as `_keep_<name>` strings (other values as JSON text).
    """
    t0 = time.perf_counter()
    n = batch.num_rows
    paths = batch.column("path").to_pylist() if "path" in batch.column_names else [None] * n
    lines = batch.column("line").to_pylist() if "line" in batch.column_names else [None] * n
    needs_question = question_column is not None or questions is not None
    if fmt == "jsonl":
        parsed = [_parse_line(raw) for raw in batch.column("raw").to_pylist()]
    else:
        names = list(dict.fromkeys(c for c in (id_column, text_column, question_column, *keep) if c))
        columns = {name: batch.column(name).to_pylist() for name in names}
        errors = batch.column("_error").to_pylist() if "_error" in batch.column_names else [None] * n
        records = [{k: v[i] for k, v in columns.items()} for i in range(n)]
        parsed = [(record, error, _raw_json(record)) for record, error in zip(records, errors)]
    rows = []
    for (record, error, raw), path, line in zip(parsed, paths, lines):
        doc_id = record.get(id_column)
        text = record.get(text_column)
        asked = [record.get(question_column)] if question_column else (questions or [None])
        kept = {f"_keep_{name}": _as_text(record.get(name)) for name in keep}
        bad_kept = next((p for k, v in kept.items() if (p := not_unicode(f"column {k[6:]!r}", v))), None)
        for question in asked:
            reason = error or _check_row(doc_id, text, question, needs_question, max_chars) or bad_kept
            rows.append(
                {
                    **({k: None for k in kept} if reason else kept),
                    "id": _writable(str(doc_id))
                    if isinstance(doc_id, str | int) and not isinstance(doc_id, bool)
                    else None,
                    "text": None if reason else text,
                    "question": question if isinstance(question, str) and not reason else None,
                    "source": path,
                    "line": line,
                    "_reject": reason,
                    "_input": raw[:MAX_RAW_CHARS] if reason else None,
                }
            )
    schema = pa.schema([*ROW_SCHEMA, *(pa.field(f"_keep_{name}", pa.string()) for name in keep)])
    return _timed(pa.Table.from_pylist(rows, schema=schema), "parse", time.perf_counter() - t0)


def _as_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, RecursionError):
        return repr(value)[:MAX_RAW_CHARS]


def _with_rejects(batch: pa.Table, reasons: list[str | None]) -> pa.Table:
    """Mark the rows a later stage could not handle as rejects, keeping what they were."""
    old = batch.column("_reject").to_pylist()
    if reasons == old:
        return batch
    inputs = batch.column("_input").to_pylist()
    ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
    questions = batch.column("question").to_pylist() if "question" in batch.column_names else [None] * len(ids)
    for i, (before, after) in enumerate(zip(old, reasons)):
        if before is None and after is not None:
            inputs[i] = _raw_json({"id": ids[i], "text": texts[i], "question": questions[i]})[:MAX_RAW_CHARS]
    batch = batch.set_column(batch.schema.get_field_index("_reject"), "_reject", pa.array(reasons, pa.string()))
    return batch.set_column(batch.schema.get_field_index("_input"), "_input", pa.array(inputs, pa.string()))


def _encode(tokenizer, task: str, texts: list[str], questions: list[str], max_length: int, stride: int):
    """(windows, windows per text): every text's windows (tokenizers.Encoding: the first, then its overflow)
    straight from the Rust tokenizer, without the per-token Python lists that `tokenizer(...)` would build."""
    backend = tokenizer.backend_tokenizer
    strategy = "only_second" if task == "qa" else "longest_first"  # QA: only the context is cut into windows
    backend.enable_truncation(max_length, stride=stride, strategy=strategy, direction=tokenizer.truncation_side)
    backend.no_padding()
    encodings = backend.encode_batch(list(zip(questions, texts)) if task == "qa" else texts)
    windows = [window for enc in encodings for window in (enc, *enc.overflowing)]
    return windows, [1 + len(enc.overflowing) for enc in encodings]


def _failure(err: BaseException) -> str:
    if isinstance(err, KeyboardInterrupt | SystemExit):
        raise err
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


def _ids(lists) -> np.ndarray:
    """Per-window id lists -> one flat int32 array; None (a special token's word / sequence id) -> -1."""
    flat = np.array(list(itertools.chain.from_iterable(lists)), dtype=np.float64)  # None -> nan, in C
    return np.nan_to_num(flat, nan=-1).astype(np.int32)


def _nested(values: np.ndarray, window_lengths: np.ndarray, row_windows: np.ndarray) -> pa.ListArray:
    """Flat per-token values -> list<list<int32>>: windows of `window_lengths`, rows of `row_windows` windows."""
    windows = pa.ListArray.from_arrays(_offsets(window_lengths), pa.array(values, pa.int32()))
    return pa.ListArray.from_arrays(_offsets(row_windows), windows)


def _offsets(lengths: np.ndarray) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())


def char_slices(batch: pa.Table, limit: int | None = None) -> list[pa.Table]:
    """The batch cut into consecutive slices of at most `limit` characters of text (a slice holds at least one
    row): a call of 256 documents at the max_chars limit is tokenized a few megabytes at a time, not all at once."""
    import pyarrow.compute as pc

    limit = limit or CALL_CHARS
    lengths = pc.fill_null(pc.utf8_length(batch.column("text")), 0).to_numpy(zero_copy_only=False)
    if batch.num_rows == 0 or lengths.sum() <= limit:
        return [batch]
    slices, start, total = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        if total and total + n > limit:
            slices.append(batch.slice(start, i - start))
            start, total = i, 0
        total += n
    return [*slices, batch.slice(start)]


def tokenize(batch: pa.Table, task: str, model_path: str, max_length: int, stride: int) -> pa.Table:
    """`tokenize_slice` over slices of at most CALL_CHARS characters (bounded memory for any --batch-rows)."""
    parts = [tokenize_slice(part, task, model_path, max_length, stride) for part in char_slices(batch)]
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def tokenize_slice(batch: pa.Table, task: str, model_path: str, max_length: int, stride: int) -> pa.Table:
    """Overlapping windows with character offsets for every good row (tokenization in CPU tasks). A QA question
    too long for the window, or any row the tokenizer fails on, becomes a reject with the reason. Columns built
    from flat arrays: no Python loop per token."""
    t0 = time.perf_counter()
    tokenizer = get_tokenizer(model_path)
    reasons = batch.column("_reject").to_pylist()
    texts = batch.column("text").to_pylist()
    questions = [q.lstrip() if q else q for q in batch.column("question").to_pylist()]
    good = [i for i, r in enumerate(reasons) if r is None]
    if task == "qa" and good:
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - stride - 1
        lengths = tokenizer([questions[i] for i in good], add_special_tokens=False)["input_ids"]
        for i, ids in zip(good, lengths):
            if len(ids) > room:
                reasons[i] = (
                    f"question has {len(ids)} tokens, over the {room} that a {max_length}-token window with stride "
                    f"{stride} leaves (shorten it or raise --max-length)"
                )
        good = [i for i in good if reasons[i] is None]
    windows, counts = [], []
    if good:
        try:
            windows, counts = _encode(
                tokenizer, task, [texts[i] for i in good], [questions[i] for i in good], max_length, stride
            )
        except BaseException as err:  # a tokenizer panic is a BaseException: find the row(s) and reject them
            _failure(err)
            for i in good:
                try:
                    _encode(tokenizer, task, [texts[i]], [questions[i]], max_length, stride)
                except BaseException as row_err:
                    reasons[i] = "tokenizer failed: " + _failure(row_err)
            good = [i for i in good if reasons[i] is None]
            windows, counts = _encode(
                tokenizer, task, [texts[i] for i in good], [questions[i] for i in good], max_length, stride
            )
    row_windows = np.zeros(len(reasons), np.int64)
    row_windows[good] = counts
    lengths = np.array([len(w) for w in windows], np.int64)
    n = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(w.ids for w in windows), np.int32, count=n)
    types = np.fromiter(itertools.chain.from_iterable(w.type_ids for w in windows), np.int32, count=n)
    pairs = itertools.chain.from_iterable(itertools.chain.from_iterable(w.offsets for w in windows))
    offsets = np.fromiter(pairs, np.int32, count=2 * n).reshape(n, 2)
    sequence = _ids(w.sequence_ids for w in windows)
    word_ids = _ids(w.word_ids for w in windows)
    own = sequence == (1 if task == "qa" else 0)  # QA: only context tokens may start or end an answer
    offsets[~own] = -1
    word_ids[~own] = -1
    with_types = "token_type_ids" in tokenizer.model_input_names
    type_values, type_lengths = (types, lengths) if with_types else (types[:0], 0 * lengths)
    out = _with_rejects(batch, reasons)
    out = out.append_column("_input_ids", _nested(ids, lengths, row_windows))
    out = out.append_column("_type_ids", _nested(type_values, type_lengths, row_windows))  # QA: question vs context
    out = out.append_column("_offsets", _nested(offsets.ravel(), 2 * lengths, row_windows))
    out = out.append_column("_word_ids", _nested(word_ids, lengths, row_windows))
    tokens = np.bincount(np.repeat(np.arange(len(reasons)), row_windows), weights=lengths, minlength=len(reasons))
    out = out.append_column("n_tokens", pa.array(tokens.astype(np.int64)))
    return _timed(out, "tokenize", time.perf_counter() - t0)


def _windows(row_offsets, row_word_ids) -> list[tuple[list, list]]:
    return [([(o[i], o[i + 1]) for i in range(0, len(o), 2)], w) for o, w in zip(row_offsets, row_word_ids)]


def _passthrough(batch: pa.Table, columns: list[str], reasons: list[str | None]) -> pa.Table:
    """The columns every output row keeps, plus the bookkeeping ones the writer consumes."""
    extra = [c for c in batch.column_names if c.startswith("_keep_")] + ["source", "line", "n_tokens", "_reject"]
    extra += ["_input"] + [c for c in batch.column_names if c.startswith("_sec_")]
    return _with_rejects(batch, reasons).select(columns + extra)


def flat_lists(column: pa.ChunkedArray | pa.ListArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list<list<T>> column (rows of windows of tokens) as flat arrays: (each window's row, each value's window,
    the values)."""
    rows = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    windows = rows.flatten()
    window_rows = np.repeat(np.arange(len(rows)), np.diff(rows.offsets.to_numpy()))
    value_windows = np.repeat(np.arange(len(windows)), np.diff(windows.offsets.to_numpy()))
    return window_rows, value_windows, windows.flatten().to_numpy(zero_copy_only=False)


def _ner_entities(batch: pa.Table, id2label: dict[int, str], aggregation: str) -> pa.ListArray:
    window_rows, token_windows, word_ids = flat_lists(batch.column("_word_ids"))
    offsets = flat_lists(batch.column("_offsets"))[2].reshape(-1, 2)
    labels, scores = flat_lists(batch.column("_labels"))[2], flat_lists(batch.column("_scores"))[2]
    spans = decode_spans(window_rows, token_windows, offsets, word_ids, labels, scores, id2label, aggregation)
    texts = batch.column("text").to_pylist()
    cut = [texts[r][a:b] for r, a, b in zip(spans["row"].tolist(), spans["start"].tolist(), spans["end"].tolist())]
    fields = [spans["label"], spans["start"], spans["end"], cut, spans["score"]]
    entities = pa.StructArray.from_arrays([pa.array(v, f.type) for v, f in zip(fields, ENTITY)], fields=list(ENTITY))
    rejected = pa.array([r is not None for r in batch.column("_reject").to_pylist()], pa.bool_())
    counts = np.bincount(spans["row"], minlength=batch.num_rows)
    return pa.ListArray.from_arrays(_offsets(counts), entities, type=pa.list_(ENTITY), mask=rejected)


def decode_ner(batch: pa.Table, id2label: dict[int, str], aggregation: str) -> pa.Table:
    """Entity spans per document (`tasks.ner.decode_spans` over the whole batch). A row the decode fails on
    becomes a reject with the reason, never the job's failure."""
    t0 = time.perf_counter()
    reasons = batch.column("_reject").to_pylist()
    try:
        entities = _ner_entities(batch, id2label, aggregation)
    except Exception:  # find the row(s) at fault
        parts = []
        for row in range(batch.num_rows):
            try:
                parts.append(_ner_entities(batch.slice(row, 1), id2label, aggregation))
            except Exception as err:
                reasons[row] = "decode failed: " + _failure(err)
                parts.append(pa.nulls(1, pa.list_(ENTITY)))
        entities = pa.concat_arrays(parts)
    out = _passthrough(batch, ["id"], reasons).append_column("entities", entities)
    return _timed(out, "decode", time.perf_counter() - t0)


def _pad_rows(rows: list[list[float]]):
    """Ragged per-window logits -> one [windows, max_len] array; the padding is never read (offsets bound it)."""
    import numpy as np

    width = max(len(r) for r in rows)
    return np.array([r + [-1e4] * (width - len(r)) for r in rows], dtype=np.float32)


def decode_qa(batch: pa.Table, n_best: int, max_answer_length: int) -> pa.Table:
    t0 = time.perf_counter()
    answers, empty = [], []
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
            continue
        windows = [
            {"offsets": [None if s < 0 else (s, e) for s, e in o], "example_idx": 0}
            for o, _ in _windows(offs, [None] * len(offs))
        ]
        try:
            [best] = best_spans(_pad_rows(starts), _pad_rows(ends), windows, [text], n_best, max_answer_length)
        except Exception as err:  # one row's failure is that row's reject, never the job's
            reasons[row] = "decode failed: " + _failure(err)
            answers.append(None)
            empty.append(None)
            continue
        answers.append(
            {k: best[k] for k in ("text", "start", "end")} | {"score": None if best["empty"] else best["probability"]}
        )
        empty.append(best["empty"])
    out = _passthrough(batch, ["id", "question"], reasons).append_column("answer", pa.array(answers, ANSWER))
    out = out.append_column("no_answer", pa.array(empty, pa.bool_()))
    return _timed(out, "decode", time.perf_counter() - t0)
