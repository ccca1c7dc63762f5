"""The CPU stages of annotation as pure batch functions (pyarrow Table in, pyarrow Table out).

Every row carries `_reject`: null for a good row, else the reason it cannot be annotated. Rejected rows flow
through every stage untouched so they reach the rejects output: nothing is dropped silently.
"""

from __future__ import annotations

import itertools
import json
import threading
import time

import numpy as np
import pyarrow as pa

from nlpbatch.rows import MAX_RAW_CHARS, ROW_SCHEMA, failure, offsets_array, raw_json, timed, with_rejects

MAX_ID_CHARS = 1024
MAX_QUESTION_CHARS = 10_000
CALL_CHARS = 2_000_000  # characters tokenized (and run through the model, fused) at a time: memory stays bounded
INT_LISTS = pa.list_(pa.list_(pa.int32()))


_THREAD = threading.local()


def get_tokenizer(model_path: str):
    """One tokenizer per worker process and thread, not one per batch: a Rust tokenizer must not be used by two
    threads at once (the local runner annotates on several)."""
    from transformers import AutoTokenizer

    cache = _THREAD.__dict__.setdefault("tokenizers", {})
    if model_path not in cache:
        cache[model_path] = AutoTokenizer.from_pretrained(model_path)
    return cache[model_path]


def _check_row(doc_id, text, question, needs_question: bool, max_chars: int, second: str = "question") -> str | None:
    """Why a document row cannot be annotated, or None. Every field's type and size is checked here, so no later
    stage meets a value it cannot handle. `second`: what the row's second input is called (a QA question, or the
    second text of a classified pair, which may be as long as a text)."""
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
    for name, value in (("id", doc_id), ("text", text), (second, question)):
        if (problem := not_unicode(name, value)) is not None:
            return problem
    if not text.strip():
        return "text is empty"
    if len(text) > max_chars:
        return f"text has {len(text)} characters, over max_chars {max_chars}"
    if needs_question:
        limit = MAX_QUESTION_CHARS if second == "question" else max_chars
        if question is None:
            return f"{second} is null"
        if not isinstance(question, str):
            return f"{second} is not a string ({type(question).__name__})"
        if not question.strip():
            return f"{second} is empty"
        if len(question) > limit:
            return f"{second} has {len(question)} characters, over {limit}"
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


