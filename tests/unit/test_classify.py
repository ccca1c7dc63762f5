"""Classification as pure functions: GLUE's files read as distributed, scores against a hand count, a long
document's label from the mean of its windows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from nlpbatch.data import DataError
from nlpbatch.tasks.classify import classification_scores, decode, load_split


def test_glue_files_read_as_distributed(data_dir):
    mrpc = load_split(
        str(data_dir / "mrpc"),
        "validation",
        text_column="#1 String",
        text_pair_column="#2 String",
        label_column="Quality",
    )  # a BOM before the header, unquoted '"' inside the sentences
    assert len(mrpc) == 408 and mrpc.features["label"].names == ["0", "1"]
    assert any('"' in t for t in mrpc["text"]) and all(mrpc["text_pair"])
    sst2 = load_split(str(data_dir / "sst2"), "validation", max_examples=50)  # `sentence` found by itself
    assert len(sst2) == 50 and sst2.features["label"].names == ["0", "1"]
    with pytest.raises(DataError, match=r"no column 'Quality' .*set --label-column"):
        load_split(str(data_dir / "sst2"), "validation", label_column="Quality")


def test_scores_equal_a_hand_count():
    gold = [0, 0, 1, 1, 1, 2, 2, 0]
    pred = [0, 1, 1, 1, 0, 2, 1, 0]
    m = classification_scores(gold, pred, ["a", "b", "c"])
    # by hand: a: tp 2, predicted 3, actual 3; b: tp 2, predicted 4, actual 3; c: tp 1, predicted 1, actual 2
    assert m["accuracy"] == 5 / 8 and m["confusion_matrix"]["rows_gold_columns_predicted"][2] == [0, 1, 1]
    f1 = {"a": 2 / 3, "b": 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3), "c": 2 * 1 * 0.5 / 1.5}
    assert m["per_class"]["b"]["precision"] == 0.5 and m["per_class"]["c"]["recall"] == 0.5
    assert m["macro_f1"] == pytest.approx(sum(f1.values()) / 3) and "f1" not in m
    binary = classification_scores([1, 1, 0, 0], [1, 0, 0, 1], ["0", "1"])
    assert binary["f1"] == 0.5 and binary["accuracy"] == 0.5  # F1 of the positive class, as GLUE reports MRPC


def test_a_document_is_the_mean_of_its_windows():
    probs = [[[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]], [], [[0.6, 0.4]]]
    logits = pa.array([np.log(p).tolist() for p in probs], pa.list_(pa.list_(pa.float32())))  # softmax gives p back
    batch = pa.table(
        {
            "id": ["long", "bad", "short"],
            "source": ["f"] * 3,
            "line": [1, 2, 3],
            "n_tokens": [9, 0, 3],
            "_reject": [None, "text is empty", None],
            "_input": [None, "{}", None],
            "_logits": logits,
        }
    )
    out = decode(batch, {0: "neg", 1: "pos"}).to_pylist()
    assert [r["label"] for r in out] == ["pos", None, "neg"]  # mean P(pos) of the long one: 1.6 / 3
    assert out[0]["score"] == pytest.approx(np.mean([0.1, 0.8, 0.7]), abs=1e-6)
    assert [p["label"] for p in out[0]["probabilities"]] == ["pos", "neg"] and out[1]["probabilities"] is None
    assert [r["labels"] for r in out] == [["pos"], None, ["neg"]]


def test_sentence_pairs_are_one_window_of_two_segments(data_dir):
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from nlpbatch.models import resolve_model
    from nlpbatch.tasks.classify import features

    raw = load_split(str(data_dir / "mrpc"), "train", 4, "#1 String", "#2 String", "Quality")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    feats = features(raw, tokenizer, SimpleNamespace(max_length=32))
    assert all(len(f["input_ids"]) <= 32 and 0 in f["token_type_ids"] and 1 in f["token_type_ids"] for f in feats)
    assert [f["labels"] for f in feats] == list(raw["label"]) and [f["index"] for f in feats] == [0, 1, 2, 3]


def test_annotate_tokenizes_a_sentence_pair_as_training_did(data_dir):
    """annotate's tokenize stage puts (text, second text) in one window, truncated longest side first, with the
    token types training and evaluate use: the same ids, the same segments, one window a pair."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from nlpbatch.annotate.stages import tokenize_slice
    from nlpbatch.models import resolve_model
    from nlpbatch.tasks.classify import eval_features

    model = resolve_model(None)
    raw = load_split(str(data_dir / "mrpc"), "validation", 40, "#1 String", "#2 String", "Quality")
    feats = eval_features(raw, AutoTokenizer.from_pretrained(model), SimpleNamespace(max_length=32, doc_stride=8))
    n = len(raw)
    batch = pa.table(
        {
            "id": [str(i) for i in range(n)],
            "text": raw["text"],
            "question": raw["text_pair"],
            "source": ["f"] * n,
            "line": list(range(n)),
            "_reject": pa.nulls(n, pa.string()),
            "_input": pa.nulls(n, pa.string()),
        }
    )
    out = tokenize_slice(batch, "classify", model, 32, 8)
    assert [w for row in out["_input_ids"].to_pylist() for w in row] == [f["input_ids"] for f in feats]
    assert [w for row in out["_type_ids"].to_pylist() for w in row] == [f["token_type_ids"] for f in feats]
    assert all(len(row) == 1 for row in out["_input_ids"].to_pylist())  # truncated, never cut into windows


