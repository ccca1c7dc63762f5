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
