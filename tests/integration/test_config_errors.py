"""Every configuration mistake is one `nlpbatch: error:` line naming the key (and its YAML line) and exit 2."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.cli import main

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _run(capsys, *argv) -> str:
    """The CLI as a user runs it, in a subprocess (a fresh process: only our own output on stderr), or in this
    process with `capsys` where the test must patch something."""
    if capsys is None:
        proc = subprocess.run([sys.executable, "-m", "nlpbatch", *argv], capture_output=True, text=True)
        code, err = proc.returncode, proc.stderr
        assert "Traceback" not in err, err
    else:
        code = main(list(argv))
        err = "\n".join(line for line in capsys.readouterr().err.splitlines() if line.startswith("nlpbatch:"))
    assert code == 2 and err.count("nlpbatch: error: ") == 1, err
    return err


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("output: 5\n", "output: expected a string, got 5 ({path}:1)"),
        ("output: x\nepochs: [1\n", "{path}:3: not valid YAML"),
        ("output: x\nweight_decay: -0.1\n", "weight_decay: must be >= 0, got -0.1 ({path}:2)"),
        ("output: x\ntask_typo: 1\n", "task_typo: unknown key ({path}:2); did you mean 'task'?"),
    ],
)
def test_train_config_errors(tmp_path, yaml_text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    assert expected.format(path=path) in _run(None, "train", "ner", "--config", str(path))


def test_range_errors_name_the_key(tmp_path, tiny_ner_model):
    assert "doc_stride: -1 must be in" in _run(None, "train", "qa", "--output", "x", "--doc-stride", "-1")
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), tmp_path / "in.parquet")
    base = ["annotate", "ner", "--model", str(tiny_ner_model), "--input", str(tmp_path / "in.parquet")]
    base += ["--output", str(tmp_path / "out")]
    assert "num_gpus: must be >= 0" in _run(None, *base, "--num-gpus", "-1")
    assert "cpus_per_actor: must be > 0" in _run(None, *base, "--cpus-per-actor", "0")
    assert "max_length: must be >= 8 tokens when set, got 0" in _run(None, *base, "--max-length", "0")
    conll = tmp_path / "dev.txt"
    conll.write_text("Peter NNP B-NP B-PER\nspoke VBD B-VP O\n")
    gpu = ["evaluate", "ner", "--model", str(tiny_ner_model), "--data", str(conll), "--use-gpu"]
    assert "--use-gpu: no GPU is visible" in _run(None, *gpu)  # never silently on the CPU


def test_reconcile_failure_is_an_error_line_and_keeps_the_output(
    capsys, monkeypatch, ray_cluster, tiny_ner_model, tmp_path
):
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["Paris.", "Berlin."]}), tmp_path / "in.parquet")
    argv = ["annotate", "ner", "--model", str(tiny_ner_model), "--input", str(tmp_path / "in.parquet")]
    argv += ["--output", str(tmp_path / "out")]
    assert main(argv) == 0
    before = (tmp_path / "out" / "_SUCCESS.json").read_text()
    import nlpbatch.annotate.plan as plan

    counted = plan.check_inputs
    monkeypatch.setattr(plan, "check_inputs", lambda *a: counted(*a) + 1)  # a row "lost" on the way
    assert "rows do not reconcile: 3 in, 2 out + 0 rejected; nothing published" in _run(capsys, *argv)
    assert (tmp_path / "out" / "_SUCCESS.json").read_text() == before


def test_job_entrypoint_argument_without_equals(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "train.py"), str(REPO / "jobs" / "configs" / "train_ner.yaml"), "epochs"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("nlpbatch: error: argument 'epochs' is not key=value")


def test_wrong_task_and_typo_model_paths_fail_before_any_work(tmp_path, tiny_ner_model):
    pq.write_table(pa.table({"id": ["a"], "text": ["x"], "question": ["q?"]}), tmp_path / "in.parquet")
    io_flags = ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out")]
    err = _run(None, "annotate", "qa", "--model", str(tiny_ner_model), *io_flags)
    assert "is a ner model, not qa: use `nlpbatch annotate ner`" in err
    err = _run(None, "annotate", "ner", "--model", str(tmp_path / "runs" / "nre"), *io_flags)
    assert f"model directory {tmp_path / 'runs' / 'nre'} does not exist" in err
    assert not (tmp_path / "out").exists()


def test_missing_column_errors_name_the_option_to_set(tmp_path, tiny_ner_model):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "x", "question": "Who?"}\n')
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), tmp_path / "in.parquet")
    out = ["--model", str(tiny_ner_model), "--output", str(tmp_path / "out")]
    err = _run(None, "annotate", "qa", "--input", str(tmp_path / "in.jsonl"), "--question-column", "q", *out)
    assert "in.jsonl: none of its first 1 records has a 'q' key (keys of the first: id, text, question); set " in err
    assert "set --question-column, or ask" in err
    assert "--questions FILE" in err
    err = _run(None, "annotate", "ner", "--input", str(tmp_path / "in.parquet"), *out)
    assert "in.parquet: no column 'text' (columns: id, body); set --text-column" in err
    assert not (tmp_path / "out").exists()