def test_a_text_of_several_windows_is_scored_from_all_of_them_as_annotate_reduces_them():
    from types import SimpleNamespace

    import numpy as np
    from datasets import ClassLabel, Dataset, Features, Value

    from nlpbatch.tasks import classify

    raw = Dataset.from_dict(
        {"text": ["long", "short"], "label": [1, 0]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["0", "1"])}),
    )
    feats = [{"example": 0}, {"example": 0}, {"example": 0}, {"example": 1}]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])  # long: first says 0, mean and max say 1
    model = SimpleNamespace(id2label={0: "0", 1: "1"})
    for how, expected in (("mean", ["1", "0"]), ("first", ["0", "0"]), ("max", ["0", "0"])):
        metrics, pred = classify.score({"probs": probs}, feats, raw, model, SimpleNamespace(window_reduce=how))
        assert pred == expected and metrics["windows"] == 4
    assert classify.reduce_windows(probs[:3], "max").tolist() == [0.9, 0.8]


def test_multi_label_data_metrics_and_thresholds(tmp_path):
    """Label lists make the data multi-label (JSONL lists; a TSV comma list with multi_label); scores count each
    label at its threshold, by hand; thresholds tuned per label pick each label's best F1; decode gives every label
    over its threshold."""
    import json

    from nlpbatch.tasks.classify import multi_label_scores, parse_thresholds, tune_thresholds

    rows = [{"text": "a", "label": ["spam", "toxic"]}, {"text": "b", "label": []}, {"text": "c", "label": ["spam"]}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m.tsv").write_text("text\tlabel\na\tspam,toxic\nb\t \nc\tspam\n")
    from_jsonl = load_split(str(tmp_path / "m.jsonl"), "train")
    assert from_jsonl.features["label"].feature.names == ["spam", "toxic"]
    assert from_jsonl["label"] == [[0, 1], [], [0]]
    from_tsv = load_split(str(tmp_path / "m.tsv"), "train", multi_label=True)  # an empty cell: no label applies
    assert from_tsv["label"] == from_jsonl["label"] and from_tsv.features == from_jsonl.features
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": ["x"]}\n{"text": "b", "label": "x"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: a row needs 'text', 'label' \(multi-label: a list"):
        load_split(str(tmp_path / "bad.jsonl"), "train")

    gold = np.array([[1, 1], [0, 0], [1, 0], [0, 1]])
    pred = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    scores = multi_label_scores(gold, pred, ["spam", "toxic"])
    # spam: tp 2; toxic: tp 1, fp 1, fn 1 -> micro 2*3 / (2*3 + 1 + 1)
    assert scores["micro_f1"] == pytest.approx(6 / 8) and scores["subset_accuracy"] == 0.5
    assert scores["per_class"]["spam"]["f1"] == 1.0 and scores["per_class"]["toxic"]["f1"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx(0.75)

    probs = np.array([[0.9, 0.2], [0.1, 0.3], [0.35, 0.25], [0.2, 0.8]])
    gold = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    assert tune_thresholds(probs, gold).tolist() == [0.35, 0.25]  # the lowest score of each label's positives
    assert parse_thresholds("spam=0.3", ["spam", "toxic"]).tolist() == [0.3, 0.5]
    assert parse_thresholds({"toxic": 0.7}, ["spam", "toxic"]).tolist() == [0.5, 0.7]

    logits = pa.array([[[2.0, -1.0, 0.5]], [[-3.0, -3.0, -3.0]]], pa.list_(pa.list_(pa.float32())))
    batch = pa.table(
        {
            "id": ["x", "y"],
            "source": ["f"] * 2,
            "line": [1, 2],
            "n_tokens": [3, 3],
            "_reject": pa.nulls(2, pa.string()),
            "_input": pa.nulls(2, pa.string()),
            "_logits": logits,
        }
    )
    out = decode(batch, {0: "a", 1: "b", 2: "c"}, multi_label=True, thresholds={"c": 0.7}).to_pylist()
    assert out[0]["labels"] == ["a"] and out[1]["labels"] == []  # sigmoid(0.5) = 0.62 < c's 0.7
    assert out[0]["probabilities"][0]["score"] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_a_hub_shaped_folder_keeps_its_class_names(tmp_path):
    """A dataset laid out as on the hub (read by `datasets.load_dataset`, the hub's code path): ClassLabel ids come
    back as their names, single- and multi-label."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    single = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    Dataset.from_dict({"sentence": ["bad", "good"], "label": [0, 1]}, features=single).to_parquet(
        str(tmp_path / "single" / "train.parquet")
    )
    multi = Features({"text": Value("string"), "topics": Sequence(ClassLabel(names=["art", "war"]))})
    Dataset.from_dict({"text": ["x", "y"], "topics": [[1], [0, 1]]}, features=multi).to_parquet(
        str(tmp_path / "multi" / "train.parquet")
    )
    ds = load_split(str(tmp_path / "single"), "train")
    assert ds.features["label"].names == ["negative", "positive"] and ds["label"] == [0, 1]
    ds = load_split(str(tmp_path / "multi"), "train", label_column="topics")
    assert ds.features["label"].feature.names == ["art", "war"] and ds["label"] == [[1], [0, 1]]


def test_a_data_root_names_the_datasets_inside_it(data_dir):
    # classify has no default folder: the data root (as for NER) is a mistake the error explains
    with pytest.raises(FileNotFoundError) as err:
        load_split(str(data_dir), "train")
    assert "datasets inside it: " in str(err.value) and "mrpc" in str(err.value)
    assert f"--data-dir {data_dir / 'mrpc'}" in str(err.value)
