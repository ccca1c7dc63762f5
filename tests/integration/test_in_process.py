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
    with pytest.raises(ValueError, match="needs a question per text"):
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


def _output(out):
    """(manifest, data rows, reject rows) of a published output, without what names the run."""
    from .test_exactly_once import _published

    manifest, rows, rejects, _ = _published(str(out))
    rows = sorted(({**r, "run_id": None, "entities": _rounded(r["entities"])} for r in rows), key=_where)
    rejects = sorted(({**r, "run_id": None} for r in rejects), key=_where)
    return manifest, rows, rejects


def _where(row: dict) -> tuple:
    return row["source"], row["line"]


def _rounded(entities: list[dict]) -> list[dict]:
    """Scores to 6 places: another batch composition or thread count moves float32 sums in the 8th."""
    return [{**e, "score": round(e["score"], 6)} for e in entities]


def test_the_local_runner_publishes_what_the_streaming_job_publishes(ray_cluster, tiny_ner_model, tmp_path):
    """The same files annotated on the Ray cluster and in this process (`runner: local`): the same rows, rejects,
    counts and provenance, in several output files when rows_per_file asks for them."""
    from nlpbatch.annotate.pipeline import run_annotation

    corpus = tmp_path / "in"
    corpus.mkdir()
    lines = [json.dumps({"id": f"d{i}", "text": f"{TEXTS[i % 3]} Day {i}.", "tag": i}) for i in range(300)]
    lines[7], lines[50] = "{broken", json.dumps({"id": "e", "text": ""})
    (corpus / "a.jsonl").write_text("\n".join(lines) + "\n")
    (corpus / "b.jsonl").write_text("\n".join(lines[:40]) + "\n")
    outputs = {}
    for runner in ("ray", "local"):
        cfg = load_annotate_config(
            task="ner",
            model=str(tiny_ner_model),
            input=str(corpus),
            output=str(tmp_path / runner),
            keep_columns="text,tag",
            rows_per_file=100,
            runner=runner,
        )
        outputs[runner] = (run_annotation(cfg), *_output(tmp_path / runner)[1:])
    (ray_run, ray_rows, ray_rejects), (local_run, local_rows, local_rejects) = outputs["ray"], outputs["local"]
    assert (ray_run["runner"], local_run["runner"]) == ("ray", "local")
    for key in ("rows_in", "rows_out", "rows_rejected", "tokens", "reject_reasons"):
        assert local_run[key] == ray_run[key], key
    assert local_run["rows_out"] == 337 and local_run["rows_rejected"] == 3
    assert local_rows == ray_rows and local_rejects == ray_rejects
    files = [f for f in local_run["output_files"] if f.startswith("data/")]
    assert 1 < len(files) <= -(-337 // 100)  # rows_per_file rows a file or more (the last: the rest), as Ray bundles


def test_a_small_file_is_annotated_without_a_cluster(tiny_ner_model, tmp_path):
    """`annotate` of a six-line JSONL with no cluster in sight (no RAY_ADDRESS): run in this process, published
    as a streaming run is, with no Ray line on the terminal, in seconds."""
    import os

    corpus = tmp_path / "six.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": TEXTS[i % 3]}) + "\n" for i in range(6)))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "NLPBATCH_VERBOSE")}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nlpbatch", "annotate", "ner", "--model", str(tiny_ner_model)]
        + ["--input", str(corpus), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest, rows, _ = _output(tmp_path / "out")
    assert manifest["runner"] == "local" and json.loads(proc.stdout)["rows_out"] == 6
    assert [r["entities"] for r in rows] == [_rounded(r["entities"]) for r in _reference(tiny_ner_model)] * 2
    lines = proc.stderr.splitlines()
    assert all(line.startswith("[nlpbatch] ") for line in lines), lines  # nothing of Ray's
    assert "run in this process" in lines[0] and seconds < 60  # about 7 s here: imports, model load, publish
    quiet = subprocess.run(
        [sys.executable, "-m", "nlpbatch", "annotate", "ner", "--model", str(tiny_ner_model), "--quiet"]
        + ["--input", str(corpus), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    progress = [line for line in quiet.stderr.splitlines() if "rows (100%)" in line]
    assert quiet.returncode == 0 and progress == [] and "6 rows in, 6 annotated" in quiet.stderr  # the summary only


def test_a_large_input_says_it_is_counting_its_rows(tiny_ner_model, tmp_path, monkeypatch, capsys):
    """Counting the rows reads every file: past COUNT_NOTICE_BYTES the wait gets a line first; a small input none."""
    from nlpbatch.annotate import plan as pipeline

    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": TEXTS[i % 3]}) + "\n" for i in range(6)))
    cfg = load_annotate_config(task="ner", model=str(tiny_ner_model), input=str(corpus), output=str(tmp_path / "o"))
    assert pipeline.plan_annotation(cfg).rows_in == 6 and "counting" not in capsys.readouterr().err
    monkeypatch.setattr(pipeline, "COUNT_NOTICE_BYTES", 100)
    assert pipeline.plan_annotation(cfg).rows_in == 6
    assert "annotate ner: counting the rows of 1 input file(s)" in capsys.readouterr().err
