"""NER training data as labelling tools export it: JSON Lines with token and tag lists, or text with character spans
in any shape the tools write (`tools.py`: Label Studio JSON and JSON-MIN, doccano with or without relations, spaCy
span JSONL, `Doc.to_json()` and DocBin, Prodigy). Every example becomes (words, IOB2 tags), the shape the NER task
trains on.

Words are the text cut as the model's BERT-style tokenizer pre-tokenizes it: runs of characters that are neither
space nor punctuation (combining marks stay with their base), each punctuation mark alone, and each CJK ideograph
alone (the tokenizer's normalizer splits them), so a span on 北京 in 我在北京工作 is two words of its own and the
words annotate's tokenizer sees are the words trained on (checked against the tokenizer in the tests). Whitespace at
a span's edge is trimmed and counted. A span boundary inside a word is counted and reported with its row and text
(as spaCy's W030 does), then `expand`ed to the whole word, `contract`ed to the words inside it (dropped if none),
or, with `strict`, an error (as spaCy's strict alignment refuses it). Spans that overlap (nested regions, two
annotators merged) are resolved by `--overlaps`: `longest` keeps the longest, `first` the earliest, `error` stops;
each resolution is counted and named with its row. Identical spans are one.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import regex

from nlpbatch.data import DataError, read_rows, read_text
from nlpbatch.data.tools import POLICIES, SHAPES, Tally, detect, examples, read_json_list
from nlpbatch.progress import say

# BERT pre-tokenization (whitespace, then punctuation: Unicode P* and the ASCII symbols) after its normalizer's
# CJK handling (each ideograph a word of its own)
CJK = (
    "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\U0002f800-\U0002fa1f"
)
PUNCT = r"\p{P}!-/:-@\[-`{-~"
WORD = regex.compile(rf"[{CJK}]|[{PUNCT}]|[^\s{CJK}{PUNCT}]+")
# the words of CoNLL-style data: whitespace-delimited, each CJK ideograph apart (what annotate groups for models
# trained on such data: `word_unit` whitespace)
WHITESPACE_WORD = regex.compile(rf"[{CJK}]|[^\s{CJK}]+")
ALIGNMENTS = ("expand", "contract", "strict")


def words(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word of the text."""
    return [m.span() for m in WORD.finditer(text)]


