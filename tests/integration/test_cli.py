"""The command line as a user runs it: metrics JSON on stdout, clear errors (file and line) and exit code 2."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def nlpbatch(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nlpbatch", *args], capture_output=True, text=True, cwd=cwd)


def test_evaluate_prints_metrics_for_any_conll_file(tiny_ner_model, tmp_path):
    path = tmp_path / "test.txt"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\nspoke VBD B-VP O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
    )
    proc = nlpbatch(
        "evaluate",
        "ner",
        "--model",
        str(tiny_ner_model),
        "--data",
        str(path),
        "--predictions",
        str(tmp_path / "p.json"),
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert metrics["n"] == 2 and set(metrics["per_type"]) <= {"PER", "ORG", "LOC", "MISC"}
    assert 0.0 <= metrics["overall_f1"] <= 1.0
    blocks = (tmp_path / "p.json").read_text().strip().split("\n\n")  # CoNLL: `word gold pred`, one per line
    assert [[line.split()[:2] for line in b.splitlines()] for b in blocks] == [
        [["Peter", "B-PER"], ["Blackburn", "I-PER"], ["spoke", "O"]],
        [["EU", "B-ORG"], ["rejects", "O"]],
    ]


def test_bad_input_exits_2_naming_file_and_line(tiny_ner_model, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Peter NNP B-NP B-PER\nspoke VBD B-VP I-ORG\n")
    proc = nlpbatch("evaluate", "ner", "--model", str(tiny_ner_model), "--data", str(path))
    assert proc.returncode == 2
    assert f"{path}:2: IOB2 tag I-ORG follows B-PER" in proc.stderr


def test_train_config_errors_are_all_reported(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output: x\nepochs: 0\nlearnig_rate: 1\n")
    proc = nlpbatch("train", "ner", "--config", str(config))
    assert proc.returncode == 2
    assert "learnig_rate: unknown key" in proc.stderr and "epochs: must be >= 1, got 0" in proc.stderr


def test_annotate_reports_rows_out_of_the_counted_input(ray_cluster, tiny_ner_model, tmp_path):
    import os

    corpus = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": f"d{i}", "text": f"Peter Blackburn visited Paris on day {i} ."}) for i in range(120)]
    corpus.write_text("\n".join([*lines, "{not json"]) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nlpbatch", "annotate", "ner", "--model", str(tiny_ner_model)]
        + ["--input", str(corpus), "--output", str(tmp_path / "out")],
        env={**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # stdout: the result only
    assert (summary["rows_in"], summary["rows_out"], summary["rows_rejected"]) == (121, 120, 1)
    ours = [line.split("[nlpbatch] ", 1)[1] for line in proc.stderr.splitlines() if "[nlpbatch] " in line]
    done = [line for line in ours if line.startswith("annotate ner: 121/121 rows (100%)")]
    assert len(done) == 1 and "rejected 1" in done[0] and "ETA 0:00" in done[0], ours
    assert ours[-1].startswith("annotate ner: 121 rows in, 120 annotated, 1 rejected")
    assert "Total Progress" not in proc.stderr and "write task" not in proc.stderr  # Ray Data's status block is off
