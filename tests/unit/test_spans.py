"""NER data as labelling tools export it: the same CoNLL sentences written as token/tag JSONL, spaCy/Prodigy spans,
doccano spans and a Label Studio export read back as the CoNLL file's own words and tags; spans off word boundaries
are counted and expanded, contracted or refused; overlaps and broken records name their row."""

from __future__ import annotations

import json
import re

import pytest

from nlpbatch.data import DataError
from nlpbatch.data.conll import parse_conll
from nlpbatch.tasks.ner import load_split

WORDLIKE = re.compile(r"\w+|[^\w\s]")


def _sentences(data_dir, n=200):
    """CoNLL sentences whose tokens are words as the span reader cuts text (so both sides can be compared)."""
    rows = [
        r
        for r in parse_conll(data_dir / "conll2003" / "validation.txt")
        if all(WORDLIKE.fullmatch(t) for t in r["tokens"])
    ]
    return rows[:n]


def _text_and_spans(row):
    starts, at = [], 0
    for token in row["tokens"]:
        starts.append(at)
        at += len(token) + 1
    spans, open_ = [], None
    for i, tag in enumerate([*row["ner_tags"], "O"]):
        if open_ and not tag.startswith("I-"):
            spans.append((starts[open_[0]], starts[i - 1] + len(row["tokens"][i - 1]), open_[1]))
            open_ = None
        if tag.startswith("B-"):
            open_ = (i, tag[2:])
    return " ".join(row["tokens"]), spans


def _write(tmp_path, name, rows, kind):
    records = []
    for row in rows:
        text, spans = _text_and_spans(row)
        if kind == "spacy":
            records.append({"text": text, "spans": [{"start": s, "end": e, "label": t} for s, e, t in spans]})
        elif kind == "doccano":
            records.append({"text": text, "label": [[s, e, t] for s, e, t in spans]})
        elif kind == "tokens":
            records.append({"tokens": row["tokens"], "ner_tags": row["ner_tags"]})
        elif kind == "ids":
            names = sorted({t for r in rows for t in r["ner_tags"]})
            records.append(
                {"tokens": row["tokens"], "tags": [names.index(t) for t in row["ner_tags"]], "labels": names}
            )
        else:  # Label Studio's JSON export
            result = [
                {"value": {"start": s, "end": e, "text": text[s:e], "labels": [t]}, "type": "labels"}
                for s, e, t in spans
            ]
            records.append({"id": len(records), "data": {"text": text}, "annotations": [{"result": result}]})
    path = tmp_path / name
    if kind == "label-studio":
        records.append({"id": -1, "data": {"text": "not labelled yet"}, "annotations": []})
        path.write_text(json.dumps(records))
    else:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("spacy", "a.jsonl"),
        ("doccano", "b.jsonl"),
        ("tokens", "c.jsonl"),
        ("ids", "d.jsonl"),
        ("label-studio", "e.json"),
    ],
)
def test_every_export_reads_back_as_the_conll_sentences(kind, name, data_dir, tmp_path, capsys):
    rows = _sentences(data_dir)
    ds = load_split(str(_write(tmp_path, name, rows, kind)), "train")
    names = ds.features["ner_tags"].feature.names
    assert ds["tokens"] == [r["tokens"] for r in rows]
    assert [[names[t] for t in tags] for tags in ds["ner_tags"]] == [r["ner_tags"] for r in rows]
    assert sum(t != "O" for r in rows for t in r["ner_tags"]) > 300  # not vacuous
    said = capsys.readouterr().err
    assert f"read as {'tokens' if kind == 'ids' else kind}" in said
    if kind == "label-studio":
        assert "tasks not annotated: 1 (row 201)" in said


