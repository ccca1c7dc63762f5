"""The task is one place: outside `nlpbatch/tasks/` nothing compares task names or names a task, and everything a
runtime needs comes from the registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nlpbatch.tasks import get_task, reserved_columns, task_names, task_of_model

PACKAGE = Path(__file__).resolve().parents[2] / "nlpbatch"


def test_no_task_names_outside_the_task_modules():
    pattern = re.compile(r"""["'](ner|qa)["']|task\s*[!=]=""")
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "tasks" not in path.relative_to(PACKAGE).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "task logic outside nlpbatch/tasks/:\n" + "\n".join(found)


def test_registry_answers_what_the_runtimes_ask(tiny_ner_model, tiny_qa_model):
    assert task_names() == ["ner", "qa", "classify"]
    assert task_of_model(str(tiny_ner_model)) == "ner" and task_of_model(str(tiny_qa_model)) == "qa"
    assert {"entities", "answer", "no_answer"} <= reserved_columns()
    for name in task_names():
        task = get_task(name)
        assert task.name == name and task.head_outputs and (task.token_columns or task.window_columns)
        assert task.output_columns
    with pytest.raises(ValueError, match="unknown task 'pos' .expected one of ner, qa, classify"):
        get_task("pos")


def test_the_model_card_names_the_task_before_the_architecture(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    assert task_of_model(str(tmp_path)) == "classify"  # the architecture alone
    (tmp_path / "nlpbatch.json").write_text(json.dumps({"task": "my_pkg.sentiment"}))
    assert task_of_model(str(tmp_path)) == "my_pkg.sentiment"  # one head class, another task: the card says which


def test_a_broken_model_card_is_one_error_line(tiny_ner_model, tmp_path):
    import shutil
    import subprocess
    import sys

    model = tmp_path / "model"
    shutil.copytree(tiny_ner_model, model)
    (model / "nlpbatch.json").write_text('{"task": "ner",')  # cut off by a full disk
    proc = subprocess.run(
        [sys.executable, "-m", "nlpbatch", "evaluate", "ner", "--model", str(model), "--data", "x.txt"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{model / 'nlpbatch.json'}: not valid JSON" in proc.stderr
