"""Packed (padding-free) inference equals padded length buckets: same labels, same probabilities and QA logits
to float tolerance, on CPU (the block-diagonal fallback of the attention; CUDA runs varlen flash attention)."""

import json

import numpy as np
import pyarrow as pa
import pytest

from nlpbatch.annotate import stages
from nlpbatch.annotate.predictors import Predictor
from nlpbatch.packing import pack_ranges, positions

TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris on Monday.",
    "EU rejects German call to boycott British lamb.",
    "Zoë Müller arbeitet bei Siemens in München 🚀 und 東京 mit José Álvarez.",
    " ".join(f"Sentence {i}: Angela Merkel visited Siemens in München with Zoë." for i in range(30)),
    "Short.",
]


def _windows(task: str, model, questions=None) -> pa.Table:
    rows = [
        json.dumps({"id": str(i), "text": t, **({"question": questions[i % len(questions)]} if questions else {})})
        for i, t in enumerate(TEXTS)
    ]
    raw = pa.table({"raw": pa.array([r.encode() for r in rows], pa.binary())})
    table = stages.parse_rows(raw, "jsonl", "id", "text", "question" if questions else None, None, 10_000)
    return stages.tokenize(table.drop_columns(["_sec_parse"]), task, str(model), 64, 16)


def _flat(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).combine_chunks().flatten().flatten().to_numpy(zero_copy_only=False)


def test_pack_ranges_keep_window_order_within_the_budget():
    lengths = np.array([64, 64, 10, 64, 30, 64, 64, 64, 5])
    ranges = pack_ranges(lengths, 128)
    assert [lo for lo, _ in ranges] == [0, *[hi for _, hi in ranges[:-1]]] and ranges[-1][1] == len(lengths)
    assert all(lengths[lo:hi].sum() <= 128 for lo, hi in ranges)
    assert ranges == [(0, 2), (2, 5), (5, 7), (7, 9)]
    assert pack_ranges(np.array([], int), 128) == []
    assert positions(np.array([0, 3, 5])).tolist() == [0, 1, 2, 0, 1]


@pytest.mark.parametrize("batch_tokens", [64, 512])
def test_packed_ner_equals_padded_buckets(tiny_ner_model, batch_tokens):
    table = _windows("ner", tiny_ner_model)
    padded = Predictor("ner", str(tiny_ner_model), batch_tokens, backend="torch", packing="off")
    packed = Predictor("ner", str(tiny_ner_model), batch_tokens, backend="torch", packing="on")
    assert packed.engine.packs and not padded.engine.packs
    a, b = padded(table), packed(table)
    assert len(_flat(a, "_labels")) > 4 * 64  # several windows, the long text split with overlaps
    assert (_flat(a, "_labels") == _flat(b, "_labels")).all()
    np.testing.assert_allclose(_flat(a, "_scores"), _flat(b, "_scores"), atol=1e-5)


def test_packed_qa_equals_padded_buckets(tiny_qa_model):
    table = _windows("qa", tiny_qa_model, questions=["Who met Macron?", "Where is Siemens?"])
    a = Predictor("qa", str(tiny_qa_model), 512, backend="torch", packing="off")(table)
    b = Predictor("qa", str(tiny_qa_model), 512, backend="torch", packing="on")(table)
    for column in ("_start", "_end"):
        np.testing.assert_allclose(_flat(a, column), _flat(b, column), atol=1e-4)
    assert (_flat(a, "_start") != 0).any()


def test_auto_packing_stays_off_on_cpu(tiny_ner_model):
    # auto packs on CUDA only: the CPU fallback is quadratic in the packed length
    assert not Predictor("ner", str(tiny_ner_model), 512, backend="torch", packing="auto").engine.packs


def test_a_model_that_cannot_be_packed_is_refused_with_the_fix(tmp_path, tiny_ner_model):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForTokenClassification

    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64, num_labels=9)
    DistilBertForTokenClassification(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(str(tiny_ner_model)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'distilbert' model cannot be packed.*--packing off"):
        Predictor("ner", str(tmp_path), 512, backend="torch", packing="on")
