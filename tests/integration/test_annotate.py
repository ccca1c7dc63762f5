"""Corpus annotation on real Ray Data and a real S3 server: equality with single-process prediction and the
transformers pipeline, unicode offsets, long documents, rejects, manifest, reruns, fail-fast errors."""

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.annotate.pipeline import annotate_texts, run_annotation
from nlpbatch.config import ConfigError, load_annotate_config
from nlpbatch.storage import StorageError

pytestmark = pytest.mark.integration

SHORT = ["Angela Merkel met Emmanuel Macron in Paris on Monday.", "EU rejects German call to boycott British lamb."]
UNICODE = [
    "Zoë Müller arbeitet bei Siemens in München 🚀 und 東京 mit José Álvarez.",
    "Ça va? 🇫🇷 Françoise Lefèvre (née Dubois) — Société Générale, 北京 & Zürich.",
]
LONG = [" ".join(f"Sentence {i}: Angela Merkel visited Siemens in München with Zoë." for i in range(80))]
BAD = [{"id": "n1", "text": None}, {"id": "e1", "text": "   "}, {"id": "i1", "text": 7}]


def _rows(texts, prefix="d"):
    return [{"id": f"{prefix}{i}", "text": t} for i, t in enumerate(texts)]


def _read_rows(fs, path, fmt):
    if fmt == "parquet":
        return pq.read_table(path, filesystem=fs).to_pylist()
    with fs.open_input_stream(path) as fh:
        return [json.loads(line) for line in fh.read().decode().splitlines()]


def _output(manifest, kind="data"):
    from nlpbatch.storage import filesystem_for

    fs, out = filesystem_for(manifest["config"]["output"], manifest["config"]["s3_endpoint"])
    fmt = manifest["config"]["output_format"]
    return [r for f in manifest["output_files"] if f.startswith(f"{kind}/") for r in _read_rows(fs, f"{out}/{f}", fmt)]


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_ner_spans_equal_single_process_and_pipeline(ray_cluster, tiny_ner_model, tmp_path, layout):
    texts = SHORT + UNICODE + LONG
    docs = _rows(texts)
    pq.write_table(pa.Table.from_pylist(docs + BAD[:2]), tmp_path / "corpus.parquet")  # parquet: text is typed
    cfg = load_annotate_config(
        task="ner",
        model=str(tiny_ner_model),
        input=str(tmp_path / "corpus.parquet"),
        output=str(tmp_path / "out"),
        max_length=64,
        stride=16,
        batch_tokens=512,
        layout=layout,
        aggregation="simple",  # the transformers pipeline's simple is the oracle below
        batch_rows=2,  # several blocks, so both actors of the pool take part
        max_actors=2,
    )
    manifest = run_annotation(cfg)
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_rejected"]) == (7, 5, 2)
    got = {r["id"]: r["entities"] for r in _output(manifest)}
    reference = annotate_texts(cfg, texts)
    assert all(got[f"d{i}"] == ref["entities"] for i, ref in enumerate(reference)), "Ray Data path != single process"
    n_entities = sum(len(e) for e in got.values())
    assert n_entities > 20  # the random tiny model tags plenty: the comparisons above are not vacuous
    for i, text in enumerate(texts):
        spans = got[f"d{i}"]
        assert all(text[e["start"] : e["end"]] == e["text"] for e in spans)  # character offsets, always
        assert all(a["end"] <= b["start"] for a, b in zip(spans, spans[1:]))  # no duplicates or overlaps
    rejects = {r["id"]: r["reason"] for r in _output(manifest, "rejects")}
    assert rejects == {"n1": "text is null", "e1": "text is empty"}
    row = _output(manifest)[0]
    assert row["model_sha256"] == manifest["provenance"]["model_sha256"] and row["run_id"] == manifest["run_id"]

    # the transformers pipeline ("simple"), on texts that fit one window, is an independent oracle
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(tiny_ner_model), aggregation_strategy="simple")
    for i, text in enumerate(SHORT + UNICODE):
        theirs = [(e["entity_group"], e["start"], e["end"], round(float(e["score"]), 4)) for e in tagger(text)]
        ours = [(e["label"], e["start"], e["end"], round(e["score"], 4)) for e in got[f"d{i}"]]
        assert ours == theirs, text


