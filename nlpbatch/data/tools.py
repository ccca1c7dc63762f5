"""Labelling tools' exports as the tools write them, turned into examples (text, character spans) with a tally of
what was used, skipped and resolved. One function per shape; the shape is told from the records (or forced with
--data-format):

    label-studio      JSON list of tasks: data.<text key>, annotations[] (several annotators, cancelled ones,
                      a ground_truth one), predictions[], results of any type (labels, choices, textarea, relation)
    label-studio-min  Label Studio's JSON-MIN: one record per annotation (data fields, the labels' from_name key with
                      [{start, end, text, labels}], annotator, annotation_id, created_at)
    doccano           JSONL {text, label: [[start, end, LABEL]]} or, with relations, {text, entities: [{id, label,
                      start_offset, end_offset}], relations}; a collaborative export merges annotators' labels
    spacy             JSONL {text, spans|entities: [{start, end, label}]} (nlpbatch's own spaCy output too)
    spacy-doc         spaCy's Doc.to_json(): {text, ents: [{start, end, label}], tokens, sents}
    docbin            spaCy's binary training files (.spacy), read with spaCy (`pip install 'nlpbatch[spacy]'`)
    prodigy           Prodigy's db-out records {text, tokens, spans, answer, _input_hash, _annotator_id}:
                      reject / ignore answers are skipped, several annotators' accepts are a task's annotations

Several annotations of one task (Label Studio, Prodigy) go through `--annotations`: `auto` (the task's
ground_truth annotation if one is marked, else its most recent), `all` (one example per annotation, as Label
Studio's own converter does) or `agreed` (only the spans every annotator of the task marked). Their agreement (span
F1 between each pair of annotators, exact start, end and label) is reported per type.
"""

from __future__ import annotations

import collections
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from nlpbatch.data import DataError

SHAPES = ("label-studio", "label-studio-min", "doccano", "spacy", "spacy-doc", "docbin", "prodigy")
POLICIES = ("auto", "all", "agreed")  # --annotations
OVERLAPS = ("longest", "first", "error")  # --overlaps (spans.spans_to_tags resolves them)
MIN_META = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement", "history"}
Span = tuple[int, int, str]


@dataclass
class Example:
    """One training example: where it came from (a row, and the annotation when a task has several), its text and
    its character spans."""

    row: str
    text: str
    spans: list[Span]


@dataclass
class Tally:
    """What reading a file used, skipped and resolved: counts by what, the rows of each (first few), agreement."""

    counts: collections.Counter = field(default_factory=collections.Counter)
    rows: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    agree: collections.Counter = field(default_factory=collections.Counter)  # per type: 2 x spans both marked
    total: collections.Counter = field(default_factory=collections.Counter)  # per type: spans either marked
    compared: int = 0  # tasks with two or more annotations

    def add(self, what: str, row: str, n: int = 1) -> None:
        self.counts[what] += n
        if len(self.rows[what]) < 5 and row not in self.rows[what]:
            self.rows[what].append(row)

    def compare(self, annotations: list[list[Span]]) -> None:
        """Span F1 between every pair of one task's annotations, per type."""
        self.compared += 1
        for a, b in itertools.combinations(annotations, 2):
            a, b = set(a), set(b)
            for label in {s[2] for s in a | b}:
                la, lb = {s for s in a if s[2] == label}, {s for s in b if s[2] == label}
                self.agree[label] += 2 * len(la & lb)
                self.total[label] += len(la) + len(lb)

    def agreement(self) -> dict | None:
        """{"tasks", "span_f1", "per_type": {type: f1}} over the tasks with several annotations, or None."""
        if not self.compared:
            return None
        total = sum(self.total.values())
        return {
            "tasks": self.compared,
            "span_f1": sum(self.agree.values()) / total if total else 1.0,
            "per_type": {t: self.agree[t] / n for t, n in sorted(self.total.items()) if n},
        }

    def lines(self) -> list[str]:
        said = []
        for what, n in sorted(self.counts.items()):
            rows = self.rows[what]
            more = " ..." if n > len(rows) and len(rows) == 5 else ""
            said.append(f"{what}: {n} (row{'s' if len(rows) > 1 else ''} {', '.join(rows)}{more})")
        agreement = self.agreement()
        if agreement:
            types = ", ".join(f"{t} {f:.2f}" for t, f in agreement["per_type"].items())
            said.append(
                f"annotator agreement (span F1, exact match) over {agreement['tasks']} task(s) with 2+ annotations: "
                f"{agreement['span_f1']:.3f} ({types})"
            )
        return said


