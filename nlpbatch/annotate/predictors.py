"""Inference actors for Ray Data's actor pool: the model is loaded once in __init__, one batch per __call__.

Windows from all documents of a batch are sorted by length and packed into forward passes of at most
`batch_tokens` padded tokens, so short documents are not padded to the longest one.
"""

from __future__ import annotations

import time

import pyarrow as pa

from nlpbatch.annotate.stages import FLOAT_LISTS, _timed

INT8_LISTS = pa.list_(pa.list_(pa.int8()))


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


class _Predictor:
    task = ""

    def __init__(self, model_path: str, batch_tokens: int, use_gpu: bool = False):
        import torch

        from nlpbatch.annotate.stages import get_tokenizer
        from nlpbatch.tasks import get_task

        self.torch = torch
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = get_task(self.task).load_trained(model_path).to(self.device, dtype=dtype).eval()
        self.pad_id = get_tokenizer(model_path).pad_token_id
        self.batch_tokens = batch_tokens

    def _forward(self, windows: list[list[int]], type_ids: list[list[int]]):
        """Yield (window indices, model output) per length bucket."""
        torch = self.torch
        for group in length_buckets([len(w) for w in windows], self.batch_tokens):
            width = len(windows[group[0]])
            ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            types = torch.zeros((len(group), width), dtype=torch.long)
            for row, i in enumerate(group):
                ids[row, : len(windows[i])] = torch.tensor(windows[i])
                mask[row, : len(windows[i])] = 1
                if type_ids[i]:
                    types[row, : len(type_ids[i])] = torch.tensor(type_ids[i])
            inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            with torch.inference_mode():
                yield group, self.model(**{k: v.to(self.device) for k, v in inputs.items()})

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        per_row = batch.column("_input_ids").to_pylist()
        types = batch.column("_type_ids").to_pylist()
        flat = [(r, w) for r, row in enumerate(per_row) for w in range(len(row))]
        results = self._predict([per_row[r][w] for r, w in flat], [types[r][w] if types[r] else [] for r, w in flat])
        columns = {name: [[None] * len(row) for row in per_row] for name in results}
        for name, values in results.items():
            for (r, w), value in zip(flat, values):
                columns[name][r][w] = value
        out = batch.drop_columns(["_input_ids", "_type_ids"])
        for name, values in columns.items():
            out = out.append_column(name, pa.array(values, INT8_LISTS if name == "_labels" else FLOAT_LISTS))
        return _timed(out, "predict", time.perf_counter() - t0)


class NerPredictor(_Predictor):
    """Per token: the argmax label and its softmax probability (all that simple/first/max aggregation need)."""

    task = "ner"

    def _predict(self, windows: list[list[int]], type_ids: list[list[int]]) -> dict[str, list]:
        labels: list = [None] * len(windows)
        scores: list = [None] * len(windows)
        for group, output in self._forward(windows, type_ids):
            probs = output.logits.float().softmax(-1)
            best, best_label = probs.max(-1)
            for row, i in enumerate(group):
                n = len(windows[i])
                labels[i] = best_label[row, :n].tolist()
                scores[i] = best[row, :n].tolist()
        return {"_labels": labels, "_scores": scores}


class QaPredictor(_Predictor):
    task = "qa"

    def _predict(self, windows: list[list[int]], type_ids: list[list[int]]) -> dict[str, list]:
        starts: list = [None] * len(windows)
        ends: list = [None] * len(windows)
        for group, output in self._forward(windows, type_ids):
            s, e = output.start_logits.float(), output.end_logits.float()
            for row, i in enumerate(group):
                n = len(windows[i])
                starts[i] = s[row, :n].tolist()
                ends[i] = e[row, :n].tolist()
        return {"_start": starts, "_end": ends}
