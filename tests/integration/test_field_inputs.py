"""Annotation over ordinary field layouts and files: an output next to (or around) its input, a user's files in the
output folder, Spark leftovers and symlinks in the corpus, single bad values in JSONL and Parquet, damaged files,
empty partitions, `show` over outputs that hold surprises. Each row is read once, each failure is a reject with a
reason or an error naming the file, and nothing the run does not own is touched."""

from __future__ import annotations

import gzip
import io
import json
import os
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.annotate.commit import MANIFEST
from nlpbatch.annotate.pipeline import annotate_texts, run_annotation
from nlpbatch.config import ConfigError, load_annotate_config

pytestmark = pytest.mark.integration


def _cfg(model, input_uri, output_uri, **kw):
    # this process's runner unless a test asks for Ray: what these tests check (inputs, ownership, what is published)
    # is the runners' shared code, and test_in_process.py checks both runners publish the same
    kw = {"max_length": 64, "stride": 16, "runner": "local", **kw}
    return load_annotate_config(task="ner", model=str(model), input=str(input_uri), output=str(output_uri), **kw)


def _published(out) -> tuple[dict, list[dict], list[dict]]:
    manifest = json.loads((out / MANIFEST).read_text())
    rows = {"data": [], "rejects": []}
    for rel in manifest["output_files"]:
        path = out / rel
        if rel.endswith(".parquet"):
            rows[rel.split("/")[0]] += pq.read_table(path).to_pylist()
        else:
            rows[rel.split("/")[0]] += [json.loads(line) for line in path.read_bytes().split(b"\n") if line]
    return manifest, rows["data"], rows["rejects"]


def _jsonl(path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def test_input_and_output_may_not_overlap_and_user_files_stay(tiny_ner_model, tmp_path):
    corpus = tmp_path / "corpus"
    _jsonl(corpus / "data" / "in.jsonl", [{"id": f"d{i}", "text": f"Angela Merkel in Paris {i}"} for i in range(20)])
    before = (corpus / "data" / "in.jsonl").read_bytes()
    with pytest.raises(ConfigError, match=r"--output .*corpus and --input .*overlap .*outside the input"):
        run_annotation(_cfg(tiny_ner_model, corpus / "data", corpus))  # the output around its input
    with pytest.raises(ConfigError, match="overlap"):
        run_annotation(_cfg(tiny_ner_model, corpus, corpus / "annotated"))  # the output inside its input
    with pytest.raises(ConfigError, match="overlap"):
        run_annotation(_cfg(tiny_ner_model, corpus / "data" / "*.jsonl", corpus))  # a glob's folder counts
    assert (corpus / "data" / "in.jsonl").read_bytes() == before and not (corpus / MANIFEST).exists()

    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "notes.csv").write_text("the user's notes")
    first = run_annotation(_cfg(tiny_ner_model, corpus / "data", out))
    second = run_annotation(_cfg(tiny_ner_model, str(corpus / "data") + "/", out))  # `in/` and `in`: one input
    assert (out / "data" / "notes.csv").read_text() == "the user's notes"
    assert second["foreign_files"] == ["data/notes.csv"] and second["replaces"]["run_id"] == first["run_id"]
    _, rows, _ = _published(out)
    assert sorted(r["id"] for r in rows) == sorted(f"d{i}" for i in range(20))


