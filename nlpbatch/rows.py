"""The row contract between the annotation stages: every stage takes and returns a pyarrow Table of documents.

Columns every row carries from parse to write: `id`, `text`, `question` (pair tasks), `source`, `line`, `_reject`
(null, or why the row cannot be annotated: it then flows through untouched to the rejects output), `_input` (the
raw input of a rejected row), `_keep_<name>` (kept input columns). Tokenize adds list<list<int32>> per row, one
list per window: `_input_ids`, `_type_ids`, `_offsets` (two values a token, -1 for tokens that are not the
document's), `_word_ids` (-1 likewise), and `n_tokens`. Predict replaces `_input_ids`/`_type_ids` with the task's
per-token columns (`Task.token_columns`); decode replaces those with the task's output columns
(`Task.output_columns`). `_sec_<stage>` columns carry each stage's seconds (on the first row) to the writer.

These helpers are shared by the stages and by the tasks' decode functions, which is why they live here and not in
either.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

MAX_RAW_CHARS = 65_536  # of a rejected row's raw input kept in the rejects output
# a document row as parse leaves it (plus `_keep_<name>` strings)
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


def timed(table: pa.Table, stage: str, seconds: float) -> pa.Table:
    """Per-stage seconds ride along as a column (on the first row) and are summed by the writer."""
    values = [seconds] + [0.0] * (table.num_rows - 1) if table.num_rows else []
    return table.append_column(f"_sec_{stage}", pa.array(values, pa.float64()))


def failure(err: BaseException) -> str:
    if isinstance(err, KeyboardInterrupt | SystemExit):
        raise err
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


def raw_json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=repr)


def with_rejects(batch: pa.Table, reasons: list[str | None]) -> pa.Table:
    """Mark the rows a later stage could not handle as rejects, keeping what they were."""
    old = batch.column("_reject").to_pylist()
    if reasons == old:
        return batch
    inputs = batch.column("_input").to_pylist()
    ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
    questions = batch.column("question").to_pylist() if "question" in batch.column_names else [None] * len(ids)
    for i, (before, after) in enumerate(zip(old, reasons)):
        if before is None and after is not None:
            inputs[i] = raw_json({"id": ids[i], "text": texts[i], "question": questions[i]})[:MAX_RAW_CHARS]
    batch = batch.set_column(batch.schema.get_field_index("_reject"), "_reject", pa.array(reasons, pa.string()))
    return batch.set_column(batch.schema.get_field_index("_input"), "_input", pa.array(inputs, pa.string()))


def passthrough(batch: pa.Table, columns: list[str], reasons: list[str | None]) -> pa.Table:
    """The columns every output row keeps, plus the bookkeeping ones the writer consumes."""
    extra = [c for c in batch.column_names if c.startswith("_keep_")] + ["source", "line", "n_tokens", "_reject"]
    extra += ["_input"] + [c for c in batch.column_names if c.startswith("_sec_")]
    return with_rejects(batch, reasons).select(columns + extra)


def flat_lists(column: pa.ChunkedArray | pa.ListArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list<list<T>> column (rows of windows of tokens) as flat arrays: (each window's row, each value's window,
    the values)."""
    rows = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    windows = rows.flatten()
    window_rows = np.repeat(np.arange(len(rows)), np.diff(rows.offsets.to_numpy()))
    value_windows = np.repeat(np.arange(len(windows)), np.diff(windows.offsets.to_numpy()))
    return window_rows, value_windows, windows.flatten().to_numpy(zero_copy_only=False)


def offsets_array(lengths: np.ndarray) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())


def window_pairs(row_offsets, row_word_ids) -> list[tuple[list, list]]:
    return [([(o[i], o[i + 1]) for i in range(0, len(o), 2)], w) for o, w in zip(row_offsets, row_word_ids)]
