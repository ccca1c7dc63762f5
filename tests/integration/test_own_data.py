"""Fine-tuning on one's own data: an entity label set of its own (WNUT-17's six lower-case types, from its own
tab-separated files given with --train / --validation), stored in the model and read back by evaluate; a validation
type the model never saw is scored against recall and named, not an error."""

from __future__ import annotations

import json

import pytest

from nlpbatch.config import load_train_config
from nlpbatch.evaluation import eval_config, evaluate_model
from nlpbatch.train.trainer import run_training

pytestmark = pytest.mark.integration

WNUT_TYPES = ["corporation", "creative-work", "group", "location", "person", "product"]


def test_train_and_evaluate_on_wnut17_files_with_its_own_labels(ray_cluster, tiny_ner_model, data_dir, tmp_path):
    validation = tmp_path / "validation.conll"
    extra = "Aspirin\tB-drug\nhelps\tO\n\n"  # a type the training data lacks
    sentences = (data_dir / "wnut17" / "validation.conll").read_text(encoding="utf-8").split("\n\n")[:300]
    validation.write_text("\n\n".join([*sentences, extra]))
    cfg = load_train_config(
        task="ner",
        model=str(tiny_ner_model),  # a CoNLL-2003 head: replaced by one for WNUT's 13 labels
        output=str(tmp_path / "model"),
        train=str(data_dir / "wnut17" / "train.conll"),
        validation=str(validation),
        max_train_examples=64,
        epochs=1,
        batch_size=16,
        num_workers=1,
        runner="local",  # one worker: trained in this process (test_train compares it with Ray Train)
        quiet=True,
    )
    metrics = run_training(cfg)
    labels = ["O"] + [f"{p}-{t}" for t in WNUT_TYPES for p in "BI"]
    assert json.loads((tmp_path / "model" / "config.json").read_text())["id2label"] == dict(
        (str(i), name) for i, name in enumerate(labels)
    )
    assert json.loads((tmp_path / "model" / "nlpbatch.json").read_text())["labels"] == labels
    final = metrics["final"]["eval"]
    assert final["unknown_types"] == ["drug"] and final["per_type"]["drug"]["number"] == 1
    assert set(final["per_type"]) <= set(WNUT_TYPES) | {"drug"} and len(final["per_type"]) >= 4

    scored, _ = evaluate_model(eval_config("ner", str(tmp_path / "model")), str(validation))
    assert scored["overall_f1"] == final["overall_f1"] and scored["unknown_types"] == ["drug"]