def test_long_document_windows_merge_without_cuts(tiny_ner_model):
    cfg = load_annotate_config(task="ner", model=str(tiny_ner_model), input="-", output="-", max_length=48, stride=16)
    [row] = annotate_texts(cfg, LONG)
    assert row["n_tokens"] > 3 * 48  # several windows
    spans = row["entities"]
    assert spans and all(a["end"] <= b["start"] for a, b in zip(spans, spans[1:]))
    from transformers import AutoTokenizer

    words = AutoTokenizer.from_pretrained(tiny_ner_model).backend_tokenizer.pre_tokenizer.pre_tokenize_str(LONG[0])
    starts, ends = {s for _, (s, _) in words}, {e for _, (_, e) in words}
    for agg in ("first", "max"):
        [by_word] = annotate_texts(load_annotate_config(**{**vars(cfg), "aggregation": agg}), LONG)
        assert by_word["entities"]
        for e in by_word["entities"]:  # word aggregation never splits a word
            assert e["start"] in starts and e["end"] in ends, e


def test_s3_round_trips_rejects_and_rerun(ray_cluster, tiny_ner_model, s3_server, s3_bucket, tmp_path):
    client, bucket = s3_bucket
    lines = [json.dumps(r, ensure_ascii=False) for r in _rows(SHORT + UNICODE)] + [
        "{broken json",
        json.dumps(BAD[0]),
        json.dumps(BAD[2]),
    ]
    client.put_object(Bucket=bucket, Key="corpus/part-0.jsonl.gz", Body=gzip.compress("\n".join(lines).encode()))
    # S3 (jsonl.gz) -> local parquet
    local = load_annotate_config(
        task="ner",
        model=str(tiny_ner_model),
        input=f"s3://{bucket}/corpus/",
        output=str(tmp_path / "local"),
        s3_endpoint=s3_server,
    )
    first = run_annotation(local)
    assert (first["rows_in"], first["rows_out"], first["rows_rejected"]) == (7, 4, 3) and first["reconciled"]
    reasons = sorted(r["reason"].split(":")[0] for r in _output(first, "rejects"))
    assert reasons == ["invalid JSON line", "text is not a string (int)", "text is null"]
    # local parquet -> S3 jsonl, twice: the rerun replaces, never duplicates; by this process's runner, whose rows
    # must equal the streaming job's above
    pq.write_table(pa.Table.from_pylist(_rows(SHORT + UNICODE)), tmp_path / "in.parquet")
    to_s3 = load_annotate_config(
        task="ner",
        model=str(tiny_ner_model),
        input=str(tmp_path / "in.parquet"),
        output=f"s3://{bucket}/annotations",
        output_format="jsonl",
        s3_endpoint=s3_server,
        runner="local",
        retention_hours=0,  # the replaced run's files go at once (kept for readers by default: test_publish)
    )
    a, b = run_annotation(to_s3), run_annotation(to_s3)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="annotations/")["Contents"]]
    data_keys = [k for k in keys if "/data/part-" in k]
    assert data_keys and all(b["run_id"] in k for k in data_keys) and b["replaced_files_kept_for_readers"] >= 1
    manifest = json.loads(client.get_object(Bucket=bucket, Key="annotations/_SUCCESS.json")["Body"].read())
    assert manifest["run_id"] == b["run_id"] and manifest["rows_out"] == 4
    body = b"".join(client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in data_keys)
    rows = [json.loads(line) for line in io.BytesIO(body).read().decode().splitlines()]
    assert sorted(r["id"] for r in rows) == ["d0", "d1", "d2", "d3"]
    assert {r["id"]: r["entities"] for r in rows} == {r["id"]: r["entities"] for r in _output(first)}
    assert a["run_id"] != b["run_id"] and (first["runner"], b["runner"]) == ("ray", "local")


