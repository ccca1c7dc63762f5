"""Inference actors for Ray Data's actor pool: the engine is loaded once in __init__, one batch per __call__.

The hot path is array code: the windows' token ids come out of Arrow as one flat int32 buffer plus offsets,
either packed (consecutive windows, at most `batch_tokens` tokens, as one padding-free sequence: nlpbatch.packing)
or cut into length buckets (at most `batch_tokens` padded tokens a forward pass, longest first) padded with numpy,
and the results go back into Arrow the same way: the task's per-token columns (`Task.token_columns`, after the
task's reduction where the outputs are: NER keeps one label byte and one float32 probability per token, computed on
the GPU when it runs there; QA its start/end logits). No Python loop runs per token.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from nlpbatch.packing import pack_ranges
from nlpbatch.rows import timed


def length_buckets(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so that len(group) * max length in group <= batch_tokens, longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= batch_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _windows(column: pa.ChunkedArray) -> tuple[pa.ListArray, np.ndarray, np.ndarray]:
    """(rows as list<list<int32>>, window offsets into the flat tokens, flat tokens) of one column."""
    rows = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    windows = rows.flatten()
    offsets = windows.offsets.to_numpy() - windows.offsets[0].as_py()
    return rows, offsets, windows.flatten().to_numpy(zero_copy_only=False)


def _nest(rows: pa.ListArray, window_offsets: np.ndarray, values: np.ndarray, kind: pa.DataType) -> pa.ListArray:
    """Flat per-token values -> list<list<kind>> shaped like `rows` (same windows, same rows)."""
    windows = pa.ListArray.from_arrays(pa.array(window_offsets, pa.int32()), pa.array(values, kind))
    row_offsets = rows.offsets.to_numpy() - rows.offsets[0].as_py()
    return pa.ListArray.from_arrays(pa.array(row_offsets, pa.int32()), windows)


class Predictor:
    """One task's model over tokenized rows: `_input_ids`/`_type_ids` in, the task's per-token columns out."""

    def __init__(
        self,
        task: str,
        model_path: str,
        batch_tokens: int,
        use_gpu: bool = False,
        backend: str = "auto",
        threads: int | None = None,
        packing: str = "off",
        reduce: bool = True,
    ):
        from nlpbatch.annotate.stages import get_tokenizer
        from nlpbatch.engines import load_engine
        from nlpbatch.tasks import get_task

        self.task = get_task(task)
        self.engine = load_engine(task, model_path, backend, use_gpu, threads, packing, reduce=reduce)
        self.pad_id = get_tokenizer(model_path).pad_token_id
        self.batch_tokens = batch_tokens
        # the engine's outputs by name: per token, then per window. The task's reduced columns; or (reduce=False,
        # for `evaluate`) the head's raw outputs, which are per window for a task with window columns
        if reduce:
            self.token_columns, self.window_columns = self.task.token_columns, self.task.window_columns
        else:
            raw = tuple((name, "float32") for name in self.engine.outputs)
            self.token_columns, self.window_columns = ((), raw) if self.task.window_columns else (raw, ())

    def _forward(self, offsets: np.ndarray, tokens: np.ndarray, types: np.ndarray | None):
        """Yield (windows, their flat token positions, per-token outputs, per-window outputs) per packed batch or
        length bucket."""
        lengths = np.diff(offsets)
        k = len(self.token_columns)
        if types is None:
            types = np.zeros_like(tokens)
        if self.engine.packs:
            for lo, hi in pack_ranges(lengths, self.batch_tokens):
                start, stop = int(offsets[lo]), int(offsets[hi])
                outputs = self.engine.packed(tokens[start:stop], types[start:stop], offsets[lo : hi + 1] - start)
                yield np.arange(lo, hi), slice(start, stop), outputs[:k], outputs[k:]
            return
        for group in length_buckets(lengths.tolist(), self.batch_tokens):
            group = np.asarray(group)
            width = int(lengths[group[0]])
            mask = np.arange(width)[None, :] < lengths[group][:, None]
            positions = np.where(mask, offsets[group][:, None] + np.arange(width)[None, :], 0)
            ids = np.where(mask, tokens[positions], self.pad_id).astype(np.int64)
            segment = np.where(mask, types[positions], 0).astype(np.int64)
            outputs = self.engine(ids, mask.astype(np.int64), segment)
            yield group, positions[mask], [out[mask] for out in outputs[:k]], outputs[k:]

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        rows, offsets, tokens = _windows(batch.column("_input_ids"))
        _, type_offsets, types = _windows(batch.column("_type_ids"))
        types = types if len(types) == len(tokens) else None  # NER windows carry no segment ids
        per_token, per_window = self._predict(offsets, tokens, types)
        out = batch.drop_columns(["_input_ids", "_type_ids"])
        for name, values in per_token.items():
            out = out.append_column(name, _nest(rows, offsets, values, pa.from_numpy_dtype(values.dtype)))
        row_offsets = pa.array(rows.offsets.to_numpy() - rows.offsets[0].as_py(), pa.int32())
        for name, dtype in self.window_columns:  # list<T> per row: one value (or vector) per window
            values = per_window.get(name, np.zeros(0, dtype))
            inner = pa.array(values.ravel())
            if values.ndim == 2:
                inner = pa.FixedSizeListArray.from_arrays(inner, values.shape[1])
            out = out.append_column(name, pa.ListArray.from_arrays(row_offsets, inner))
        return timed(out, "predict", time.perf_counter() - t0)

    def _predict(self, offsets: np.ndarray, tokens: np.ndarray, types: np.ndarray | None) -> tuple[dict, dict]:
        """(per-token outputs [tokens(, labels)], per-window outputs [windows(, labels)]) by column name."""
        per_token: dict[str, np.ndarray] = {}
        per_window: dict[str, np.ndarray] = {}
        for windows, where, token_outputs, window_outputs in self._forward(offsets, tokens, types):
            for (name, dtype), output in zip(self.token_columns, token_outputs):
                if name not in per_token:  # a value per token, or a row of logits (reduce=False)
                    per_token[name] = np.zeros((len(tokens), *np.shape(output)[1:]), dtype)
                per_token[name][where] = output
            for (name, dtype), output in zip(self.window_columns, window_outputs):
                if name not in per_window:  # a value per window, or a vector (one probability a label)
                    per_window[name] = np.zeros((len(offsets) - 1, *np.shape(output)[1:]), dtype)
                per_window[name][windows] = output
        for name, dtype in self.token_columns:  # a batch without windows (all rejected): empty columns
            per_token.setdefault(name, np.zeros(len(tokens), dtype))
        return per_token, per_window


class PredictorModel:
    """The Predictor dressed as the Hugging Face model `run_eval` calls (padded torch tensors in, the head's outputs
    by name out), so `evaluate --backend` scores through the predictor annotate runs: same engine, same buckets."""

    def __init__(self, predictor: Predictor):
        self.predictor, self.config = predictor, predictor.engine.config

    def eval(self):
        return self

    def to(self, *_):
        return self

    def __call__(self, input_ids, attention_mask, token_type_ids=None, **_):
        import torch

        mask = attention_mask.cpu().numpy().astype(bool)  # right-padded windows
        offsets = np.concatenate([[0], np.cumsum(mask.sum(1))])
        tokens = input_ids.cpu().numpy()[mask]
        types = token_type_ids.cpu().numpy()[mask] if token_type_ids is not None else None
        per_token, per_window = self.predictor._predict(offsets, tokens, types)
        outputs = {name: torch.from_numpy(values) for name, values in per_window.items()}
        for name, values in per_token.items():
            padded = np.zeros((*mask.shape, *values.shape[1:]), values.dtype)
            padded[mask] = values
            outputs[name] = torch.from_numpy(padded)
        return SimpleNamespace(**outputs)


class Annotator:
    """The fused CPU layout: parse -> tokenize -> predict -> decode of one batch inside the inference actor, the
    same stage functions as the split layout (so the same rows), with no hand-off between processes."""

    def __init__(
        self,
        task: str,
        model_path: str,
        batch_tokens: int,
        backend: str,
        threads: int | None,
        packing: str,
        parse: dict,
        tokenize: dict,
        decode: dict,
        counter=None,
    ):
        self.predict = Predictor(task, model_path, batch_tokens, False, backend, threads, packing)
        self.parse, self.tokenize, self.decode = parse, {"task": task, "model_path": model_path, **tokenize}, decode
        self.counter = counter  # the driver's progress (a RowCounter actor), told after every batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        from nlpbatch.annotate import stages

        decode = self.predict.task.decode
        parts = []
        for part in stages.char_slices(stages.parse_rows(batch, **self.parse)):  # memory bounded per slice
            parts.append(decode(self.predict(stages.tokenize_slice(part, **self.tokenize)), **self.decode))
        return count_done(parts[0] if len(parts) == 1 else pa.concat_tables(parts), self.counter)


class RowCounter:
    """Rows and tokens done so far, added to by the inference stage and read by the driver's progress."""

    def __init__(self):
        self.rows = self.rejected = self.tokens = 0

    def add(self, rows: int, rejected: int, tokens: int) -> None:
        self.rows, self.rejected, self.tokens = self.rows + rows, self.rejected + rejected, self.tokens + tokens

    def totals(self) -> tuple[int, int, int]:
        return self.rows, self.rejected, self.tokens


def count_done(batch: pa.Table, counter) -> pa.Table:
    """Tell the progress counter (if any) how many rows, rejects and tokens this batch finished; never fails."""
    if counter is not None and batch.num_rows:
        import pyarrow.compute as pc

        rejected = batch.num_rows - pc.sum(pc.is_null(batch["_reject"]).cast("int64")).as_py()
        add = counter.add if isinstance(counter, RowCounter) else counter.add.remote  # here, or a Ray actor
        add(batch.num_rows, rejected, pc.sum(batch["n_tokens"]).as_py() or 0)
    return batch