def test_label_studio_round_trip_annotate_review_train_evaluate(ray_cluster, tiny_ner_model, data_dir, tmp_path):
    """annotate ner --output-format label-studio writes tasks with predictions; `show` reads them; the reviewer's
    export (the predictions accepted as annotations) trains and evaluates, and its spans read back exactly as
    annotate wrote them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nlpbatch.annotate.pipeline import run_annotation
    from nlpbatch.config import load_annotate_config
    from nlpbatch.data.conll import parse_conll
    from nlpbatch.data.spans import spans_to_tags
    from nlpbatch.show import read_rows
    from nlpbatch.tasks.ner import load_split

    texts = [" ".join(r["tokens"]) for r in parse_conll(data_dir / "conll2003" / "validation.txt")[:60]]
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(60)], "text": texts}), tmp_path / "corpus.parquet")
    manifest = run_annotation(
        load_annotate_config(
            task="ner",
            model=str(tiny_ner_model),
            input=str(tmp_path / "corpus.parquet"),
            output=str(tmp_path / "out"),
            output_format="label-studio",
            aggregation="first",  # word-level entities: spans on word boundaries
            runner="local",  # the sink's Label Studio format is the same through Ray
        )
    )
    files = [f for f in manifest["output_files"] if f.startswith("data/")]
    assert files and all(f.endswith(".json") for f in files)
    tasks = [t for f in files for t in json.loads((tmp_path / "out" / f).read_text())]
    assert len(tasks) == 60 and {t["data"]["id"] for t in tasks} == {f"d{i}" for i in range(60)}
    # the prediction names the weights that wrote it, as every row and the manifest do
    version = manifest["provenance"]["model_version"]
    assert version.startswith("sha256:") and {t["predictions"][0]["model_version"] for t in tasks} == {version}
    results = [r for t in tasks for r in t["predictions"][0]["result"]]
    assert len(results) > 50 and all(r["type"] == "labels" and r["to_name"] == "text" for r in results)
    _, shown = read_rows(str(tmp_path / "out"), 5)
    assert [len(r["entities"]) for r in shown] == [len(t["predictions"][0]["result"]) for t in tasks[:5]]

    for task in tasks:  # the reviewer accepts every prediction and exports
        task["annotations"] = [{"result": task.pop("predictions")[0]["result"]}]
    reviewed = tmp_path / "reviewed.json"
    reviewed.write_text(json.dumps(tasks))
    raw = load_split(str(reviewed), "train")
    names = raw.features["ner_tags"].feature.names
    for task, tags in zip(tasks, raw["ner_tags"]):
        spans = [
            (r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in task["annotations"][0]["result"]
        ]
        assert spans_to_tags(task["data"]["text"], spans)[1] == [names[t] for t in tags]  # no span was moved

    cfg = load_train_config(
        task="ner",
        model=str(tiny_ner_model),
        output=str(tmp_path / "model"),
        train=str(reviewed),
        validation=str(reviewed),
        epochs=1,
        num_workers=1,
        runner="local",  # one worker: trained in this process (test_train compares it with Ray Train)
        quiet=True,
    )
    final = run_training(cfg)["final"]["eval"]
    scored, _ = evaluate_model(eval_config("ner", str(tmp_path / "model")), str(reviewed))
    assert scored["overall_f1"] == final["overall_f1"] and scored["per_type"].keys() == final["per_type"].keys()


def test_training_files_on_s3_read_as_the_local_ones(
    s3_bucket, s3_server, tiny_ner_model, data_dir, tmp_path, monkeypatch
):
    """--train / --validation / evaluate --data take s3:// objects and globs: copied down and read exactly as the
    same files on disk; a key that does not exist is one clear error."""
    from nlpbatch.data import DataError

    client, bucket = s3_bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    sentences = (data_dir / "wnut17" / "validation.conll").read_text(encoding="utf-8").split("\n\n")
    for i in range(2):
        local = tmp_path / f"part-{i}.conll"
        local.write_text("\n\n".join(sentences[i * 40 : (i + 1) * 40]) + "\n")
        client.put_object(Bucket=bucket, Key=f"own/part-{i}.conll", Body=local.read_bytes())
    cfg = eval_config("ner", str(tiny_ner_model))
    remote, _ = evaluate_model(cfg, f"s3://{bucket}/own/part-*.conll")
    local, _ = evaluate_model(cfg, str(tmp_path / "part-*.conll"))
    assert remote == local and remote["n"] == 80
    one, _ = evaluate_model(cfg, f"s3://{bucket}/own/part-1.conll")
    assert one["n"] == 40
    with pytest.raises(DataError, match="no such object"):
        evaluate_model(cfg, f"s3://{bucket}/own/missing.conll")


def test_a_label_studio_project_of_two_annotators_trains_in_one_run(ray_cluster, tiny_ner_model, tmp_path, capsys):
    """Two annotators, a cancelled task, a predictions-only task, choices and textarea results, a nested span and a
    Chinese task: it trains, says what it used, skipped and resolved, and keeps that (with the annotators'
    agreement) in metrics.json."""
    import json
    from pathlib import Path

    from nlpbatch.config import load_train_config
    from nlpbatch.train.trainer import run_training

    project = Path(__file__).resolve().parents[1] / "fixtures" / "exports" / "label_studio_project.json"
    cfg = load_train_config(
        task="ner",
        model=str(tiny_ner_model),
        output=str(tmp_path / "model"),
        train=str(project),
        validation=str(project),
        epochs=1,
        num_workers=1,
        runner="local",  # one worker: trained in this process (test_train compares it with Ray Train)
        quiet=True,
    )
    run_training(cfg)
    said = capsys.readouterr().err
    assert "cancelled (skipped) annotations left out: 1 (row 3)" in said
    assert "overlapping or nested spans left out (--overlaps longest): 1 (row 2)" in said
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["train_examples"] == 5 and len(metrics["data_files"]) == 2  # train and validation
    train_file = metrics["data_files"][0]
    assert train_file["format"] == "label-studio" and train_file["examples"] == 5 and train_file["entities"] == 10
    assert train_file["counts"]["choices results ignored (not spans)"] == 1
    assert round(train_file["agreement"]["span_f1"], 3) == 0.571 and train_file["agreement"]["per_type"]["PER"] == 1.0
    # trained on a span export: annotate groups the tokenizer's words (punctuation apart), as the reader cut them
    card = json.loads((tmp_path / "model" / "nlpbatch.json").read_text())
    assert card["word_unit"] == "pretokenized"
    from nlpbatch.evaluation import eval_config, evaluate_model

    scored, _ = evaluate_model(eval_config("ner", str(tmp_path / "model")), str(project))
    assert scored["overall_f1"] == metrics["final"]["eval"]["overall_f1"]
