"""`nlpbatch show OUTPUT`: a look at an annotated output. The first N published rows with their entities (NER) or
answers (QA) highlighted in the terminal, and with --html a self-contained page in the style of spaCy's displaCy.

Reads only what the manifest (`_SUCCESS.json`) publishes, so it shows exactly what a downstream reader gets.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import sys

from nlpbatch.config import ConfigError
from nlpbatch.tasks import get_task

# one colour per CoNLL type (displaCy's palette); any other label one of PALETTE, the same one in every run and page
COLOURS = {"PER": "#aa9cfc", "ORG": "#7aecec", "LOC": "#ff9561", "MISC": "#e4e7d2", "ANSWER": "#bfe1d9"}
ANSI = {"PER": "45", "ORG": "46", "LOC": "43", "MISC": "47", "ANSWER": "42"}
PALETTE = ["#feca74", "#c887fb", "#9cc9cc", "#ffeb80", "#ff8197", "#bfeeb7", "#e4e7d2", "#fd9b9b", "#c3ddf7", "#ddc0a0"]
ANSI_PALETTE = ["41", "42", "43", "44", "45", "46", "101", "102", "103", "104", "105", "106"]


def colour_of(label: str, ansi: bool = False) -> str:
    """A label's colour: displaCy's for the CoNLL types, else picked by a stable hash of its name."""
    import zlib

    known = ANSI if ansi else COLOURS
    palette = ANSI_PALETTE if ansi else PALETTE
    return known.get(label) or palette[zlib.crc32(label.encode("utf-8")) % len(palette)]


def read_rows(output: str, n: int, s3_endpoint: str | None = None) -> tuple[dict, list[dict]]:
    """(manifest, the first n annotated rows) of a published output."""
    import pyarrow.parquet as pq

    from nlpbatch.annotate.commit import MANIFEST, check_manifest, relative_file
    from nlpbatch.annotate.reader import iter_lines
    from nlpbatch.storage import filesystem_for, join, read_json

    filesystem, path = filesystem_for(output, s3_endpoint)
    manifest = read_json(filesystem, join(path, MANIFEST))
    if manifest is None:
        raise ConfigError(f"{output}: no {MANIFEST} (not a published annotate output, or its run has not finished)")
    check_manifest(output, manifest)
    rows: list[dict] = []
    if manifest.get("delta"):  # a Delta table: its current version, as any Delta reader sees it
        from deltalake import DeltaTable

        from nlpbatch.annotate.delta import storage_options

        found = manifest["delta"]
        table = DeltaTable(found["table"], storage_options=storage_options(found["table"], s3_endpoint))
        data = table.to_pyarrow_dataset()
        for column, value in (found.get("partition") or {}).items():  # nightly: this night's rows of the table
            import pyarrow.dataset as pads

            data = data.filter(pads.field(column) == value)
        rows = data.head(n).to_pylist()
    for file in [] if manifest.get("delta") else manifest["output_files"]:
        rel = relative_file(path, file)  # a manifest names files under its own output, or it is not followed
        if rel is None:
            raise ConfigError(f"{output}: {MANIFEST} names {file!r}, which is not a file of this output; not read")
        if not rel.startswith("data/") or len(rows) >= n:
            continue
        if rel.endswith(".parquet"):
            rows += pq.read_table(join(path, rel), filesystem=filesystem).slice(0, n - len(rows)).to_pylist()
        elif rel.endswith(".json"):  # Label Studio tasks: one JSON list a file
            with filesystem.open_input_stream(join(path, rel)) as fh:
                rows += json.loads(fh.read())[: n - len(rows)]
        else:  # split as the writer wrote it: on "\n" only (a U+2028 inside a text is not a line break)
            with filesystem.open_input_stream(join(path, rel)) as fh:
                for _, line in itertools.islice(iter_lines(fh), n - len(rows)):
                    rows.append(json.loads(line))
    text_column = manifest.get("config", {}).get("text_column", "text")
    fmt = manifest.get("config", {}).get("output_format")
    if fmt in ("spacy", "label-studio"):  # a labelling tool's records: back to output rows
        from nlpbatch.data.exports import row_of_label_studio, row_of_spacy

        convert = row_of_spacy if fmt == "spacy" else row_of_label_studio
        rows = [convert(row, text_column) for row in rows]
    if rows and text_column not in rows[0]:
        raise ConfigError(
            f"{output}: rows carry no {text_column!r} column to show; annotate with --keep-columns {text_column}"
        )
    return manifest, rows


def spans_of(row: dict, task: str) -> list[tuple[int, int, str, float | None]]:
    """(start, end, label, score) to highlight, in text order: what the task says its output row marks."""
    return get_task(task).spans(row)


def _pieces(text: str, spans):
    """The text cut into (piece, span or None), spans in order and not overlapping."""
    at = 0
    for start, end, label, score in sorted(spans):
        if start < at:
            continue  # an overlap cannot be drawn: keep the first span
        yield text[at:start], None
        yield text[start:end], (label, score)
        at = end
    yield text[at:], None


# control characters (ESC starts a terminal escape sequence) and bidirectional overrides (they reorder what is
# shown): the corpus is not trusted to drive the terminal
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(text: str) -> str:
    """Text for a terminal: control characters shown as escapes, not obeyed."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def terminal(text: str, spans, colour: bool) -> str:
    out = []
    for piece, span in _pieces(text, spans):
        piece = safe(piece)
        label = safe(span[0]) if span else None
        if span is None:
            out.append(piece)
        elif colour:
            code = colour_of(span[0], ansi=True)
            out.append(f"\x1b[30;{code}m{piece}\x1b[0m\x1b[1m[{label}]\x1b[0m")
        else:
            out.append(f"[{piece}]({label})")
    return "".join(out)


