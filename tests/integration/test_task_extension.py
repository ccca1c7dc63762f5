"""A task defined only in the test suite (`toy_task.py`: one label per document) trains on Ray Train, evaluates and
annotates a corpus through the registry, with no module of the package touched: the extension point works, and a
task with one output per window (not per token) fits it."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.annotate.pipeline import annotate_texts, run_annotation
from nlpbatch.config import load_annotate_config, load_train_config
from nlpbatch.evaluation import eval_config, evaluate_model
from nlpbatch.train.trainer import run_training

pytestmark = pytest.mark.integration

TASK = "integration.toy_task"  # a module path: the task's own file


def test_a_task_of_the_users_own_trains_evaluates_and_annotates(ray_cluster, tiny_ner_model, tmp_path):
    model = tmp_path / "model"
    cfg = load_train_config(
        task=TASK,
        model=str(tiny_ner_model),
        output=str(model),
        epochs=1,
        batch_size=16,
        learning_rate=1e-3,
        num_workers=2,
        quiet=True,
    )
    metrics = run_training(cfg)
    final = metrics["final"]["eval"]
    assert final["n"] == 24 and 0 <= final["accuracy"] <= 1
    assert json.loads((model / "nlpbatch.json").read_text())["labels"] == ["no", "yes"]
    assert (model / "training.png").is_file()

    scored, predictions = evaluate_model(eval_config(TASK, str(model)), None)
    assert scored["accuracy"] == final["accuracy"] and len(predictions) == 24  # gathered from 2 workers = 1

    long_text = " ".join(["the old bridge over the river"] * 40 + ["Paris"])  # several 32-token windows
    texts = ["a quiet walk in Paris", "the museum by the river", long_text, "   "]
    pq.write_table(pa.table({"id": [f"t{i}" for i in range(4)], "text": texts}), tmp_path / "in.parquet")
    common = {"task": TASK, "model": str(model), "max_length": 32, "stride": 8}
    manifest = run_annotation(
        load_annotate_config(input=str(tmp_path / "in.parquet"), output=str(tmp_path / "out"), **common)
    )
    assert manifest["rows_out"] == 3 and manifest["rows_rejected"] == 1
    rows = {
        r["id"]: r
        for f in manifest["output_files"]
        if f.startswith("data/")
        for r in pq.read_table(tmp_path / "out" / f).to_pylist()
    }
    reference = annotate_texts(load_annotate_config(input="-", output="-", **common), texts)
    for i, ref in enumerate(reference[:3]):
        assert rows[f"t{i}"]["label"] == ref["label"] in ("yes", "no")
        assert rows[f"t{i}"]["score"] == pytest.approx(ref["score"], abs=1e-5) and 0.5 <= ref["score"] <= 1
    assert reference[3]["_reject"] == "text is empty"
