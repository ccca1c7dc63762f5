"""The review queue end to end: annotate with a calibrated model, queue the least sure documents as Label Studio
tasks (and spaCy records), never the same document twice, and read the reviewed export back as training data."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.config import load_annotate_config
from nlpbatch.data.conll import parse_conll

pytestmark = pytest.mark.integration


def _review(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "nlpbatch", "review", *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_the_queue_holds_the_least_sure_documents_once_and_trains_the_next_model(trained_ner_model, data_dir, tmp_path):
    from nlpbatch.tasks.ner import load_split

    texts = [" ".join(r["tokens"]) for r in parse_conll(data_dir / "conll2003" / "validation.txt")[:80]]
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(80)], "text": texts}), tmp_path / "corpus.parquet")
    out = tmp_path / "out"
    manifest = run_annotation(
        load_annotate_config(
            task="ner", model=str(trained_ner_model), input=str(tmp_path / "corpus.parquet"), output=str(out)
        )
    )
    rows = pa.concat_tables(pq.read_table(out / f) for f in manifest["output_files"] if f.startswith("data/"))
    weakest = {r["id"]: min(e["score"] for e in r["entities"]) for r in rows.to_pylist() if r["entities"]}
    ranked = sorted(weakest, key=lambda i: (weakest[i], int(i[1:])))

    queue = tmp_path / "review" / "queue-1.json"
    first = _review("--input", str(out), "--n", "10", "--output", str(queue))
    tasks = json.loads(queue.read_text())
    assert first["queued"] == 10 and [t["data"]["id"] for t in tasks] == ranked[:10]
    version = manifest["provenance"]["model_version"]
    assert {t["predictions"][0]["model_version"] for t in tasks} == {version}
    second = _review("--input", str(out), "--n", "10", "--output", str(tmp_path / "review" / "queue-2.jsonl"))
    records = [json.loads(line) for line in (tmp_path / "review" / "queue-2.jsonl").read_text().splitlines()]
    assert second["skipped_before"] == 10 and [r["meta"]["id"] for r in records] == ranked[10:20]

    # the reviewer accepts (or fixes) the predictions and exports: the next training run reads the file as it is
    for task in tasks:
        task["annotations"] = [{"result": task.pop("predictions")[0]["result"]}]
    reviewed = tmp_path / "reviewed.json"
    reviewed.write_text(json.dumps(tasks))
    raw = load_split(str(reviewed), "train")
    names = raw.features["ner_tags"].feature.names
    assert len(raw) == 10 and sum(
        n.startswith("B-") for tags in raw["ner_tags"] for n in map(names.__getitem__, tags)
    ) == sum(len(t["annotations"][0]["result"]) for t in tasks)
    assert len(load_split(str(tmp_path / "review" / "queue-2.jsonl"), "train")) == 10  # the spaCy records too