def print_rows(manifest: dict, rows: list[dict], colour: bool | None = None, stream=None) -> None:
    stream = stream or sys.stdout
    colour = stream.isatty() if colour is None else colour
    task, text_column = manifest["task"], manifest.get("config", {}).get("text_column", "text")
    pair_column = manifest.get("config", {}).get("text_pair_column")
    version = (manifest.get("provenance") or {}).get("model_version")
    by = f" by model {version}" if version else ""
    stream.write(f"{manifest['task']} output of run {manifest['run_id']}{by}: {manifest['rows_out']} rows")
    if manifest.get("rows_rejected"):
        reasons = "; ".join(f"{reason}: {n}" for reason, n in manifest.get("reject_reasons", {}).items())
        stream.write(f", {manifest['rows_rejected']} rejected (rejects/)" + (f": {reasons}" if reasons else ""))
    stream.write("\n\n")
    for row in rows:
        summary = get_task(task).summary(row)
        header = safe(
            f"{row['id']}"
            + (f"  Q: {row['question']}" if row.get("question") else "")
            + (f"  {summary}" if summary else "")
        )
        stream.write(f"\x1b[1m{header}\x1b[0m\n" if colour else f"{header}\n")
        stream.write(terminal(row[text_column] or "", spans_of(row, task), colour) + "\n")
        if row.get(pair_column):  # a sentence pair: its second text below the first
            stream.write("  + " + safe(row[pair_column]) + "\n")
        stream.write("\n")


def html_page(manifest: dict, rows: list[dict]) -> str:
    """A self-contained page (inline CSS, no scripts, no network): one block per document, marks per span."""
    task, text_column = manifest["task"], manifest.get("config", {}).get("text_column", "text")
    docs = []
    for row in rows:
        parts = []
        for piece, span in _pieces(row[text_column] or "", spans_of(row, task)):
            if span is None:
                parts.append(html.escape(piece))
                continue
            label, score = span
            title = f"{label} {score:.2f}" if isinstance(score, float) else label
            parts.append(
                f'<mark class="ent" style="background:{colour_of(label)}" '
                f'title="{html.escape(title)}">{html.escape(piece)}<span class="label">{html.escape(label)}</span>'
                "</mark>"
            )
        question = row.get("question")
        pair = row.get(manifest.get("config", {}).get("text_pair_column") or "")
        if pair:
            parts.append(f'<br><span class="pair">+ {html.escape(pair)}</span>')
        summary = get_task(task).summary(row)
        docs.append(
            f'<section class="doc" id="{html.escape(str(row["id"]))}"><h2>{html.escape(str(row["id"]))}</h2>'
            + (f'<p class="question">Q: {html.escape(question)}</p>' if question else "")
            + (f'<p class="question">{html.escape(summary)}</p>' if summary else "")
            + f'<div class="text">{"".join(parts)}</div></section>'
        )
    provenance = manifest.get("provenance", {})
    title = f"nlpbatch {html.escape(task)}: {html.escape(manifest['run_id'])}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 60em; color: #222; }}
header p {{ color: #666; margin: 0.2em 0; }}
.doc {{ border-top: 1px solid #ddd; padding: 0.6em 0; }}
.doc h2 {{ font-size: 0.9em; color: #888; margin: 0 0 0.4em; }}
.question {{ font-weight: bold; }}
.text {{ line-height: 2.4; white-space: pre-wrap; }}
mark.ent {{ padding: 0.25em 0.4em; margin: 0 0.15em; border-radius: 0.35em; line-height: 1; }}
mark.ent .label {{ font-size: 0.65em; font-weight: bold; text-transform: uppercase; margin-left: 0.5em;
                   vertical-align: middle; }}
</style></head>
<body><header><h1>nlpbatch {html.escape(task)}</h1>
<p>run {html.escape(manifest["run_id"])}, {manifest["rows_out"]} rows annotated, {manifest["rows_rejected"]} rejected;
showing {len(rows)}</p>
<p>model {html.escape(str(provenance.get("model_version", "")))} {
        html.escape(str(provenance.get("model_uri", provenance.get("model", ""))))
    }</p></header>
{"".join(docs)}
</body></html>
"""