def detect(path: Path, records: list[tuple[int, dict]], listed: bool) -> str | None:
    """The shape of a file's records (`listed`: one JSON list, as Label Studio exports), or None when none fits.
    Looks at the first records, not only the first one (an unlabelled first task has no labels key)."""
    if path.suffix.lower() == ".spacy":
        return "docbin"
    sample = [r for _, r in records[:50] if isinstance(r, dict)]
    keys = set().union(*(r.keys() for r in sample)) if sample else set()
    if listed:
        if keys & {"annotations", "predictions", "completions"} or "data" in keys:
            return "label-studio"
        if keys & {"annotation_id", "annotator"}:
            return "label-studio-min"
        return None
    tokens = next((r.get("tokens") for r in sample if isinstance(r.get("tokens"), list) and r["tokens"]), None)
    if keys & {"answer", "_input_hash", "_task_hash"} or (tokens and isinstance(tokens[0], dict) and "spans" in keys):
        return "prodigy"
    if "ents" in keys and "text" in keys:
        return "spacy-doc"
    entities = [e for r in sample for e in (r.get("entities") or []) if isinstance(e, dict)]
    if entities and "start_offset" in entities[0]:
        return "doccano"
    if "spans" in keys or entities or "entities" in keys:
        return "spacy"
    if keys & {"label", "labels"}:
        return "doccano"
    return None


def examples(
    shape: str,
    path: Path,
    records: list[tuple[int, dict]],
    policy: str,
    tally: Tally,
    text_key: str | None = None,
) -> list[Example]:
    """The file's examples in `shape`, annotations chosen by `policy`; skipped and ignored things counted."""
    if shape == "docbin":
        return _docbin(path)
    if shape == "label-studio":
        return _tasks(_label_studio(path, records, tally, text_key), policy, tally)
    if shape == "label-studio-min":
        return _tasks(_label_studio_min(path, records, tally, text_key), policy, tally)
    if shape == "prodigy":
        return _tasks(_prodigy(path, records, tally), policy, tally)
    found = []
    for number, record in records:
        row = str(number)
        if not isinstance(record, dict):
            raise DataError(f"{path}:{row}: not a JSON object")
        text = record.get(text_key or "text")
        key = {"spacy": ("spans", "entities"), "spacy-doc": ("ents",), "doccano": ("label", "labels", "entities")}
        present = [k for k in key[shape] if k in record]
        if not present:  # never a silent all-O example: the record is of another shape
            raise DataError(
                f"{path}:{row}: no {' or '.join(repr(k) for k in key[shape])} key in a {shape} record (keys: "
                f"{', '.join(sorted(record))}); another format? --data-format names it"
            )
        raw = record[present[0]] or []
        if shape == "doccano":
            spans = [
                (s["start_offset"], s["end_offset"], s["label"]) if isinstance(s, dict) else (s[0], s[1], s[2])
                for s in raw
            ]
            if record.get("relations"):
                tally.add("doccano relations ignored", row, len(record["relations"]))
        else:
            spans = [(s["start"], s["end"], s["label"]) if isinstance(s, dict) else (s[0], s[1], s[2]) for s in raw]
        found.append(Example(row, text, spans))
    return found


@dataclass
class _Task:
    """One task's annotations: (name, spans, is ground truth, time) each, after cancelled ones were dropped."""

    row: str
    text: str | None
    annotations: list[tuple[str, list[Span], bool, str]]