FORMATS = ("auto", "conll", "tokens", *SHAPES)  # --data-format


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
    """(format, [(row, record)]): a JSON list (Label Studio), JSON Lines, a Parquet file or a spaCy DocBin, the
    format told by the records' keys unless `data_format` names it. Rows are 1-based lines (JSONL), task or record
    positions (JSON lists) or row numbers (Parquet)."""
    path = Path(path)
    if path.suffix.lower() == ".spacy":
        return "docbin", []
    text = None if path.suffix.lower() == ".parquet" else read_text(path)
    listed = text is not None and text.lstrip().startswith("[")
    records = read_json_list(path, text) if listed else read_rows(path, text)
    if not records:
        raise DataError(f"{path}: no records (empty file?)")
    if data_format not in ("auto", None):
        return data_format, records
    first = records[0][1]
    if not listed and isinstance(first, dict) and tokens_column in first:
        tokens = first[tokens_column]
        if not (isinstance(tokens, list) and tokens and isinstance(tokens[0], dict)):  # Prodigy's are dicts
            return "tokens", records
    kind = detect(path, records, listed)
    if kind is None:
        keys = sorted(first) if isinstance(first, dict) else type(first).__name__
        raise DataError(
            f"{path}:{records[0][0]}: cannot tell the format from the keys {keys}: expected "
            f"{tokens_column} + tags (--tokens-column/--tags-column), text + spans (spaCy/Prodigy), text + label "
            "(doccano), spaCy's Doc.to_json() or a Label Studio export; --data-format names it"
        )
    return kind, records


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def spans_to_tags(
    text: str, spans: list[tuple[int, int, str]], alignment: str = "expand", overlaps: str = "error"
) -> tuple[list[str], list[str], list[str]]:
    """(words, IOB2 tags, problems): each span tags the words it covers. Problems (said, never silent): whitespace
    trimmed from an edge, a boundary inside a word (resolved by `alignment`), overlapping spans resolved by
    `overlaps` (`error`: ValueError)."""
    bounds = words(text)
    starts = [a for a, _ in bounds]
    tags = ["O"] * len(bounds)
    owner: list[str | None] = [None] * len(bounds)
    problems = []
    placed = []
    for start, end, label in sorted(set(spans)):
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            raise ValueError(f"span {start}-{end} {label!r} lies outside the text ({len(text)} characters)")
        inner = _trimmed(text, start, end)
        if inner != (start, end):
            problems.append(f"whitespace trimmed: {label} {text[start:end]!r} ({start}-{end})")
            if alignment == "strict":
                raise ValueError(problems[-1] + " (--span-alignment strict refuses it, as spaCy's strict does)")
            start, end = inner
            if start == end:
                continue
        first = max(0, bisect.bisect_right(starts, start) - 1)
        touched = [i for i in range(first, len(bounds)) if bounds[i][0] < end and bounds[i][1] > start]
        inside = [i for i in touched if bounds[i][0] >= start and bounds[i][1] <= end]
        if touched != inside:
            problems.append(f"{label} {text[start:end]!r} ({start}-{end}) does not fall on word boundaries")
            if alignment == "strict":
                raise ValueError(problems[-1] + " (--span-alignment strict)")
        chosen = touched if alignment == "expand" else inside
        if chosen:
            placed.append((chosen, start, end, label))
    order = {"longest": lambda p: (-(p[2] - p[1]), p[1]), "first": lambda p: (p[1], -(p[2] - p[1]))}
    for chosen, start, end, label in sorted(placed, key=order.get(overlaps, order["first"])):
        name = f"{label} {text[start:end]!r}"
        taken = [owner[i] for i in chosen if owner[i] is not None]
        if taken:
            if overlaps == "error":
                raise ValueError(f"spans overlap: {name} and {taken[0]} (--overlaps longest|first resolves them)")
            problems.append(f"overlapping span left out: {name} (kept {taken[0]}, --overlaps {overlaps})")
            continue
        for n, i in enumerate(chosen):
            owner[i] = name
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
    annotations: str = "auto",
    overlaps: str = "longest",
    text_key: str | None = None,
) -> list[dict]:
    """Rows {"id", "tokens", "ner_tags"} (IOB2) of a JSONL / JSON / Parquet / DocBin file; what was used, skipped
    and resolved is said and kept in `REPORTS` (training puts it in metrics.json). Span files: `annotations` chooses
    among several annotations of a task, `overlaps` resolves overlapping spans, `text_key` names the text field.
    Token records: `tokens_column` (tokens) and `tags_column` (ner_tags, else tags), tags as strings or as ids
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
        REPORTS.append({"file": str(path), "format": "tokens", "examples": len(rows)})
        return rows
    if annotations not in POLICIES:
        raise DataError(f"--annotations {annotations!r}: expected one of {', '.join(POLICIES)}")
    tally = Tally()
    found = examples(kind, path, records, annotations, tally, text_key)
    for example in found:
        try:
            if not isinstance(example.text, str):
                raise ValueError("no text")
            tokens, tags, said = spans_to_tags(example.text, example.spans, alignment, overlaps)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise DataError(f"{path}:{example.row}: {err}") from err
        problems += [f"row {example.row}: {p}" for p in said]
        for p in said:
            tally.add(_kind_of(p, alignment, overlaps), example.row)
        if tokens:
            rows.append({"id": example.row, "tokens": tokens, "ner_tags": tags})
    if problems:
        say(f"{path}: {len(problems)} span(s) resolved, e.g. " + "; ".join(problems[:3]))
    for line in tally.lines():
        say(f"{path}: {line}")
    if not rows:
        raise DataError(f"{path}: no labelled records ({len(records)} read, none with text and annotations)")
    entities = sum(t.startswith("B-") for r in rows for t in r["ner_tags"])
    say(f"{path}: read as {kind} ({len(rows)} records, {entities} entities)")
    REPORTS.append(
        {
            "file": str(path),
            "format": kind,
            "examples": len(rows),
            "entities": entities,
            "counts": dict(tally.counts),
            "agreement": tally.agreement(),
        }
    )
    return rows


def _kind_of(problem: str, alignment: str, overlaps: str) -> str:
    """A span problem's line in the load summary."""
    if problem.startswith("whitespace"):
        return "spans with whitespace at an edge, trimmed"
    if problem.startswith("overlapping"):
        return f"overlapping or nested spans left out (--overlaps {overlaps})"
    what = {"expand": "widened to whole words", "contract": "narrowed to the words inside them"}[alignment]
    return f"spans off word boundaries, {what} (--span-alignment)"


REPORTS: list[dict] = []  # one per span file read, in order: what was used, skipped and resolved
