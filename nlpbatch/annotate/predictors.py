"""Inference actors for Ray Data's actor pool: the engine is loaded once in __init__, one batch per __call__.

The hot path is array code: the windows' token ids come out of Arrow as one flat int32 buffer plus offsets,
either packed (consecutive windows, at most `batch_tokens` tokens, as one padding-free sequence: nlpbatch.packing)
or cut into length buckets (at most `batch_tokens` padded tokens a forward pass, longest first) padded with numpy,
and the results go back into Arrow the same way. NER keeps one label byte and one float32 probability per token
(argmax and softmax where the logits are: on the GPU when it runs there); QA keeps the start/end logits. No Python
loop runs per token.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from nlpbatch.annotate.stages import _timed
from nlpbatch.packing import pack_ranges


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


class _Predictor:
    task = ""

    def __init__(
        self,
        model_path: str,
        batch_tokens: int,
        use_gpu: bool = False,
        backend: str = "auto",
        threads: int | None = None,
        packing: str = "off",
    ):
        from nlpbatch.annotate.stages import get_tokenizer
        from nlpbatch.engines import load_engine

        self.engine = load_engine(self.task, model_path, backend, use_gpu, threads, packing, labels=True)
        self.pad_id = get_tokenizer(model_path).pad_token_id
        self.batch_tokens = batch_tokens

    def _forward(self, offsets: np.ndarray, tokens: np.ndarray, types: np.ndarray | None):
        """Yield (flat token positions, engine outputs for those tokens) per packed batch or length bucket."""
        lengths = np.diff(offsets)
        if types is None:
            types = np.zeros_like(tokens)
        if self.engine.packs:
            for lo, hi in pack_ranges(lengths, self.batch_tokens):
                start, stop = int(offsets[lo]), int(offsets[hi])
                yield (
                    slice(start, stop),
                    self.engine.packed(tokens[start:stop], types[start:stop], offsets[lo : hi + 1] - start),
                )
            return
        for group in length_buckets(lengths.tolist(), self.batch_tokens):
            group = np.asarray(group)
            width = int(lengths[group[0]])
            mask = np.arange(width)[None, :] < lengths[group][:, None]
            positions = np.where(mask, offsets[group][:, None] + np.arange(width)[None, :], 0)
            ids = np.where(mask, tokens[positions], self.pad_id).astype(np.int64)
            segment = np.where(mask, types[positions], 0).astype(np.int64)
            yield positions[mask], [out[mask] for out in self.engine(ids, mask.astype(np.int64), segment)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        rows, offsets, tokens = _windows(batch.column("_input_ids"))
        _, type_offsets, types = _windows(batch.column("_type_ids"))
        types = types if len(types) == len(tokens) else None  # NER windows carry no segment ids
        columns = self._predict(offsets, tokens, types)
        out = batch.drop_columns(["_input_ids", "_type_ids"])
        for name, (values, kind) in columns.items():
            out = out.append_column(name, _nest(rows, offsets, values, kind))
        return _timed(out, "predict", time.perf_counter() - t0)


class NerPredictor(_Predictor):
    """Per token: the argmax label (one byte) and its softmax probability (all that simple/first/max need)."""

    task = "ner"

    def _predict(self, offsets, tokens, types) -> dict:
        labels = np.zeros(len(tokens), np.int8)
        scores = np.zeros(len(tokens), np.float32)
        for where, (label, score) in self._forward(offsets, tokens, types):
            labels[where], scores[where] = label, score
        return {"_labels": (labels, pa.int8()), "_scores": (scores, pa.float32())}


class QaPredictor(_Predictor):
    task = "qa"

    def _predict(self, offsets, tokens, types) -> dict:
        starts = np.zeros(len(tokens), np.float32)
        ends = np.zeros(len(tokens), np.float32)
        for where, (start, end) in self._forward(offsets, tokens, types):
            starts[where], ends[where] = start, end
        return {"_start": (starts, pa.float32()), "_end": (ends, pa.float32())}


class Annotator:
    """The fused CPU layout: parse -> tokenize -> predict -> decode of one batch inside the inference actor, the
    same stage functions as the split layout (so the same rows), with no hand-off between processes."""

    def __init__(
        self,
        task: str,
        model_path: str,
        batch_tokens: int,
        backend: str,
        threads: int,
        packing: str,
        parse: dict,
        tokenize: dict,
        decode: dict,
    ):
        predictor = QaPredictor if task == "qa" else NerPredictor
        self.task, self.predict = task, predictor(model_path, batch_tokens, False, backend, threads, packing)
        self.parse, self.tokenize, self.decode = parse, {"task": task, "model_path": model_path, **tokenize}, decode

    def __call__(self, batch: pa.Table) -> pa.Table:
        from nlpbatch.annotate import stages

        decode = stages.decode_qa if self.task == "qa" else stages.decode_ner
        parts = []
        for part in stages.char_slices(stages.parse_rows(batch, **self.parse)):  # memory bounded per slice
            parts.append(decode(self.predict(stages.tokenize_slice(part, **self.tokenize)), **self.decode))
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)
