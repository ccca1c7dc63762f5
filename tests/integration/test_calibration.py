"""Scores with a meaning, end to end: training calibrates the exported model on validation, annotate writes the
calibrated scores, `nlpbatch calibrate --target-precision` picks a threshold that annotate then applies."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch import calibration
from nlpbatch.annotate.local_runner import annotate_texts
from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.config import load_annotate_config
from nlpbatch.model_card import read_card

pytestmark = pytest.mark.integration


def _entities(rows):
    return [(e["label"], e["start"], e["end"], e["score"]) for r in rows for e in r["entities"] or []]


def test_training_calibrates_and_annotate_writes_calibrated_scores(trained_ner_model, data_dir, tmp_path):
    metrics = json.loads((trained_ner_model / "metrics.json").read_text())["calibration"]
    card = read_card(trained_ner_model)["score_calibration"]
    assert card["calibrator"]["method"] == "platt" and card["predictions"] == metrics["predictions"] > 100
    assert metrics["ece_cross_fitted"] < metrics["ece_before"]  # what the tiny run's raw scores did not say

    texts = [line.split(" ")[0] for line in (data_dir / "conll2003" / "validation.txt").read_text().splitlines()]
    sentences = [" ".join(texts[i : i + 12]) for i in range(0, 1200, 12)]
    settings = load_annotate_config(task="ner", model=str(trained_ner_model), input="-", output="-")
    raw = _entities(annotate_texts(settings, sentences, raw_scores=True))
    written = _entities(annotate_texts(settings, sentences))
    assert [e[:3] for e in written] == [e[:3] for e in raw] and len(raw) > 50  # the same spans
    expected = calibration.apply(card["calibrator"], np.array([e[3] for e in raw]))
    np.testing.assert_allclose([e[3] for e in written], expected, rtol=1e-9)
    assert not np.allclose(expected, [e[3] for e in raw], atol=0.01)

    # through the corpus path (the local runner here; the Ray runner reads the same decode settings)
    pq.write_table(pa.table({"id": [str(i) for i in range(len(sentences))], "text": sentences}), tmp_path / "c.parquet")
    out = tmp_path / "out"
    cfg = load_annotate_config(
        task="ner", model=str(trained_ner_model), input=str(tmp_path / "c.parquet"), output=str(out)
    )
    manifest = run_annotation(cfg)
    table = pa.concat_tables(pq.read_table(out / f) for f in manifest["output_files"] if f.startswith("data/"))
    ordered = sorted(table.to_pylist(), key=lambda r: int(r["id"]))
    np.testing.assert_allclose([e[3] for e in _entities(ordered)], expected, atol=1e-5)  # other batches: float noise


def test_calibrate_picks_a_threshold_for_a_target_precision_that_annotate_applies(
    trained_ner_model, data_dir, tmp_path
):
    model = tmp_path / "ner"
    shutil.copytree(trained_ner_model, model)
    conll = str(data_dir / "conll2003" / "validation.txt")
    proc = subprocess.run(
        [sys.executable, "-m", "nlpbatch", "calibrate", "--model", str(model), "--data", conll]
        + ["--max-examples", "400", "--target-precision", "0.5"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    chosen = report["target_precision"]
    assert chosen["precision"] >= 0.5 and 0 < chosen["threshold"] < 1 and "expected calibration error" in proc.stderr
    assert report["ece_after"] <= report["ece_before"] and len(report["reliability_before"]) >= 3
    stored = read_card(model)["score_calibration"]
    assert (
        stored["target_precision"]["threshold"] == chosen["threshold"]
        and stored["predictions"] == report["predictions"]
    )

    settings = load_annotate_config(task="ner", model=str(model), input="-", output="-")
    sentences = ["Angela Merkel met Emmanuel Macron in Paris .", "EU rejects German call to boycott British lamb ."]
    everything = _entities(annotate_texts(settings, sentences * 20, raw_scores=True))
    calibrated = calibration.apply(stored["calibrator"], np.array([e[3] for e in everything]))
    kept = _entities(annotate_texts(settings, sentences * 20))
    assert len(kept) == int((calibrated >= chosen["threshold"]).sum()) and all(
        e[3] >= chosen["threshold"] for e in kept
    )


def test_a_model_with_nothing_right_is_one_error_line_and_keeps_its_card(tiny_ner_model, data_dir, tmp_path):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = tmp_path / "ner"
    ner = AutoModelForTokenClassification.from_pretrained(tiny_ner_model)
    with torch.no_grad():
        ner.classifier.bias[ner.config.label2id["O"]] = 100.0  # "O" for every token: no entity at all
    ner.save_pretrained(model)
    AutoTokenizer.from_pretrained(tiny_ner_model).save_pretrained(model)
    conll = str(data_dir / "conll2003" / "validation.txt")
    proc = subprocess.run(
        [sys.executable, "-m", "nlpbatch", "calibrate", "--model", str(model), "--data", conll, "--max-examples", "50"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("nlpbatch: error: calibrate: ")
    assert "too few, or all alike, to fit a calibrator" in proc.stderr and "score_calibration" not in read_card(model)
