"""Classification end to end on GLUE SST-2 slices: distributed training and its gathered evaluation equal to one
process, `evaluate` from the model's own settings, `annotate classify` equal to the in-process model on the same
texts (a long document classified from all its windows), and `show` printing each document's label."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.annotate.pipeline import annotate_texts, run_annotation
from nlpbatch.config import load_annotate_config, load_train_config
from nlpbatch.evaluation import eval_config, evaluate_model
from nlpbatch.train.trainer import run_training

pytestmark = pytest.mark.integration


def test_classify_trains_evaluates_annotates_and_shows(ray_cluster, tiny_ner_model, data_dir, tmp_path):
    from nlpbatch.show import print_rows, read_rows

    model = tmp_path / "model"
    metrics = run_training(
        load_train_config(
            task="classify",
            model=str(tiny_ner_model),
            output=str(model),
            data_dir=str(data_dir / "sst2"),
            max_train_examples=128,
            max_eval_examples=64,
            max_length=64,
            epochs=1,
            batch_size=16,
            num_workers=2,
            quiet=True,
        )
    )
    final = metrics["final"]["eval"]
    assert final["n"] == 64 and set(final["per_class"]) == {"0", "1"} and "f1" in final
    matrix = final["confusion_matrix"]["rows_gold_columns_predicted"]
    assert sum(map(sum, matrix)) == 64 and final["accuracy"] == (matrix[0][0] + matrix[1][1]) / 64

    scored, predictions = evaluate_model(eval_config("classify", str(model)), str(data_dir / "sst2"), max_examples=64)
    assert scored["accuracy"] == final["accuracy"] and len(predictions) == 64  # 2 workers gathered = 1 process

    texts = ["a winning comedy", "the worst film of the year", " ".join(["a tedious and overlong mess ."] * 60), ""]
    pq.write_table(pa.table({"id": ["a", "b", "long", "empty"], "text": texts}), tmp_path / "in.parquet")
    common = {"task": "classify", "model": str(model), "max_length": 64, "stride": 16}
    manifest = run_annotation(
        load_annotate_config(input=str(tmp_path / "in.parquet"), output=str(tmp_path / "out"), **common)
    )
    assert manifest["rows_out"] == 3 and manifest["rows_rejected"] == 1
    _, rows = read_rows(str(tmp_path / "out"), 10)
    got = {r["id"]: r for r in rows}
    reference = annotate_texts(load_annotate_config(input="-", output="-", **common), texts)
    for key, ref in zip(["a", "b", "long"], reference):
        assert got[key]["label"] == ref["label"] in ("0", "1")
        assert got[key]["score"] == pytest.approx(ref["score"], abs=1e-5)
        assert sum(p["score"] for p in got[key]["probabilities"]) == pytest.approx(1, abs=1e-5)
    shown = io.StringIO()
    print_rows(manifest, rows, colour=False, stream=shown)
    assert f"long  {got['long']['label']} ({got['long']['score']:.2f})" in shown.getvalue()

    # evaluate scores a text of several windows as annotate labels it, for every window reduction
    long_texts = [
        " ".join(["a tedious and overlong mess ."] * k + ["a winning comedy"] * (k % 4)) for k in range(1, 13)
    ]
    data = tmp_path / "long.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{k % 2}\n" for k, t in enumerate(long_texts)))
    for how in ("mean", "first", "max"):
        windows = eval_config("classify", str(model), max_length=64, doc_stride=16, window_reduce=how)
        scored, predictions = evaluate_model(windows, str(data))
        rows = annotate_texts(load_annotate_config(input="-", output="-", window_reduce=how, **common), long_texts)
        assert predictions == [r["label"] for r in rows]
    assert scored["windows"] > len(long_texts)  # some texts span two windows or more


def test_multi_label_trains_tunes_thresholds_and_annotates_what_evaluate_scores(
    ray_cluster, tiny_ner_model, data_dir, tmp_path
):
    """Label lists train a sigmoid head; the thresholds validation tuned are stored in the model card; evaluate (2
    workers gathered = 1 process) scores with them, and annotate gives each document the labels evaluate predicted."""
    import json

    sentences = (data_dir / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:400]
    rows = []
    for line in sentences:
        text, label = line.rsplit("\t", 1)
        tags = (["positive"] if label == "1" else []) + (["long"] if len(text.split()) > 8 else [])
        rows.append({"text": text, "label": tags})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:300]))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[300:]))
    model = tmp_path / "model"
    metrics = run_training(
        load_train_config(
            task="classify",
            model=str(tiny_ner_model),
            output=str(model),
            train=str(tmp_path / "train.jsonl"),
            validation=str(tmp_path / "dev.jsonl"),
            max_length=64,
            epochs=1,
            num_workers=2,
            quiet=True,
        )
    )
    final = metrics["final"]["eval"]
    assert set(final["per_class"]) == {"long", "positive"} and final["thresholds_tuned_here"]
    assert {"micro_f1", "macro_f1", "subset_accuracy", "at_0.5"} <= set(final)
    card = json.loads((model / "nlpbatch.json").read_text())
    assert card["label_thresholds"] == final["thresholds"]
    assert json.loads((model / "config.json").read_text())["problem_type"] == "multi_label_classification"

    scored, predictions = evaluate_model(eval_config("classify", str(model)), str(tmp_path / "dev.jsonl"))
    assert not scored["thresholds_tuned_here"] and scored["thresholds"] == final["thresholds"]
    assert scored["micro_f1"] == final["micro_f1"] and scored["subset_accuracy"] == final["subset_accuracy"]
    common = {"task": "classify", "model": str(model), "max_length": 64, "stride": 16, "input": "-", "output": "-"}
    annotated = annotate_texts(load_annotate_config(**common), [r["text"] for r in rows[300:]])
    assert [sorted(r["labels"]) for r in annotated] == [sorted(p) for p in predictions]
    assert any(len(p) == 2 for p in predictions) or any(not p for p in predictions)  # a set, not one label


def test_sentence_pairs_annotate_as_evaluate_scores_them(ray_cluster, tiny_ner_model, data_dir, tmp_path):
    """An MRPC-style pair model: annotate reads the second text from the column it was trained with (model card),
    tokenizes the pair into one window as training did, and labels each pair as evaluate predicted it; a row
    without its second text is a reject with the reason."""
    import csv

    model = tmp_path / "model"
    columns = {"text_column": "#1 String", "text_pair_column": "#2 String", "label_column": "Quality"}
    run_training(
        load_train_config(
            task="classify",
            model=str(tiny_ner_model),
            output=str(model),
            data_dir=str(data_dir / "mrpc"),
            max_train_examples=96,
            max_eval_examples=48,
            max_length=64,
            epochs=1,
            num_workers=1,
            runner="local",  # one worker: trained in this process (test_train compares it with Ray Train)
            quiet=True,
            **columns,
        )
    )
    _, predictions = evaluate_model(eval_config("classify", str(model)), str(data_dir / "mrpc"), max_examples=48)
    with open(data_dir / "mrpc" / "validation.tsv", encoding="utf-8-sig") as fh:
        pairs = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[:48]
    table = {
        "id": [f"p{i}" for i in range(49)],
        "#1 String": [p["#1 String"] for p in pairs] + ["an orphan"],
        "#2 String": [p["#2 String"] for p in pairs] + [None],
    }
    pq.write_table(pa.table(table), tmp_path / "pairs.parquet")
    manifest = run_annotation(
        load_annotate_config(
            task="classify",
            model=str(model),
            input=str(tmp_path / "pairs.parquet"),
            output=str(tmp_path / "out"),
            text_column="#1 String",
            max_length=64,
            stride=16,
            max_reject_rate=0.1,
        )
    )
    from nlpbatch.show import read_rows

    _, rows = read_rows(str(tmp_path / "out"), 100)
    got = {r["id"]: r for r in rows}
    assert [got[f"p{i}"]["label"] for i in range(48)] == predictions
    assert manifest["rows_rejected"] == 1 and "text pair is null" in str(manifest["reject_reasons"])
    common = {"task": "classify", "model": str(model), "max_length": 64, "stride": 16, "input": "-", "output": "-"}
    in_process = annotate_texts(load_annotate_config(**common), table["#1 String"][:48], table["#2 String"][:48])
    assert [r["label"] for r in in_process] == predictions
    assert [got[f"p{i}"]["score"] for i in range(48)] == pytest.approx([r["score"] for r in in_process], abs=1e-5)

    # the Python API and `--text` on the same pair model: the table's own second column, text_pair=, or a clear
    # error; a model of another task is refused by load and by the CLI with one line
    import subprocess
    import sys

    import nlpbatch
    from nlpbatch.config import ConfigError

    clf = nlpbatch.load(str(model), max_length=64, stride=16)
    frame = pa.table({"#1 String": table["#1 String"][:48], "#2 String": table["#2 String"][:48]}).to_pandas()
    assert clf(frame)["label"].tolist() == predictions
    assert clf(table["#1 String"][0], text_pair=table["#2 String"][0])["label"] == predictions[0]
    with pytest.raises(ValueError, match=r"a sentence-pair model needs a text pair per text: model\(text, text_pair"):
        clf("a text alone")
    with pytest.raises(ConfigError, match=r"is a classify model, not ner: load it without task="):
        nlpbatch.load(str(model), task="ner")
    with pytest.raises(ConfigError, match=r"is a ner model, not classify"):
        nlpbatch.load(str(tiny_ner_model), task="classify")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "nlpbatch", *args], capture_output=True, text=True, timeout=300)

    first, second = table["#1 String"][0], table["#2 String"][0]
    flags = ["--max-length", "64", "--stride", "16"]
    done = cli("annotate", "classify", "--model", str(model), "--text", first, "--text-pair", second, *flags)
    assert done.returncode == 0 and json.loads(done.stdout)["label"] == predictions[0], done.stderr
    alone = cli("annotate", "classify", "--model", str(model), "--text", first, *flags)
    assert alone.returncode == 2 and "classifies sentence pairs: give each --text its --text-pair" in alone.stderr
    for task, other in (("ner", model), ("classify", tiny_ner_model), ("qa", tiny_ner_model)):
        wrong = cli("annotate", task, "--model", str(other), "--text", "Paris.", "--question", "Where?")
        assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr[-2000:]
        assert f"model, not {task}: use `nlpbatch annotate " in wrong.stderr.splitlines()[-1]