def _tasks(tasks: list[_Task], policy: str, tally: Tally) -> list[Example]:
    found = []
    for task in tasks:
        if not task.annotations:
            continue
        if len(task.annotations) > 1:
            tally.compare([spans for _, spans, _, _ in task.annotations])
        if policy == "all":
            several = len(task.annotations) > 1
            for name, spans, _, _ in task.annotations:
                found.append(Example(f"{task.row}/{name}" if several else task.row, task.text, spans))
            continue
        if policy == "agreed" and len(task.annotations) > 1:
            kept = set.intersection(*(set(spans) for _, spans, _, _ in task.annotations))
            dropped = sum(len(set(spans) - kept) for _, spans, _, _ in task.annotations)
            if dropped:
                tally.add("spans not every annotator marked, left out (--annotations agreed)", task.row, dropped)
            found.append(Example(task.row, task.text, sorted(kept)))
            continue
        truth = [a for a in task.annotations if a[2]]
        chosen = truth[-1] if truth else max(enumerate(task.annotations), key=lambda a: (a[1][3], a[0]))[1]
        if len(task.annotations) > 1:
            why = "its ground_truth one" if truth else "the most recent"
            tally.add(f"tasks with several annotations: {why} used (--annotations)", task.row)
        found.append(Example(task.row, task.text, chosen[1]))
    return found


def _text_of(data: dict, text_key: str | None, row: str, path: Path, regions: list[dict]) -> str:
    """A task's text: `text_key`, else `text`, else its one string field (or the one its regions' texts match)."""
    if text_key:
        if not isinstance(data.get(text_key), str):
            raise DataError(f"{path}:{row}: no text under {text_key!r} (keys: {', '.join(sorted(data))})")
        return data[text_key]
    if isinstance(data.get("text"), str):
        return data["text"]
    strings = [k for k, v in data.items() if isinstance(v, str)]
    fits = [
        k
        for k in strings
        if all(r.get("text") in (None, data[k][r.get("start", 0) : r.get("end", 0)]) for r in regions)
    ]
    if len(strings) == 1 or len(fits) == 1:
        return data[strings[0] if len(strings) == 1 else fits[0]]
    raise DataError(
        f"{path}:{row}: cannot tell which field is the text ({', '.join(strings) or 'none is a string'}); "
        "--text-key names it"
    )


def _regions(results: list, row: str, tally: Tally) -> list[Span]:
    """The labelled character regions of one annotation's results; other results counted by type."""
    spans = []
    for result in results or []:
        value = result.get("value") if isinstance(result, dict) else None
        kind = (result.get("type") or "?") if isinstance(result, dict) else type(result).__name__
        if not isinstance(value, dict) or "start" not in value or "end" not in value:
            tally.add(f"{kind} results ignored (not spans)", row)
            continue
        labels = value.get("labels") or value.get("hypertextlabels") or []
        if not labels:
            tally.add("regions without a label ignored", row)
            continue
        if len(labels) > 1:
            tally.add("regions with several labels: the first kept", row)
        spans.append((value["start"], value["end"], labels[0]))
    return spans


def _label_studio(path: Path, records: list[tuple[int, dict]], tally: Tally, text_key: str | None) -> list[_Task]:
    tasks = []
    for number, task in records:
        row = str(number)
        if not isinstance(task, dict):
            raise DataError(f"{path}:{row}: a Label Studio task is a JSON object")
        annotations = task.get("annotations", task.get("completions")) or []
        kept = []
        for i, annotation in enumerate(annotations, 1):
            if annotation.get("was_cancelled") or annotation.get("skipped"):
                tally.add("cancelled (skipped) annotations left out", row)
                continue
            name = f"annotation {annotation.get('id', i)}"
            spans = _regions(annotation.get("result"), row, tally)
            when = str(annotation.get("updated_at") or annotation.get("created_at") or "")
            kept.append((name, spans, bool(annotation.get("ground_truth")), when))
        if not kept:
            what = "tasks with predictions only, left out" if task.get("predictions") else "tasks not annotated"
            tally.add(what if not annotations else "tasks whose annotations were all cancelled", row)
            continue
        regions = [r.get("value") or {} for a in annotations for r in a.get("result") or [] if isinstance(r, dict)]
        tasks.append(_Task(row, _text_of(task.get("data") or {}, text_key, row, path, regions), kept))
    return tasks


