"""Losing a worker node mid-job, on a local multi-node cluster (a head and two worker raylets)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).with_name("node_loss_job.py")


def run_script(mode, tmp_path, model, data_dir) -> dict:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(tmp_path), str(model), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def minilm_ner_model(tmp_path_factory):
    """The bundled MiniLM with a fresh NER head: slow enough on CPU that the node dies mid-job."""
    from transformers import AutoTokenizer, set_seed

    from nlpbatch.data.conll import load_conll
    from nlpbatch.models import resolve_model
    from nlpbatch.tasks.ner import build_model

    path = tmp_path_factory.mktemp("minilm_ner")
    set_seed(0)
    sample = tmp_path_factory.mktemp("s") / "s.txt"
    sample.write_text("EU NNP B-NP B-ORG\n")
    build_model(resolve_model(None), load_conll(sample)).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model(None)).save_pretrained(path)
    return path


def test_annotate_survives_node_loss_every_row_once(minilm_ner_model, data_dir, tmp_path):
    summary = run_script("annotate", tmp_path, minilm_ner_model, data_dir)
    # the node that died hosted an inference actor, and died well before the job ended
    assert summary["hosted"] == "Annotator" and summary["finished_at"] - summary["removed_at"] > 5, summary
    manifest = summary["manifest"]
    assert manifest["rows_in"] == manifest["rows_out"] == 400 and manifest["rows_rejected"] == 0
    ids = [i for f in manifest["output_files"] for i in pq.read_table(tmp_path / "out" / f)["id"].to_pylist()]
    assert sorted(ids) == [f"doc-{i:08d}" for i in range(400)]  # every input row exactly once
    on_disk = sorted((tmp_path / "out" / "data").glob("part-*"))
    assert [f"data/{p.name}" for p in on_disk] == sorted(f for f in manifest["output_files"] if f.startswith("data/"))


def test_training_survives_node_loss_same_f1(tiny_ner_model, data_dir, tmp_path):
    summary = run_script("train", tmp_path, tiny_ner_model, data_dir)
    assert summary["hosted"] == "RayTrainWorker" and summary["finished_at"] - summary["removed_at"] > 5, summary
    assert abs(summary["f1"] - summary["reference_f1"]) <= 0.005, summary
