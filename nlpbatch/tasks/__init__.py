"""Task logic as plain functions; `get_task` gives the runtime (Ray Train loop, evaluate) what it needs."""

from __future__ import annotations

from nlpbatch.tasks.base import Task


def get_task(name: str) -> Task:
    if name == "ner":
        from nlpbatch.tasks.ner import NER_TASK

        return NER_TASK
    if name == "qa":
        from nlpbatch.tasks.qa import QA_TASK

        return QA_TASK
    raise ValueError(f"unknown task {name!r} (expected 'ner' or 'qa')")
