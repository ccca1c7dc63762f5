"""SQuAD v2.0 end to end on a slice of ../shared/data/squad_v2: training with unanswerable questions stores the
best null threshold in the model card, evaluate reads it, and annotate says "no answer" exactly where evaluate
predicts the empty answer (same windows, same null rule)."""

import json

import pytest

from nlpbatch.annotate.pipeline import annotate_texts
from nlpbatch.config import load_annotate_config, load_train_config
from nlpbatch.evaluation import eval_config, evaluate_model
from nlpbatch.tasks.qa import load_split
from nlpbatch.train.trainer import run_training

pytestmark = pytest.mark.integration

WINDOWS = dict(max_length=128, doc_stride=32)


def test_squad_v2_threshold_travels_from_training_to_annotate(ray_cluster, tiny_qa_model, data_dir, tmp_path):
    v2 = data_dir / "squad_v2"
    model = tmp_path / "model"
    metrics = run_training(
        load_train_config(
            task="qa",
            output=str(model),
            model=str(tiny_qa_model),
            train=str(v2 / "train.json"),
            validation=str(v2 / "validation.json"),
            epochs=1,
            max_train_examples=96,
            max_eval_examples=40,
            batch_size=16,
            learning_rate=1e-3,
            keep_checkpoints=0,  # the exported model only: the run's checkpoints are deleted
            **WINDOWS,
        )
    )
    assert not list((model / "ray_runs").glob("*/checkpoint_*")) and (model / "model.safetensors").is_file()
    final = metrics["final"]["eval"]
    assert {"HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"} <= set(final)
    assert final["HasAns_total"] + final["NoAns_total"] == 40 and final["NoAns_total"] > 5
    card = json.loads((model / "nlpbatch.json").read_text())
    assert card["null_threshold"] == final["best_f1_thresh"]
    assert eval_config("qa", str(model)).null_threshold == card["null_threshold"]  # evaluate reads the card

    raw = load_split(str(v2 / "validation.json"), "validation", 40)
    annotate = load_annotate_config(input="-", output="-", task="qa", model=str(model), max_length=128, stride=32)
    rows = annotate_texts(annotate, list(raw["context"]), list(raw["question"]))
    margins = sorted(r["null_margin"] for r in rows)
    threshold = (margins[len(margins) // 2 - 1] + margins[len(margins) // 2]) / 2  # half of them say no answer
    for given in (None, threshold):  # the card's threshold, and one that splits the questions in two
        cfg = eval_config("qa", str(model), null_threshold=given, **WINDOWS)
        _, predictions = evaluate_model(cfg, str(v2 / "validation.json"), max_examples=40)
        with_threshold = load_annotate_config(**{**vars(annotate), "null_threshold": given})
        rows = annotate_texts(with_threshold, list(raw["context"]), list(raw["question"]))
        annotated = {qid: "" if r["no_answer"] else r["answer"]["text"] for qid, r in zip(raw["id"], rows)}
        assert annotated == predictions
    assert sum(not answer for answer in predictions.values()) == 20
