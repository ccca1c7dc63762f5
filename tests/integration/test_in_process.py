"""Small inputs without a cluster: `nlpbatch.load(model)` in Python and `annotate --text` / `--input -` on the
command line run the annotate stages in this process, with the rows the streaming job writes (annotate_texts is
the job's tested single-process reference), and no Ray start-up or noise."""

import json
import subprocess
import sys
import time

import pyarrow as pa
import pytest

import nlpbatch
from nlpbatch.annotate.pipeline import annotate_texts
from nlpbatch.config import load_annotate_config

pytestmark = pytest.mark.integration

TEXTS = ["Angela Merkel visited Paris.", "Zoë Müller arbeitet bei Siemens in München.", "EU rejects German lamb."]


def _reference(model, task="ner", questions=None, **settings):
    cfg = load_annotate_config(task=task, model=str(model), input="-", output="-", **settings)
    return annotate_texts(cfg, TEXTS, questions)


def test_load_annotates_strings_lists_and_tables_as_annotate_does(tiny_ner_model, tiny_qa_model):
    tagger = nlpbatch.load(str(tiny_ner_model))  # the task from the model's head
    reference = [row["entities"] for row in _reference(tiny_ner_model)]
    assert [row["entities"] for row in tagger(TEXTS)] == reference
    assert tagger(TEXTS[0])["entities"] == reference[0]
    table = tagger(pa.table({"doc": ["a", "b", "c"], "text": TEXTS}))
    assert table.column_names == ["doc", "text", "entities", "reject"]
    assert table.column("entities").to_pylist() == reference
    frame = tagger(pa.table({"text": TEXTS}).to_pandas())
    assert [list(map(dict, e)) for e in frame["entities"]] == reference
    assert tagger("")["reject"] == "text is empty"

    reader = nlpbatch.load(str(tiny_qa_model), max_length=64, stride=16)
    questions = ["Who visited Paris?"] * len(TEXTS)
    expected = [row["answer"] for row in _reference(tiny_qa_model, "qa", questions, max_length=64, stride=16)]
    assert [row["answer"] for row in reader(TEXTS, question="Who visited Paris?")] == expected
    with pytest.raises(ValueError, match="needs questions"):
        reader(TEXTS)


def test_annotate_text_and_stdin_print_rows_without_a_cluster(tiny_ner_model):
    reference = [row["entities"] for row in _reference(tiny_ner_model)]
    command = [sys.executable, "-m", "nlpbatch", "annotate", "ner", "--model", str(tiny_ner_model)]
    t0 = time.perf_counter()
    proc = subprocess.run([*command, *(a for t in TEXTS for a in ("--text", t))], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["entities"] for line in proc.stdout.splitlines()] == reference
    assert proc.stderr == "" and seconds < 60  # no Ray start-up, no Ray noise (about 6 s here, mostly imports)

    lines = [json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(TEXTS * 2)] + ["{broken"]
    proc = subprocess.run([*command, "--input", "-"], input="\n".join(lines), capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(6)] + [None]
    assert [r["entities"] for r in rows[:6]] == reference * 2 and rows[0]["text"] == TEXTS[0]
    assert rows[6]["reject"].startswith("invalid JSON line") and rows[6]["line"] == 7
