"""NER training data as labelling tools export it: JSON Lines with token and tag lists, or with a text and character
spans (spaCy / Prodigy `{"text", "spans": [{"start", "end", "label"}]}`, doccano `{"text", "label": [[start, end,
"LABEL"]]}`), and Label Studio's JSON export (a list of tasks, `annotations[].result[].value = {start, end,
labels}`). Every record becomes (words, IOB2 tags), the shape the NER task trains on.

Words are the text cut as BERT-style tokenizers pre-tokenize it (runs of letters and digits, and each other
non-space character alone), so a span that ends before a comma ends on a word boundary. A span boundary inside a
word is counted and reported with its row and text (as spaCy's W030 does), then `expand`ed to the whole word,
`contract`ed to the words inside it (dropped if none), or, with `strict`, an error. Overlapping spans make the
record an error naming the row: one token has one tag.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from nlpbatch.data import DataError, read_rows, read_text
from nlpbatch.progress import say

WORD = re.compile(r"\w+|[^\w\s]")
ALIGNMENTS = ("expand", "contract", "strict")


def words(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word of the text."""
    return [m.span() for m in WORD.finditer(text)]


FORMATS = ("auto", "conll", "tokens", "spacy", "doccano", "label-studio")  # --data-format


def file_labels(path: Path, column: str) -> list[str] | None:
    """The tag names a Parquet file written by `datasets` keeps for an integer tag column (its ClassLabel)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    try:
        feature = json.loads(meta[b"huggingface"])["info"]["features"][column]
        return list(feature["feature"]["names"])
    except (KeyError, TypeError, ValueError):
        return None


def read_records(
    path: str | Path, data_format: str = "auto", tokens_column: str = "tokens"
) -> tuple[str, list[tuple[int, dict]]]:
    """(format, [(row, record)]): a Label Studio export (one JSON list), JSON Lines or a Parquet file, the format
    told by the first record's keys unless `data_format` names it. Rows are 1-based lines (JSONL), task positions
    (Label Studio) or row numbers (Parquet)."""
    path = Path(path)
    text = None if path.suffix.lower() == ".parquet" else read_text(path)
    if text is not None and text.lstrip().startswith("["):
        try:
            tasks = json.loads(text)
        except ValueError as err:
            raise DataError(f"{path}: not valid JSON ({err})") from err
        if not tasks:
            raise DataError(f"{path}: an empty Label Studio export (no tasks)")
        return "label-studio", list(enumerate(tasks, 1))
    records = read_rows(path, text)
    if not records:
        raise DataError(f"{path}: no records (empty file?)")
    if data_format not in ("auto", None):
        return data_format, records
    first = records[0][1]
    if tokens_column in first:
        kind = "tokens"
    elif "spans" in first or "entities" in first:
        kind = "spacy"
    elif "label" in first or "labels" in first:
        kind = "doccano"
    else:
        raise DataError(
            f"{path}:{records[0][0]}: cannot tell the format from the keys {sorted(first)}: expected "
            f"{tokens_column} + tags (--tokens-column/--tags-column), text + spans (spaCy/Prodigy), text + label "
            "(doccano) or a Label Studio export; --data-format names it"
        )
    return kind, records


def _spans(kind: str, record: dict) -> tuple[str, list[tuple[int, int, str]]]:
    """(text, [(start, end, label)]) of one span record."""
    if kind == "label-studio":
        text = (record.get("data") or {}).get("text")
        results = [r for a in record.get("annotations") or [] for r in a.get("result") or []]
        found = [(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in results if "value" in r]
        return text, found
    text = record.get("text")
    if kind == "spacy":
        found = [(s["start"], s["end"], s["label"]) for s in record.get("spans", record.get("entities")) or []]
    else:
        found = [(s[0], s[1], s[2]) for s in record.get("label", record.get("labels")) or []]
    return text, found


def spans_to_tags(
    text: str, spans: list[tuple[int, int, str]], alignment: str = "expand"
) -> tuple[list[str], list[str], list[str]]:
    """(words, IOB2 tags, problems): each span tags the words it covers. A boundary inside a word is a problem,
    resolved by `alignment`; overlapping spans raise ValueError."""
    bounds = words(text)
    tags = ["O"] * len(bounds)
    owner = [None] * len(bounds)
    problems = []
    for start, end, label in sorted(spans):
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            raise ValueError(f"span {start}-{end} {label!r} lies outside the text ({len(text)} characters)")
        touched = [i for i, (a, b) in enumerate(bounds) if a < end and b > start]
        inside = [i for i in touched if bounds[i][0] >= start and bounds[i][1] <= end]
        if touched != inside:
            problems.append(f"{label} {text[start:end]!r} ({start}-{end}) does not fall on word boundaries")
            if alignment == "strict":
                raise ValueError(problems[-1] + " (--span-alignment strict)")
        chosen = touched if alignment == "expand" else inside
        for n, i in enumerate(chosen):
            if owner[i] is not None:
                raise ValueError(f"spans overlap: {label} {text[start:end]!r} and {owner[i]}")
            owner[i] = f"{label} {text[start:end]!r}"
            tags[i] = ("B-" if n == 0 else "I-") + label
    return [text[a:b] for a, b in bounds], tags, problems


def load_records(
    path: str | Path,
    alignment: str = "expand",
    scheme: str = "auto",
    data_format: str = "auto",
    tokens_column: str | None = None,
    tags_column: str | None = None,
    labels: list[str] | None = None,
) -> list[dict]:
    """Rows {"id", "tokens", "ner_tags"} (IOB2) of a JSONL / Label Studio / Parquet file; span problems counted and
    said. Token records: `tokens_column` (tokens) and `tags_column` (ner_tags, else tags), tags as strings or as ids
    named by the record's `labels`, the file's ClassLabel (Parquet written by `datasets`) or `labels`; `scheme`:
    their tag scheme (auto: detected)."""
    from nlpbatch.data.schemes import SchemeError, sentences_to_iob2

    path = Path(path)
    tokens_column = tokens_column or "tokens"
    kind, records = read_records(path, data_format, tokens_column)
    rows, problems = [], []
    if kind == "tokens":
        tags_column = tags_column or ("ner_tags" if "ner_tags" in records[0][1] else "tags")
        names = (file_labels(path, tags_column) if path.suffix.lower() == ".parquet" else None) or labels
        sequences = []
        for number, record in records:
            tokens, tags = record.get(tokens_column), record.get(tags_column)
            if not isinstance(tokens, list) or not isinstance(tags, list) or len(tags) != len(tokens):
                raise DataError(
                    f"{path}:{number}: {tokens_column!r} and {tags_column!r} must be lists of one length "
                    f"(keys: {sorted(record)}; --tokens-column/--tags-column name others)"
                )
            if any(isinstance(t, int) for t in tags):  # ids: their names from the record's (or file's) label list
                ids = record.get("labels") or names
                if not ids:
                    raise DataError(f"{path}:{number}: integer tags need their names: a 'labels' list or --labels")
                if not all(isinstance(t, int) and 0 <= t < len(ids) for t in tags):
                    raise DataError(f"{path}:{number}: tag ids {tags} do not all name one of the {len(ids)} labels")
                tags = [ids[t] for t in tags]
            sequences.append((number, [str(w) for w in tokens], [str(t) for t in tags]))
        try:
            scheme, converted = sentences_to_iob2([t for _, _, t in sequences], scheme)
        except SchemeError as err:
            raise DataError(f"{path}:{sequences[err.sentence][0]}: token {err.index + 1}: {err}") from err
        rows = [
            {"id": str(number), "tokens": tokens, "ner_tags": tags}
            for (number, tokens, _), tags in zip(sequences, converted)
        ]
        say(f"{path}: read as tokens ({len(rows)} records, {scheme.upper()} tags)")
        return rows
    unlabelled = []
    for number, record in records:
        if kind == "label-studio" and not record.get("annotations"):
            unlabelled.append(number)  # a task nobody labelled yet: not an all-O example
            continue
        try:
            text, spans = _spans(kind, record)
            if not isinstance(text, str):
                raise ValueError("no text")
            tokens, tags, found = spans_to_tags(text, spans, alignment)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise DataError(f"{path}:{number}: {err}") from err
        problems += [f"row {number}: {p}" for p in found]
        if tokens:
            rows.append({"id": str(number), "tokens": tokens, "ner_tags": tags})
    if problems:
        what = {"expand": "widened to whole words", "contract": "narrowed to the words inside them"}[alignment]
        say(
            f"{path}: {len(problems)} span(s) off word boundaries, {what} (--span-alignment): "
            + "; ".join(problems[:3])
        )
    if unlabelled:
        say(f"{path}: skipped {len(unlabelled)} task(s) without annotations (rows {unlabelled[:5]})")
    if not rows:
        raise DataError(f"{path}: no labelled records ({len(records)} read, none with text and annotations)")
    say(f"{path}: read as {kind} ({len(rows)} records)")
    return rows