def test_fail_fast_errors_name_the_culprit(tiny_ner_model, s3_server, tmp_path):
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), tmp_path / "nocol.parquet")
    cfg = load_annotate_config(
        task="ner", model=str(tiny_ner_model), input=str(tmp_path / "nocol.parquet"), output=str(tmp_path / "o")
    )
    with pytest.raises(ConfigError, match=r"nocol\.parquet: no column 'text'"):
        run_annotation(cfg)
    with pytest.raises(StorageError, match="does-not-exist"):
        run_annotation(load_annotate_config(**{**vars(cfg), "input": str(tmp_path / "does-not-exist")}))
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), tmp_path / "ok.parquet")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        run_annotation(
            load_annotate_config(
                **{
                    **vars(cfg),
                    "input": str(tmp_path / "ok.parquet"),
                    "output": "s3://no-such-bucket/x",
                    "s3_endpoint": s3_server,
                }
            )
        )
    with pytest.raises(OSError, match="config.json"):
        run_annotation(
            load_annotate_config(**{**vars(cfg), "input": str(tmp_path / "ok.parquet"), "model": str(tmp_path)})
        )


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_qa_answers_equal_evaluation_path(ray_cluster, tiny_qa_model, data_dir, tmp_path, layout):
    from nlpbatch.evaluation import eval_config, evaluate_model
    from nlpbatch.tasks.qa import load_split

    raw = load_split(str(data_dir), "validation", 12)
    rows = [{"id": r["id"], "text": r["context"], "question": r["question"]} for r in raw]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "qa.parquet")
    cfg = load_annotate_config(
        task="qa",
        model=str(tiny_qa_model),
        input=str(tmp_path / "qa.parquet"),
        output=str(tmp_path / "qa_out"),
        max_length=128,
        stride=32,
        layout=layout,
    )
    manifest = run_annotation(cfg)
    got = {r["id"]: r["answer"] for r in _output(manifest)}
    _, predictions = evaluate_model(
        eval_config("qa", str(tiny_qa_model), max_length=128, doc_stride=32), str(data_dir), max_examples=12
    )
    assert {k: v["text"] for k, v in got.items()} == predictions
    for row in rows:
        ans = got[row["id"]]
        assert row["text"][ans["start"] : ans["end"]] == ans["text"]
        assert 0.0 < ans["score"] <= 1.0  # a probability, as the transformers QA pipeline reports


def test_output_rows_carry_the_text_and_kept_columns(ray_cluster, tiny_ner_model, tmp_path):
    docs = [{"id": f"d{i}", "text": t, "title": f"T{i}", "year": 2000 + i, "tags": [i]} for i, t in enumerate(SHORT)]
    bad = {"id": None, "text": "no id", "title": "x", "year": 1, "tags": []}
    pq.write_table(pa.Table.from_pylist(docs + [bad]), tmp_path / "c.parquet")
    (tmp_path / "c.jsonl").write_text(json.dumps({"id": "j1", "text": SHORT[0], "meta": {"a": [1, "é"]}}) + "\n")

    def run(source, name, **keep):
        cfg = load_annotate_config(
            task="ner",
            model=str(tiny_ner_model),
            input=str(tmp_path / source),
            output=str(tmp_path / name),
            runner="local",  # no pool to start per run; the same columns through Ray: test_in_process.py
            **keep,
        )
        manifest = run_annotation(cfg)
        return {r["id"]: r for r in _output(manifest)}, _output(manifest, "rejects")

    default, rejects = run("c.parquet", "default")
    assert {k: r["text"] for k, r in default.items()} == {"d0": SHORT[0], "d1": SHORT[1]}  # readable without a join
    assert "title" not in default["d0"]
    assert json.loads(rejects[0]["input"]) == {"id": None, "text": "no id"}  # the row's columns that were read

    kept, rejects = run("c.parquet", "kept", keep_columns="title,year,tags")
    assert [(r["title"], r["year"], r["tags"]) for r in kept.values()] == [("T0", "2000", "[0]"), ("T1", "2001", "[1]")]
    assert json.loads(rejects[0]["input"]) == {"id": None, "text": "no id", "title": "x", "year": "1", "tags": "[]"}
    assert "text" not in kept["d0"] and kept["d0"]["entities"] == default["d0"]["entities"]

    nested, _ = run("c.jsonl", "nested", keep_columns="text,meta")
    assert json.loads(nested["j1"]["meta"]) == {"a": [1, "é"]} and nested["j1"]["text"] == SHORT[0]

    none, _ = run("c.parquet", "none", keep_columns="")
    assert set(none["d0"]) >= {"id", "entities"} and "text" not in none["d0"]

    with pytest.raises(ConfigError, match=r"c.parquet: no column 'titel' to keep"):
        run("c.parquet", "typo", keep_columns="titel")
    with pytest.raises(ConfigError, match=r"keep_columns: entities would clash"):
        run("c.parquet", "clash", keep_columns="entities")