@pytest.mark.parametrize("runner", ["ray", "local"])
def test_field_corpus_every_row_once_and_bad_values_are_rejects(ray_cluster, tiny_ner_model, tmp_path, runner):
    """Hostile field layouts and values, on a cluster and in this process (the local runner reads for itself)."""
    corpus = tmp_path / "j"
    good = [{"id": f"v{i}", "text": f"Zoë Müller met José in Zürich {i}.", "extra": i} for i in range(30)]
    _jsonl(
        corpus / "a.jsonl",
        [
            {"id": "first", "body": "a first record without the text key"},
            {"id": "ok", "text": "Angela Merkel visited Paris.", "extra": "x"},
            '{"id": "lone", "text": "a lone surrogate \\ud800 in the text"}',
            '{"id": "keptbad", "text": "fine text", "extra": "\\udc00"}',
        ],
    )
    _jsonl(corpus / "v" / "b.jsonl", good)
    _jsonl(corpus / "_temporary" / "0" / "b.jsonl", good)  # Spark's leftover attempt: same rows again
    _jsonl(corpus / ".staging" / "b.jsonl", good)
    os.symlink(corpus / "v", corpus / "latest")  # latest -> v
    os.symlink(corpus, corpus / "v" / "loop")  # a symlink loop
    out = tmp_path / "out"
    cfg = _cfg(tiny_ner_model, corpus, out, keep_columns="text,extra", output_format="jsonl", runner=runner)
    assert run_annotation(cfg)["runner"] == runner
    manifest, rows, rejects = _published(out)
    assert manifest["rows_in"] == 34 == len(rows) + len(rejects)
    seen = Counter((r["source"], r["line"]) for r in rows + rejects)
    assert max(seen.values()) == 1 and len(seen) == 34
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert reasons == {
        "first": "text is null",
        "lone": "text is not valid Unicode (a lone surrogate at character 17)",
        "keptbad": "column 'extra' is not valid Unicode (a lone surrogate at character 0)",
    }

    # Parquet: invalid UTF-8 in one value, dictionary-encoded and string_view text columns
    parquet = tmp_path / "p"
    parquet.mkdir()
    broken = pa.array([b"Angela Merkel", b"caf\xe9 au lait", b"Paris"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["b0", "b1", "b2"], "text": broken}), parquet / "bad.parquet")
    categorical = pa.array(["Berlin", "Paris", "Berlin"]).dictionary_encode()
    pq.write_table(pa.table({"id": ["d0", "d1", "d2"], "text": categorical}), parquet / "dict.parquet")
    view = pa.array(["Rome", "Madrid"], pa.string_view())
    pq.write_table(pa.table({"id": ["s0", "s1"], "text": view}), parquet / "view.parquet")
    manifest = run_annotation(_cfg(tiny_ner_model, parquet, tmp_path / "pout", runner=runner))
    manifest, rows, rejects = _published(tmp_path / "pout")
    assert manifest["rows_in"] == 8 and sorted(r["id"] for r in rows) == ["b0", "b2", "d0", "d1", "d2", "s0", "s1"]
    assert [(r["id"], r["reason"]) for r in rejects] == [
        ("b1", "column 'text' is not valid UTF-8 (invalid continuation byte at byte 3)")
    ]
    assert {r["text"] for r in rows if r["id"].startswith("d")} == {"Berlin", "Paris"}


def test_damaged_and_misnamed_inputs_are_named(tmp_path, tiny_ner_model):
    data = gzip.compress(b"".join(json.dumps({"id": i, "text": "x" * 50}).encode() + b"\n" for i in range(2000)))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"cut.jsonl.gz: cannot be read .*fix or remove the file"):
        run_annotation(_cfg(tiny_ner_model, tmp_path / "in", tmp_path / "out"))
    _jsonl(tmp_path / "none" / "a.jsonl", [{"id": 1, "body": "x"}, {"id": 2, "body": "y"}])
    with pytest.raises(ConfigError, match=r"none of its first 2 records has a 'text' key .*set --text-column"):
        run_annotation(_cfg(tiny_ner_model, tmp_path / "none", tmp_path / "out"))


def test_nightly_complete_empty_partition_is_not_a_failure(tmp_path, tiny_ner_model):
    from nlpbatch.nightly import run_nightly

    partition = tmp_path / "corpus" / "dt=2026-11-01"
    partition.mkdir(parents=True)
    (partition / "_SUCCESS").write_text("")  # upstream finished, and wrote no rows that day
    base = _cfg(tiny_ner_model, tmp_path / "corpus", tmp_path / "out")
    summary = run_nightly(base, require_input_marker=True)
    assert summary["empty"] == ["2026-11-01"] and not summary["failed"]


def test_show_reads_only_its_outputs_rows_as_written(tiny_ner_model, tmp_path):
    from nlpbatch.show import print_rows, read_rows

    out = tmp_path / "data" / "annotated"  # an output under a /data/ mount
    texts = [
        "Angela Merkel\u2028visited Paris.",  # a line separator inside a text
        "Evil \x1b[2J\x1b]0;pwned\x07 terminal escapes and \u202e reversed",
        None,  # a reject
    ]
    _jsonl(tmp_path / "in.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(texts)])
    run_annotation(_cfg(tiny_ner_model, tmp_path / "in.jsonl", out, output_format="jsonl"))
    manifest, rows = read_rows(str(out), 10)
    assert [r["id"] for r in rows] == ["t0", "t1"] and rows[0]["text"] == texts[0]
    shown = io.StringIO()
    print_rows(manifest, rows, colour=False, stream=shown)
    assert "\x1b" not in shown.getvalue() and "\\x1b[2J" in shown.getvalue() and "\\u202e" in shown.getvalue()


def test_a_large_call_is_tokenized_in_bounded_slices(tiny_ner_model, monkeypatch):
    from nlpbatch.annotate import stages

    texts = [" ".join(f"Angela Merkel met Macron in Paris on day {i}." for i in range(n)) for n in (1, 40, 3, 90, 7)]
    cfg = load_annotate_config(task="ner", model=str(tiny_ner_model), input="-", output="-", max_length=64, stride=16)
    whole = annotate_texts(cfg, texts)
    seen = []
    real = stages.tokenize_slice
    monkeypatch.setattr(stages, "CALL_CHARS", 2000)
    monkeypatch.setattr(
        stages, "tokenize_slice", lambda batch, *a, **k: seen.append(batch.num_rows) or real(batch, *a, **k)
    )
    assert annotate_texts(cfg, texts) == whole
    assert len(seen) >= 3 and sum(seen) == len(texts)
