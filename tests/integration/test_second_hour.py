"""What a newcomer hits after the quick start, said in one line instead of silently: --questions beside the rows'
own question column."""

from __future__ import annotations

import json

import pytest

from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.config import load_annotate_config

pytestmark = pytest.mark.integration


def test_questions_file_beside_the_rows_own_questions_is_said(tiny_qa_model, tmp_path, capsys):
    rows = [{"id": "a", "text": "Paris is the capital of France.", "question": "What is the capital?"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "q.txt").write_text("Which country?\nWhich city?\n")
    common = dict(task="qa", model=str(tiny_qa_model), input=str(tmp_path / "in.jsonl"), runner="local")
    manifest = run_annotation(
        load_annotate_config(output=str(tmp_path / "out"), questions=str(tmp_path / "q.txt"), **common)
    )
    assert manifest["rows_in"] == 2  # one row asked the file's two questions
    said = capsys.readouterr().err
    assert "--questions asks every row the file's 2 question(s); the input's own 'question' column is not used" in said
    run_annotation(load_annotate_config(output=str(tmp_path / "out2"), **common))
    assert "is not used" not in capsys.readouterr().err
