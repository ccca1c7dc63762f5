"""Annotated rows in the formats labelling tools import, so machine annotations can be reviewed there and the
corrections trained on (the span readers in `spans.py` read both back): spaCy / Prodigy span JSON Lines and
Label Studio tasks with predictions. Pure functions over output rows and their (start, end, label, score) spans."""

from __future__ import annotations

OUTPUT_FORMATS = ("parquet", "jsonl", "spacy", "label-studio", "delta")  # delta: annotate/delta.py
EXTENSIONS = {"parquet": "parquet", "jsonl": "jsonl", "spacy": "jsonl", "label-studio": "json", "delta": "parquet"}
SPAN_COLUMNS = ("entities",)  # what a row's spans were read from: not repeated among its other fields


def spacy_record(row: dict, spans: list[tuple], text_column: str) -> dict:
    """{"text", "spans": [{"start", "end", "label", "score"}], "meta": the row's other fields} (Prodigy's shape)."""
    meta = {k: v for k, v in row.items() if k != text_column and k not in SPAN_COLUMNS}
    return {
        "text": row[text_column],
        "spans": [{"start": s, "end": e, "label": label, "score": score} for s, e, label, score in spans],
        "meta": meta,
    }


def label_studio_task(row: dict, spans: list[tuple], text_column: str, model_version: str) -> dict:
    """A Label Studio task with one prediction: `data.text` (the labelling config's `$text`; the row's other
    fields beside it) and `labels` results from `label` to `text`, as the NER templates name them."""
    data = {"text": row[text_column], **{k: v for k, v in row.items() if k != text_column and k not in SPAN_COLUMNS}}
    result = [
        {
            "from_name": "label",
            "to_name": "text",
            "type": "labels",
            "value": {"start": s, "end": e, "text": row[text_column][s:e], "labels": [label]},
            **({"score": score} if score is not None else {}),
        }
        for s, e, label, score in spans
    ]
    scores = [score for *_, score in spans if score is not None]
    prediction = {"model_version": model_version, "result": result}
    if scores:
        prediction["score"] = min(scores)  # Label Studio sorts tasks by it: the least sure entity first
    return {"data": data, "predictions": [prediction]}


def row_of_label_studio(task: dict, text_column: str) -> dict:
    """An output row back from a Label Studio task this module wrote (for `show`)."""
    data = dict(task["data"])
    text = data.pop("text")
    results = [r for p in task.get("predictions") or [] for r in p.get("result") or []]
    entities = [
        {
            "label": r["value"]["labels"][0],
            "start": r["value"]["start"],
            "end": r["value"]["end"],
            "text": r["value"]["text"],
            "score": r.get("score"),
        }
        for r in results
    ]
    return {text_column: text, **data, "entities": entities}


def row_of_spacy(record: dict, text_column: str) -> dict:
    """An output row back from a spaCy / Prodigy record this module wrote (for `show`)."""
    text = record["text"]
    entities = [{**s, "text": text[s["start"] : s["end"]]} for s in record.get("spans") or []]
    return {text_column: text, **(record.get("meta") or {}), "entities": entities}