def _label_studio_min(path: Path, records: list[tuple[int, dict]], tally: Tally, text_key: str | None) -> list[_Task]:
    """JSON-MIN: one record per annotation (cancelled ones are not exported); grouped back into tasks by id."""
    label_keys = {
        k
        for _, r in records
        for k, v in r.items()
        if isinstance(v, list) and v and all(isinstance(x, dict) and "start" in x and "labels" in x for x in v)
    }
    by_task: dict = {}
    for number, record in records:
        row = str(number)
        task = by_task.setdefault(record.get("id", f"row {row}"), _Task(row, None, []))
        if record.get("annotation_id") is None:
            tally.add("tasks not annotated", row)
            continue
        results = [{"type": "labels", "value": v} for k in label_keys for v in record.get(k) or []]
        others = [k for k in record if k not in MIN_META and k not in label_keys and not isinstance(record[k], str)]
        for k in others:
            tally.add(f"{k!r} results ignored (not spans)", row)
        data = {k: v for k, v in record.items() if k not in MIN_META and k not in label_keys}
        regions = [r["value"] for r in results]
        task.text = task.text or _text_of(data, text_key, row, path, regions)
        when = str(record.get("updated_at") or record.get("created_at") or "")
        task.annotations.append((f"annotation {record['annotation_id']}", _regions(results, row, tally), False, when))
    return [t for t in by_task.values() if t.annotations]


def _prodigy(path: Path, records: list[tuple[int, dict]], tally: Tally) -> list[_Task]:
    """db-out records: one per answer; `reject` / `ignore` answers left out; accepts of one input (several
    annotators, `_annotator_id`) are that task's annotations."""
    by_input: dict = {}
    for number, record in records:
        row = str(number)
        answer = record.get("answer", "accept")
        if answer != "accept":
            tally.add(f"Prodigy answers '{answer}' left out", row)
            continue
        if "spans" not in record:
            raise DataError(f"{path}:{row}: a Prodigy record without 'spans' (keys: {', '.join(sorted(record))})")
        key = record.get("_input_hash", f"row {row}")
        task = by_input.setdefault(key, _Task(row, record.get("text"), []))
        spans = [(s["start"], s["end"], s["label"]) for s in record.get("spans") or []]
        name = str(record.get("_annotator_id") or record.get("_session_id") or f"answer {row}")
        task.annotations.append((name, spans, False, str(record.get("_timestamp", ""))))
    return list(by_input.values())


def _docbin(path: Path) -> list[Example]:
    """spaCy's binary training format: each Doc's text and entities."""
    try:
        from spacy.tokens import DocBin
        from spacy.vocab import Vocab
    except ImportError as err:
        raise DataError(f"{path}: a spaCy DocBin file; reading it needs spaCy: pip install 'nlpbatch[spacy]'") from err
    try:
        docs = list(DocBin().from_disk(path).get_docs(Vocab()))
    except (ValueError, OSError, KeyError) as err:
        raise DataError(f"{path}: not a readable spaCy DocBin file ({err})") from err
    return [
        Example(str(i), doc.text, [(e.start_char, e.end_char, e.label_) for e in doc.ents])
        for i, doc in enumerate(docs, 1)
    ]


def read_json_list(path: Path, text: str) -> list[tuple[int, dict]]:
    try:
        items = json.loads(text)
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if not items:
        raise DataError(f"{path}: an empty Label Studio export (no tasks)")
    return list(enumerate(items, 1))