def parse_rows(
    batch: pa.Table,
    fmt: str,
    id_column: str,
    text_column: str,
    question_column: str | None,
    questions: list[str] | None,
    max_chars: int,
    keep: list[str] = (),
    second: str = "question",
) -> pa.Table:
    """Raw input rows (`reader.JsonlLines` lines or `reader.ParquetRowGroups` columns) -> validated document rows.

    With `questions`, every document is paired with every question (QA over a fixed question list); `question_column`
    is the row's second input (its question, or the second text of a pair, named `second` in reasons). A rejected row
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
        parsed = [(record, error, raw_json(record)) for record, error in zip(records, errors)]
    rows = []
    for (record, error, raw), path, line in zip(parsed, paths, lines):
        doc_id = record.get(id_column)
        text = record.get(text_column)
        asked = [record.get(question_column)] if question_column else (questions or [None])
        kept = {f"_keep_{name}": _as_text(record.get(name)) for name in keep}
        bad_kept = next((p for k, v in kept.items() if (p := not_unicode(f"column {k[6:]!r}", v))), None)
        for question in asked:
            reason = error or _check_row(doc_id, text, question, needs_question, max_chars, second) or bad_kept
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
    return timed(pa.Table.from_pylist(rows, schema=schema), "parse", time.perf_counter() - t0)


def _as_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, RecursionError):
        return repr(value)[:MAX_RAW_CHARS]


def _encode(tokenizer, pair: str | None, texts: list[str], questions: list[str], max_length: int, stride: int):
    """(windows, windows per text): every text's windows (tokenizers.Encoding: the first, then its overflow)
    straight from the Rust tokenizer, without the per-token Python lists that `tokenizer(...)` would build.
    `pair`: "question" for (question, text) inputs of which only the text is cut into windows; "text" for a
    sentence pair (text, second text) in one window, truncated longest side first, as training saw it."""
    backend = tokenizer.backend_tokenizer
    strategy = "only_second" if pair == "question" else "longest_first"
    backend.enable_truncation(max_length, stride=stride, strategy=strategy, direction=tokenizer.truncation_side)
    backend.no_padding()
    if pair == "question":
        inputs = list(zip(questions, texts))
    else:
        inputs = list(zip(texts, questions)) if pair == "text" else texts
    encodings = backend.encode_batch(inputs)
    if pair == "text":
        return list(encodings), [1] * len(encodings)
    windows = [window for enc in encodings for window in (enc, *enc.overflowing)]
    return windows, [1 + len(enc.overflowing) for enc in encodings]


def _ids(lists) -> np.ndarray:
    """Per-window id lists -> one flat int32 array; None (a special token's word / sequence id) -> -1."""
    flat = np.array(list(itertools.chain.from_iterable(lists)), dtype=np.float64)  # None -> nan, in C
    return np.nan_to_num(flat, nan=-1).astype(np.int32)


def _nested(values: np.ndarray, window_lengths: np.ndarray, row_windows: np.ndarray) -> pa.ListArray:
    """Flat per-token values -> list<list<int32>>: windows of `window_lengths`, rows of `row_windows` windows."""
    windows = pa.ListArray.from_arrays(offsets_array(window_lengths), pa.array(values, pa.int32()))
    return pa.ListArray.from_arrays(offsets_array(row_windows), windows)


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


def tokenize(
    batch: pa.Table, task: str, model_path: str, max_length: int, stride: int, words: str = "pretokenized"
) -> pa.Table:
    """`tokenize_slice` over slices of at most CALL_CHARS characters (bounded memory for any --batch-rows)."""
    parts = [tokenize_slice(part, task, model_path, max_length, stride, words) for part in char_slices(batch)]
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def whitespace_word_ids(texts: list[str], starts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each token's word when words are whitespace-delimited (CJK ideographs apart), as the model saw them in its
    training data: the word whose start is the last at or before the token's start. `starts`: each token's start
    character (-1: not the document's), `rows`: its document, non-decreasing (a document's tokens are together)."""
    from nlpbatch.data.spans import WHITESPACE_WORD

    out = np.full(len(starts), -1, np.int64)
    documents, firsts_at = np.unique(rows, return_index=True)
    for row, begin, end in zip(documents, firsts_at, [*firsts_at[1:], len(rows)]):
        firsts = np.fromiter((m.start() for m in WHITESPACE_WORD.finditer(texts[row])), np.int64)
        words = np.searchsorted(firsts, starts[begin:end], side="right") - 1
        out[begin:end] = np.where(starts[begin:end] >= 0, words, -1)
    return out


def tokenize_slice(
    batch: pa.Table, task: str, model_path: str, max_length: int, stride: int, words: str = "pretokenized"
) -> pa.Table:
    """Overlapping windows with character offsets for every good row (tokenization in CPU tasks). A question (pair
    tasks) too long for the window, or any row the tokenizer fails on, becomes a reject with the reason. Columns
    built from flat arrays: no Python loop per token. `words`: `pretokenized` keeps the tokenizer's word ids
    (punctuation apart), `whitespace` groups tokens into whitespace-delimited words (NER trained on such words)."""
    from nlpbatch.tasks import get_task

    t0 = time.perf_counter()
    tokenizer = get_tokenizer(model_path)
    reasons = batch.column("_reject").to_pylist()
    texts = batch.column("text").to_pylist()
    questions = [q.lstrip() if q else q for q in batch.column("question").to_pylist()]
    good = [i for i, r in enumerate(reasons) if r is None]
    # a pair task's rows carry their question; another task's rows carry a second text only as a sentence pair
    pair = "question" if get_task(task).pair else ("text" if any(questions[i] for i in good) else None)
    if pair == "question" and good:
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
                tokenizer, pair, [texts[i] for i in good], [questions[i] for i in good], max_length, stride
            )
        except BaseException as err:  # a tokenizer panic is a BaseException: find the row(s) and reject them
            failure(err)
            for i in good:
                try:
                    _encode(tokenizer, pair, [texts[i]], [questions[i]], max_length, stride)
                except BaseException as row_err:
                    reasons[i] = "tokenizer failed: " + failure(row_err)
            good = [i for i in good if reasons[i] is None]
            windows, counts = _encode(
                tokenizer, pair, [texts[i] for i in good], [questions[i] for i in good], max_length, stride
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
    own = sequence == (1 if pair == "question" else 0)  # QA: only the text's tokens are decoded, not the question's
    offsets[~own] = -1
    word_ids[~own] = -1
    if words == "whitespace" and n:
        token_rows = np.repeat(np.repeat(np.asarray(good, np.int64), counts), lengths)  # n > 0: rows were good
        word_ids = np.where(own, whitespace_word_ids(texts, offsets[:, 0], token_rows), -1).astype(word_ids.dtype)
    with_types = "token_type_ids" in tokenizer.model_input_names
    type_values, type_lengths = (types, lengths) if with_types else (types[:0], 0 * lengths)
    out = with_rejects(batch, reasons)
    out = out.append_column("_input_ids", _nested(ids, lengths, row_windows))
    out = out.append_column("_type_ids", _nested(type_values, type_lengths, row_windows))  # pair: question vs text
    out = out.append_column("_offsets", _nested(offsets.ravel(), 2 * lengths, row_windows))
    out = out.append_column("_word_ids", _nested(word_ids, lengths, row_windows))
    tokens = np.bincount(np.repeat(np.arange(len(reasons)), row_windows), weights=lengths, minlength=len(reasons))
    out = out.append_column("n_tokens", pa.array(tokens.astype(np.int64)))
    return timed(out, "tokenize", time.perf_counter() - t0)