def test_spans_off_word_boundaries_are_counted_and_aligned(tmp_path, capsys):
    record = {
        "text": "Angela Merkel visited Parisians.",
        "spans": [{"start": 1, "end": 13, "label": "PER"}, {"start": 22, "end": 27, "label": "LOC"}],
    }
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(record) + "\n")

    def tags(alignment):
        ds = load_split(str(path), "train", span_alignment=alignment)
        names = ds.features["ner_tags"].feature.names
        return [names[t] for t in ds["ner_tags"][0]]

    assert tags("expand") == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert "spans off word boundaries, widened to whole words (--span-alignment): 2 (row 1)" in capsys.readouterr().err
    assert tags("contract") == ["O", "B-PER", "O", "O", "O"]  # 'Paris' inside 'Parisians': no whole word left
    with pytest.raises(DataError, match=r"s.jsonl:1: PER 'ngela Merkel' \(1-13\) does not fall on word boundaries"):
        tags("strict")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            {
                "text": "Angela Merkel",
                "spans": [{"start": 0, "end": 13, "label": "PER"}, {"start": 7, "end": 13, "label": "ORG"}],
            },
            ":1: spans overlap: ORG 'Merkel' and PER 'Angela Merkel' (--overlaps longest|first resolves them)",
        ),
        ({"text": "Paris", "spans": [{"start": 0, "end": 9, "label": "LOC"}]}, ":1: span 0-9 'LOC' lies outside"),
        ({"tokens": ["a", "b"], "ner_tags": ["O"]}, ":1: 'tokens' and 'ner_tags' must be lists of one length"),
        ({"tokens": ["a"], "ner_tags": [3]}, ":1: integer tags need their names: a 'labels' list or --labels"),
        ({"tokens": ["a"], "ner_tags": [3], "labels": ["O", "B-X"]}, ":1: tag ids [3] do not all name one of"),
        ({"tokens": ["a", "b"], "ner_tags": ["B-PER", "X-PER"]}, ":1: token 1: tag 'B-PER' in an IO file"),
        ({"tokens": ["a", "b", "c"], "ner_tags": ["S-PER", "B-PER", "O"]}, ":1: token 3: BIOES entity"),
        ({"words": ["a"]}, ":1: cannot tell the format from the keys ['words']"),
    ],
)
def test_broken_records_name_their_row(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(DataError, match=re.escape(message)):
        load_split(str(path), "train", overlaps="error")


def _classlabel_dataset(rows, tokens="tokens", tags="ner_tags"):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    names = ["O"] + sorted({t for r in rows for t in r["ner_tags"]} - {"O"})
    features = Features({tokens: Sequence(Value("string")), tags: Sequence(ClassLabel(names=names))})
    columns = {tokens: [r["tokens"] for r in rows], tags: [[names.index(t) for t in r["ner_tags"]] for r in rows]}
    return Dataset.from_dict(columns, features=features)


@pytest.mark.parametrize("kind", ["parquet-strings", "parquet-classlabel", "hub-folder", "glob", "forced-format"])
def test_table_and_hub_shaped_data_read_back_as_the_conll_sentences(kind, data_dir, tmp_path):
    """Parquet with string tags under other column names, Parquet written by `datasets` (ClassLabel ids, names in
    the file's metadata), a folder laid out as a hub dataset (read by `datasets.load_dataset`, the hub's code path),
    a glob over two files, and JSON Lines under a .txt name read with --data-format."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _sentences(data_dir)
    options = {}
    if kind == "parquet-strings":
        source = tmp_path / "train.parquet"
        words, tags = [r["tokens"] for r in rows], [r["ner_tags"] for r in rows]
        pq.write_table(pa.table({"words": words, "iob": tags}), source)
        options = {"tokens_column": "words", "tags_column": "iob"}
    elif kind == "parquet-classlabel":
        source = tmp_path / "train.parquet"
        _classlabel_dataset(rows).to_parquet(str(source))
    elif kind == "hub-folder":
        source = tmp_path / "repo"
        (source / "data").mkdir(parents=True)
        _classlabel_dataset(rows, "words", "ner").to_parquet(str(source / "data" / "train-00000-of-00001.parquet"))
        _classlabel_dataset(rows[:5], "words", "ner").to_parquet(str(source / "data" / "test-00000-of-00001.parquet"))
        options = {"tokens_column": "words", "tags_column": "ner"}
    elif kind == "glob":
        _write(tmp_path, "part-1.jsonl", rows[:120], "tokens")
        _write(tmp_path, "part-2.jsonl", rows[120:], "spacy")
        source = tmp_path / "part-*.jsonl"
    else:
        source = _write(tmp_path, "export.txt", rows, "doccano")
        options = {"data_format": "doccano"}
    ds = load_split(str(source), "train", **options)
    names = ds.features["ner_tags"].feature.names
    assert ds["tokens"] == [r["tokens"] for r in rows]
    assert [[names[t] for t in tags] for tags in ds["ner_tags"]] == [r["ner_tags"] for r in rows]


def test_a_hub_dataset_without_the_columns_names_them_and_the_flags(data_dir, tmp_path):
    source = tmp_path / "repo"
    source.mkdir()
    _classlabel_dataset(_sentences(data_dir, 10), "words", "ner").to_parquet(str(source / "train.parquet"))
    with pytest.raises(DataError, match=r"no column 'tokens', 'ner_tags'.*columns: words, ner.*--tokens-column"):
        load_split(str(source), "train", tags_column="ner_tags")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", b"", "no records (empty file?)"),
        ("empty.conll", b"\n\n", "no sentences found (empty file?)"),
        ("empty.json", b"[]", "an empty Label Studio export (no tasks)"),
        ("latin1.conll", "Paris\tB-LOC\n\nK\xf6ln\tB-LOC\n".encode("latin-1"), ":3: not UTF-8 (byte 0xf6)"),
        ("latin1.jsonl", '{"text": "K\xf6ln", "spans": []}\n'.encode("latin-1"), ":1: not UTF-8"),
        ("unlabelled.json", b'[{"data": {"text": "a b"}, "annotations": []}]', "no labelled records (1 read"),
        ("broken.parquet", b"PAR1 not really", "not a readable Parquet file"),
        ("mixed.conll", b"a\tB-PER\nb\tE-PER\n\nc\tB-LOC\nd\tO\n", ":5: BIOES entity B-LOC not closed before O"),
    ],
)
def test_hostile_files_are_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(message)):
        load_split(str(path), "train")


def test_spacy_and_label_studio_exports_read_back_as_their_spans(data_dir, tmp_path):
    """What `annotate ner --output-format spacy|label-studio` writes for a row reads back, through the training
    readers, as exactly the row's entities (where they fall on words)."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    from nlpbatch.annotate.sink import write_table

    rows = _sentences(data_dir, 100)
    table_rows = []
    for i, row in enumerate(rows):
        text, spans = _text_and_spans(row)
        entities = [{"label": t, "start": s, "end": e, "text": text[s:e], "score": 0.5} for s, e, t in spans]
        table_rows.append({"id": f"d{i}", "text": text, "entities": entities, "model": "m"})
    table = pa.Table.from_pylist(table_rows)
    for fmt, name in (("spacy", "out.jsonl"), ("label-studio", "out.json")):
        write_table(table, pafs.LocalFileSystem(), str(tmp_path / name), fmt, "text", "ner")
        if fmt == "label-studio":  # a reviewer accepts the predictions
            tasks = json.loads((tmp_path / name).read_text())
            assert tasks[0]["data"]["id"] == "d0" and tasks[0]["predictions"][0]["model_version"] == "m"
            for task in tasks:
                task["annotations"] = [{"result": task.pop("predictions")[0]["result"]}]
            (tmp_path / name).write_text(json.dumps(tasks))
        ds = load_split(str(tmp_path / name), "train")
        names = ds.features["ner_tags"].feature.names
        assert [[names[t] for t in tags] for tags in ds["ner_tags"]] == [r["ner_tags"] for r in rows], fmt
