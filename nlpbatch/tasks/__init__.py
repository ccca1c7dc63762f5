"""The task registry: the one place that knows which tasks exist. Everything outside `tasks/` asks it (CLI choices,
config checks, reserved output columns, the model's task) and never compares task names.

A task is a module that builds a `tasks.base.Task` named `TASK`; `TASKS` maps each task name to that module, which is
imported only when the task is used (the CLI starts without importing any task).

Adding a task: write `nlpbatch/tasks/<name>.py` with its functions and `TASK = Task(...)` (see `ner.py`: data,
model head, features, scoring, and the inference half: head outputs, their reduction, decode, show), and add its
line here. A task of the user's own needs no change to the package: name it by its module (`my_pkg.my_task`,
anything with a dot), and every process that runs it, Ray workers included, imports it from there
(`tests/integration/toy_task.py` is one).
"""

from __future__ import annotations

import importlib

from nlpbatch.tasks.base import Task

TASKS: dict[str, str] = {
    "ner": "nlpbatch.tasks.ner",
    "qa": "nlpbatch.tasks.qa",
    "classify": "nlpbatch.tasks.classify",
}


def task_names() -> list[str]:
    return list(TASKS)


def is_task(name: str) -> bool:
    """A built-in task, or the dotted name of an importable module that defines `TASK`."""
    try:
        get_task(name)
    except ValueError:
        return False
    return True


def get_task(name: str) -> Task:
    module = TASKS.get(name) or (name if "." in name else None)
    if module is None:
        raise ValueError(f"unknown task {name!r} (expected one of {', '.join(TASKS)}, or a module defining TASK)")
    try:
        task = importlib.import_module(module).TASK
    except (ImportError, AttributeError) as err:
        raise ValueError(f"task {name!r}: cannot import {module}.TASK ({err})") from err
    return task


def task_of_model(model_path: str) -> str | None:
    """The task a saved model was built for: what its model card says (`nlpbatch train` wrote it), else what its
    architecture in config.json says (one head class can serve several tasks); None when no task claims it."""
    from nlpbatch.model_card import architectures, read_card

    trained = read_card(model_path).get("task")
    if trained:
        return trained
    names = " ".join(architectures(model_path))
    for name in TASKS:
        if get_task(name).architecture in names:
            return name
    return None


def require_task(model: str, model_path: str, task: str, command: str = "annotate") -> None:
    """A model of another task is one error naming the task it was trained for, before any work."""
    from nlpbatch.config import ConfigError

    trained_for = task_of_model(model_path)
    if trained_for not in (None, task):
        fix = (
            f"use `nlpbatch {command} {trained_for}`" if command else f"load it without task= (or task={trained_for!r})"
        )
        raise ConfigError(f"{model} is a {trained_for} model, not {task}: {fix}")


def reserved_columns() -> set[str]:
    """Output columns some task writes: a kept input column must not shadow one."""
    return {column for name in TASKS for column in get_task(name).output_columns}