def test_a_lost_progress_counter_never_fails_the_job(ray_cluster, tiny_ner_model, data_dir, tmp_path, capsys):
    """Progress is a view: its counter actor killed mid-job, the job still writes every row once."""
    import os
    import signal
    import threading
    import time

    import psutil

    from nlpbatch.corpus import write_corpus

    write_corpus(str(data_dir), 3000, str(tmp_path / "corpus"))
    cfg = load_annotate_config(
        task="ner", model=str(tiny_ner_model), input=str(tmp_path / "corpus"), output=str(tmp_path / "out")
    )
    killed, done = [], threading.Event()

    def kill_counter():  # its worker process, found by the title Ray gives it ("ray::RowCounter...")
        while not done.is_set() and not killed:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if any(part.startswith("ray::RowCounter") for part in proc.info["cmdline"] or []):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(time.monotonic())
            time.sleep(0.2)

    thread = threading.Thread(target=kill_counter, daemon=True)
    thread.start()
    manifest = run_annotation(cfg)
    finished = time.monotonic()
    done.set()
    thread.join()
    assert killed and killed[0] < finished  # the counter died while the job ran
    assert manifest["rows_in"] == manifest["rows_out"] == 3000
    ids = [r["id"] for r in _output(manifest)]
    assert len(ids) == len(set(ids)) == 3000
    assert "annotate ner: " in capsys.readouterr().err  # the summary line still comes


def test_progress_counts_rows_as_they_are_annotated(
    ray_cluster, tiny_ner_model, data_dir, tmp_path, capsys, monkeypatch
):
    """Rows are counted where they are annotated, so progress moves during the run: not when the writer, which
    bundles them into large files, gets them all at the end."""
    import re

    from nlpbatch.corpus import write_corpus

    monkeypatch.setenv("NLPBATCH_PROGRESS_SECONDS", "0.2")
    write_corpus(str(data_dir), 1500, str(tmp_path / "corpus"))
    cfg = load_annotate_config(
        task="ner", model=str(tiny_ner_model), input=str(tmp_path / "corpus"), output=str(tmp_path / "out")
    )
    assert run_annotation(cfg)["rows_out"] == 1500
    done = [int(n.replace(",", "")) for n in re.findall(r"annotate ner: ([\d,]+)/1,500 rows", capsys.readouterr().err)]
    assert any(0 < n < 1500 for n in done), done


def test_csv_and_tsv_inputs_annotate_as_their_texts_with_malformed_rows_rejected(ray_cluster, tiny_ner_model, tmp_path):
    """CSV (quoted, a comma and a line break inside a value) and TSV (GLUE-style, unquoted) inputs: every row is
    annotated as its text is in process, or rejected with its line (a row with too many fields, a value that is
    not UTF-8); nothing is lost: rows in = rows out + rejected."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.csv").write_bytes(
        b'id,text,lang\nc1,"Angela Merkel visited Paris, then Berlin.",de\nc2,too,many,fields\n'
        b'c3,"Two lines:\nSiemens in M\xc3\xbcnchen",de\nc4,K\xf6ln is latin-1,de\n'
    )
    (corpus / "b.tsv").write_text('id\ttext\tlang\nt1\tJosé "Pepe" Álvarez works at Google\tes\nt2\tZoë\ten\n')
    cfg = load_annotate_config(
        task="ner",
        model=str(tiny_ner_model),
        input=str(corpus),
        output=str(tmp_path / "out"),
        keep_columns="text,lang",
        max_reject_rate=0.5,
    )
    manifest = run_annotation(cfg)
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_rejected"]) == (6, 4, 2)
    got = {r["id"]: r for r in _output(manifest)}
    texts = {
        "c1": "Angela Merkel visited Paris, then Berlin.",
        "c3": "Two lines:\nSiemens in München",
        "t1": 'José "Pepe" Álvarez works at Google',
        "t2": "Zoë",
    }
    assert {k: r["text"] for k, r in got.items()} == texts and got["t1"]["lang"] == "es"
    reference = annotate_texts(cfg, list(texts.values()))
    assert [got[k]["entities"] for k in texts] == [r["entities"] for r in reference]
    rejects = {(r["source"].rsplit("/", 1)[-1], r["line"]): r["reason"] for r in _output(manifest, "rejects")}
    assert rejects[("a.csv", 3)] == "row with 4 fields, the header has 3"
    # rows are numbered by their first line in the file: the quoted line break above puts the latin-1 row on line 6
    assert "not valid UTF-8" in rejects[("a.csv", 6)]
