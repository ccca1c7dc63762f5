"""`nlpbatch review`: the documents of an annotated output worth a reviewer's minute, as tasks for a labelling tool
with the model's predictions pre-filled; the reviewed export then trains the next model (`train --train FILE`).

Strategies (a document's priority; the highest first):
  least-sure       1 - its least sure entity's score: with calibrated scores (`calibration.py`), the chance that
                   its weakest entity is wrong. Documents without entities come last (nothing to judge).
  expected-errors  the expected number of wrong entities, sum(1 - score), per 100 words of text: dense trouble
                   first, not only long documents.
A document once queued is never queued again: its id goes into a state file beside the queue
(`.nlpbatch-queued.json`), which every queue written to that folder shares.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

STRATEGIES = ("least-sure", "expected-errors")
FORMATS = ("label-studio", "spacy")
STATE_FILE = ".nlpbatch-queued.json"


def priority(scores: list[float], text: str, strategy: str) -> float:
    """How much a document with these entity scores is worth reviewing (higher first)."""
    if not scores:
        return -1.0
    if strategy == "least-sure":
        return 1.0 - min(scores)
    return sum(1.0 - s for s in scores) * 100.0 / max(1, len(text.split()))


def select(rows: list[dict], spans, n: int, strategy: str, text_column: str, seen: set[str]) -> list[dict]:
    """The `n` rows of highest priority whose ids are not in `seen` (ties: input order)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    ranked = []
    for order, row in enumerate(rows):
        if str(row["id"]) in seen:
            continue
        scores = [s for *_, s in spans(row) if s is not None]
        ranked.append((-priority(scores, row.get(text_column) or "", strategy), order, row))
    ranked.sort(key=lambda item: item[:2])
    return [row for *_, row in ranked[:n]]


def write_queue(rows: list[dict], spans, path: str, fmt: str, text_column: str, model_version: str) -> None:
    """Label Studio tasks (one JSON list, predictions pre-filled) or spaCy / Prodigy records (JSON Lines)."""
    from nlpbatch.data.exports import label_studio_task, spacy_record

    if fmt == "label-studio":
        tasks = [label_studio_task(row, spans(row), text_column, model_version) for row in rows]
        text = json.dumps(tasks, ensure_ascii=False, indent=1)
    else:
        text = "".join(
            json.dumps(spacy_record(row, spans(row), text_column), ensure_ascii=False) + "\n" for row in rows
        )
    _replace(Path(path), text)


def read_state(queue: str) -> dict[str, str]:
    path = Path(queue).parent / STATE_FILE
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def remember(queue: str, ids: list[str]) -> None:
    state = read_state(queue)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    state.update({i: f"{now} {Path(queue).name}" for i in ids})
    _replace(Path(queue).parent / STATE_FILE, json.dumps(state, indent=1))


def build_review_queue(
    outputs: list[str],
    n: int,
    queue: str,
    strategy: str = "least-sure",
    fmt: str = "label-studio",
    s3_endpoint: str | None = None,
) -> dict:
    """Read the published rows of each output, pick the `n` most worth reviewing that were never queued, write
    them to `queue` and remember them. Returns {queued, candidates, skipped_before, strategy, model_versions}."""
    from nlpbatch.config import ConfigError
    from nlpbatch.show import read_rows
    from nlpbatch.tasks import get_task

    rows, task, text_column, versions = [], None, "text", set()
    for output in outputs:
        manifest, found = read_rows(output, 2**62, s3_endpoint)
        if task not in (None, manifest["task"]):
            raise ConfigError(f"{output}: a {manifest['task']} output; the others are {task}: one task per queue")
        task = manifest["task"]
        text_column = manifest.get("config", {}).get("text_column", "text")
        versions.add((manifest.get("provenance") or {}).get("model_version") or "nlpbatch")
        rows += found
    spec = get_task(task)
    if not spec.span_formats:
        raise ConfigError(f"review: {task} outputs have no spans a labelling tool reviews (NER outputs do)")
    if rows and text_column not in rows[0]:
        raise ConfigError(
            f"review: the output's rows have no {text_column!r} column (annotate ran with --keep-columns without it): "
            "a reviewer needs the texts; annotate again keeping it"
        )
    seen = set(read_state(queue))
    chosen = select(rows, spec.spans, n, strategy, text_column, seen)
    Path(queue).parent.mkdir(parents=True, exist_ok=True)
    write_queue(chosen, spec.spans, queue, fmt, text_column, ", ".join(sorted(versions)))
    remember(queue, [str(row["id"]) for row in chosen])
    return {
        "queue": queue,
        "queued": len(chosen),
        "candidates": len(rows),
        "skipped_before": sum(1 for row in rows if str(row["id"]) in seen),
        "strategy": strategy,
        "model_versions": sorted(versions),
    }


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
