"""Every input row ends exactly once in the data or the rejects, whatever happens: two runs at once, a run killed
half way, a hostile corpus, a throttled and flaky object store. The last published output survives all of it."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.annotate.commit import LEASE, MANIFEST, STAGING, LeaseHeldError, Store, acquire_lease
from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.config import load_annotate_config
from nlpbatch.storage import filesystem_for

pytestmark = pytest.mark.integration


def _write_corpus(path: Path, n: int, prefix: str = "d") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    texts = [f"Angela Merkel met Emmanuel Macron in Paris, note {i}." for i in range(n)]
    pq.write_table(pa.table({"id": ids, "text": texts}), path)
    return ids


def _cfg(model, input_uri, output_uri, **kw):
    """A run whose replaced files go at once (readers' retention: test_publish), so a glob sees one run."""
    kw = {"retention_hours": 0, **kw}
    return load_annotate_config(task="ner", model=str(model), input=str(input_uri), output=str(output_uri), **kw)


def _published(output_uri, s3_endpoint=None):
    """(manifest, rows of data, rows of rejects, every file under data/ and rejects/) as a reader sees them."""
    from pyarrow import fs

    filesystem, path = filesystem_for(output_uri, s3_endpoint)
    with filesystem.open_input_stream(f"{path}/{MANIFEST}") as fh:
        manifest = json.loads(fh.read())
    rows = {"data": [], "rejects": []}
    for f in manifest["output_files"]:  # relative to the output
        kind = f.split("/")[0]
        if f.endswith(".parquet"):
            rows[kind] += pq.read_table(f"{path}/{f}", filesystem=filesystem).to_pylist()
        else:
            with filesystem.open_input_stream(f"{path}/{f}") as fh:
                rows[kind] += [json.loads(line) for line in fh.read().split(b"\n") if line]
    present = [
        i.path[len(path) + 1 :]
        for kind in ("data", "rejects")
        for i in filesystem.get_file_info(fs.FileSelector(f"{path}/{kind}", allow_not_found=True))
    ]
    return manifest, rows["data"], rows["rejects"], sorted(present)


@pytest.mark.parametrize("store", ["local", "s3"])
def test_second_run_is_refused_and_published_output_survives(
    store, ray_cluster, tiny_ner_model, s3_server, s3_bucket, tmp_path
):
    ids = _write_corpus(tmp_path / "in.parquet", 400)
    output, endpoint = str(tmp_path / "out"), None
    if store == "s3":
        output, endpoint = f"s3://{s3_bucket[1]}/out", s3_server
    base = _cfg(tiny_ner_model, tmp_path / "in.parquet", output, s3_endpoint=endpoint, rows_per_file=50, batch_rows=16)
    first = run_annotation(base)
    _, rows, _, files = _published(output, endpoint)
    assert sorted(r["id"] for r in rows) == sorted(ids) and files == first["output_files"]

    results: dict = {}
    winner = threading.Thread(target=lambda: results.update(a=run_annotation(base)))
    winner.start()
    filesystem, path = filesystem_for(output, endpoint)
    deadline = time.time() + 60
    while filesystem.get_file_info(f"{path}/{LEASE}").type.name != "File" and time.time() < deadline:
        time.sleep(0.02)
    with pytest.raises(LeaseHeldError, match=r"being written by run \S+ \(started 20\d\d-.*--break-lease"):
        run_annotation(base)
    during, rows_during, _, files_during = _published(output, endpoint)  # the refused run changed nothing
    assert during["run_id"] == first["run_id"] and sorted(r["id"] for r in rows_during) == sorted(ids)
    assert set(first["output_files"]) <= set(files_during)
    winner.join()

    manifest, rows, rejects, files = _published(output, endpoint)
    assert manifest["run_id"] == results["a"]["run_id"] != first["run_id"]
    assert sorted(r["id"] for r in rows) == sorted(ids) and not rejects  # every row exactly once
    assert files == manifest["output_files"] and len(files) >= 400 // 50 - 1  # no leftovers, sized files
    assert filesystem.get_file_info(f"{path}/{LEASE}").type.name == "NotFound"
    assert filesystem.get_file_info(f"{path}/{STAGING}").type.name == "NotFound"


@pytest.mark.parametrize("store", ["local", "s3"])
def test_lease_is_exclusive_under_a_race(store, s3_server, s3_bucket, tmp_path):
    output, endpoint = str(tmp_path / "race"), None
    if store == "s3":
        output, endpoint = f"s3://{s3_bucket[1]}/race", s3_server
    filesystem, path = filesystem_for(output, endpoint)
    filesystem.create_dir(path, recursive=True)
    store = Store(filesystem, path, endpoint)
    won, refused = [], []
    barrier = threading.Barrier(6)

    def contend(k: int) -> None:
        barrier.wait()
        try:
            won.append(acquire_lease(store, output, f"run{k}", 60, False))
        except LeaseHeldError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=contend, args=(k,)) for k in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(won) == 1 and len(refused) == 5
    assert all(won[0].body["run_id"] in message for message in refused)
    won[0].release()
    # a crashed run's lease expires; a live one is only taken with break_lease
    dead = acquire_lease(store, output, "dead", 1, False)
    dead._stop.set()  # the run "crashes": no more renewals
    time.sleep(3.2)  # its TTL, plus the second S3 times are rounded to
    taker = acquire_lease(store, output, "next", 60, False)
    with pytest.raises(LeaseHeldError, match="run next"):
        acquire_lease(store, output, "other", 60, False)
    taker.renew()  # the heartbeat's renewal keeps a held lease
    assert taker.lost is None
    breaker = acquire_lease(store, output, "breaker", 60, True)
    taker.renew()  # ... and notices when it has been broken
    assert taker.lost
    with pytest.raises(LeaseHeldError, match="lost its lease to run breaker"):
        taker.check()
    breaker.release()


def test_killed_run_leaves_published_output_then_rerun_replaces_it(ray_cluster, tiny_ner_model, tmp_path):
    ids = _write_corpus(tmp_path / "in.parquet", 3000)
    out = tmp_path / "out"
    base = _cfg(tiny_ner_model, tmp_path / "in.parquet", out, rows_per_file=100, batch_rows=16, lease_ttl_seconds=3)
    first = run_annotation(base)

    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"]}
    flags = ["--model", str(tiny_ner_model), "--input", str(tmp_path / "in.parquet"), "--output", str(out)]
    flags += ["--rows-per-file", "100", "--batch-rows", "16", "--lease-ttl-seconds", "3"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlpbatch", "annotate", "ner", *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    staging = out / STAGING
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not list(staging.glob("*/data/*.parquet")):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(staging.glob("*/data/*.parquet")), "the killed run had staged files"

    manifest, rows, _, files = _published(str(out))
    assert manifest["run_id"] == first["run_id"] and sorted(r["id"] for r in rows) == sorted(ids)
    assert files == first["output_files"]  # a glob of data/ sees only the published run
    assert (out / LEASE).exists()  # the dead run's lease: it expires after 3 s

    time.sleep(3.5)
    rerun = run_annotation(base)
    manifest, rows, rejects, files = _published(str(out))
    assert manifest["run_id"] == rerun["run_id"] and sorted(r["id"] for r in rows) == sorted(ids) and not rejects
    assert files == manifest["output_files"] and not staging.exists() and not (out / LEASE).exists()


# ---------------------------------------------------------------- a hostile corpus, generated with a fixed seed

HUGE = "x" * 6000  # over the max_chars used below


def _hostile_lines(rng: random.Random, file_no: int, n: int) -> tuple[list[bytes], dict[int, str | None]]:
    """Raw lines (each with its own ending) and, per row line number, None (annotated) or the reject reason's
    start. Blank and whitespace-only lines are not rows."""
    lines, expected = [], {}
    for i in range(n):
        kind = rng.choices(
            [
                "ok",
                "ls",
                "crlf",
                "blank",
                "ws",
                "utf8",
                "json",
                "array",
                "null",
                "int",
                "huge",
                "idnull",
                "idlist",
                "idint",
                "dup",
                "deep",
                "empty",
            ],
            weights=[40, 4, 6, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 2],
        )[0]
        doc_id = f"f{file_no}-{i}"
        record = {"id": doc_id, "text": f"Zoë Müller met José in Zürich, row {i}."}
        reason = None
        ending = b"\n"
        if kind == "ls":
            record["text"] = "Angela Merkel\u2028visited Paris\u0085and Berlin."
        elif kind == "crlf":
            ending = b"\r\n"
        elif kind in ("blank", "ws"):
            lines.append((b"" if kind == "blank" else b" \t  \r") + ending)
            continue
        elif kind == "utf8":
            lines.append(b'{"id": "' + doc_id.encode() + b'", "text": "caf\xe9 au lait"}' + ending)
            expected[len(lines)] = "line is not valid UTF-8"
            continue
        elif kind == "json":
            lines.append(b'{"id": "' + doc_id.encode() + b'", "text": ' + ending)
            expected[len(lines)] = "invalid JSON line"
            continue
        elif kind == "array":
            record, reason = [doc_id], "JSON line is not an object"
        elif kind == "deep":
            lines.append(b"[" * 100_000 + b"]" * 100_000 + ending)
            expected[len(lines)] = "invalid JSON line"
            continue
        elif kind == "null":
            record["text"], reason = None, "text is null"
        elif kind == "int":
            record["text"], reason = 42, "text is not a string (int)"
        elif kind == "huge":
            record["text"], reason = HUGE, "text has 6000 characters"
        elif kind == "empty":
            record["text"], reason = " \u2028 ", "text is empty"
        elif kind == "idnull":
            record["id"], reason = None, "id is null"
        elif kind == "idlist":
            record["id"], reason = [1, 2], "id is not a string or integer (list)"
        elif kind == "idint":
            record["id"] = 1000 * file_no + i
        elif kind == "dup":
            record["id"] = "duplicate"
        lines.append(json.dumps(record, ensure_ascii=False).encode() + ending)
        expected[len(lines)] = reason
    return lines, expected


def test_hostile_corpus_every_row_exactly_once(ray_cluster, tiny_ner_model, tmp_path):
    rng = random.Random(1234)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    expected: dict[tuple[str, int], str | None] = {}
    for file_no in range(4):
        lines, rows = _hostile_lines(rng, file_no, 2700)
        data = b"".join(lines)
        if file_no < 2:
            data = b"\xef\xbb\xbf" + data  # a BOM before the first record
        name = corpus / (f"part-{file_no}.jsonl.gz" if file_no == 3 else f"part-{file_no}.jsonl")
        name.write_bytes(gzip.compress(data) if file_no == 3 else data)
        expected |= {(str(name), line): reason for line, reason in rows.items()}
    assert len(expected) >= 10_000

    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"]}
    out = tmp_path / "out"
    args = ["annotate", "ner", "--model", str(tiny_ner_model), "--input", str(corpus), "--output", str(out)]
    args += ["--max-chars", "5000", "--max-length", "64", "--stride", "16", "--batch-rows", "256"]
    proc = subprocess.run([sys.executable, "-m", "nlpbatch", *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    manifest, rows, rejects, _ = _published(str(out))
    assert manifest["rows_in"] == len(expected) == manifest["rows_out"] + manifest["rows_rejected"]
    seen = Counter((r["source"], r["line"]) for r in rows + rejects)
    assert max(seen.values()) == 1 and set(seen) == set(expected)  # each input row exactly once
    for r in rejects:
        want = expected[(r["source"], r["line"])]
        assert want is not None and r["reason"].startswith(want), (r, want)
        assert r["input"]  # the raw line is kept
    assert all(expected[(r["source"], r["line"])] is None for r in rows)
    assert sum(1 for r in rows if r["id"] == "duplicate") > 10  # duplicate ids are separate rows


def test_hostile_parquet_and_qa_rows_are_rejects_not_crashes(ray_cluster, tiny_ner_model, tiny_qa_model, tmp_path):
    # Parquet: null ids and texts, and a corrupt row group whose rows must be rejected, not lost
    n = 2000
    table = pa.table(
        {
            "id": [None if i % 97 == 0 else f"p{i}" for i in range(n)],
            "text": [None if i % 89 == 0 else f"text number {i} " * 5 for i in range(n)],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=500, compression="zstd")
    data = bytearray(buf.getvalue())
    column = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(0).column(1)
    start = column.data_page_offset + column.total_compressed_size // 2
    data[start : start + 40] = bytes(b ^ 0xFF for b in data[start : start + 40])
    (tmp_path / "p.parquet").write_bytes(bytes(data))
    manifest = run_annotation(_cfg(tiny_ner_model, tmp_path / "p.parquet", tmp_path / "pout", max_length=64, stride=16))
    _, rows, rejects, _ = _published(str(tmp_path / "pout"))
    assert manifest["rows_in"] == n == len(rows) + len(rejects)
    assert sorted(r["line"] for r in rows + rejects) == list(range(1, n + 1))
    corrupt = [r for r in rejects if r["reason"].startswith("unreadable Parquet row group")]
    assert len(corrupt) % 500 == 0 and corrupt, "a corrupt row group's rows are rejected"
    assert {r["reason"] for r in rejects} - {c["reason"] for c in corrupt} == {"id is null", "text is null"}
    raw = next(r for r in rejects if r["reason"] == "text is null")
    assert json.loads(raw["input"])["id"] == raw["id"]  # the raw Parquet row is kept

    # QA: a question too long for the window (it would panic the tokenizer) and non-string questions
    qa_rows = [
        {"id": "ok", "text": "Paris is the capital of France.", "question": "What is the capital?"},
        {"id": "long", "text": "Paris is the capital of France.", "question": "why " * 300},
        {"id": "num", "text": "Paris is the capital of France.", "question": 7},
        {"id": "none", "text": "Paris is the capital of France.", "question": None},
    ]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in qa_rows))
    cfg = load_annotate_config(
        task="qa",
        model=str(tiny_qa_model),
        input=str(tmp_path / "qa.jsonl"),
        output=str(tmp_path / "qaout"),
        max_length=128,
        stride=32,
        max_reject_rate=1.0,  # three of the four rows are hostile on purpose
        runner="local",  # the parse and tokenize stages the streaming job runs too, without a pool to start
    )
    manifest = run_annotation(cfg)
    _, rows, rejects, _ = _published(str(tmp_path / "qaout"))
    assert [r["id"] for r in rows] == ["ok"] and manifest["rows_in"] == 4
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert reasons["long"].startswith("question has 300 tokens, over the 92")
    assert reasons == {**reasons, "num": "question is not a string (int)", "none": "question is null"}


def test_throttled_and_flaky_store_still_every_row_once(ray_cluster, tiny_ner_model, s3_server, s3_bucket, tmp_path):
    from .faulty_proxy import FaultyProxy

    client, bucket = s3_bucket
    ids = _write_corpus(tmp_path / "in.parquet", 600)
    buf = io.BytesIO()
    pq.write_table(pq.read_table(tmp_path / "in.parquet"), buf, row_group_size=100)
    client.put_object(Bucket=bucket, Key="corpus/in.parquet", Body=buf.getvalue())
    proxy = FaultyProxy(s3_server, slow_down=0.15, drop=0.05, seed=7)
    try:
        cfg = _cfg(
            tiny_ner_model,
            f"s3://{bucket}/corpus/",
            f"s3://{bucket}/out",
            s3_endpoint=proxy.endpoint,
            rows_per_file=60,
            batch_rows=32,
        )
        first = run_annotation(cfg)
        second = run_annotation(cfg)  # a rerun through the same faults replaces the first, never duplicates
    finally:
        proxy.close()
    assert proxy.counts["slow_down"] >= 10 and proxy.counts["dropped"] >= 3, proxy.counts
    manifest, rows, rejects, files = _published(f"s3://{bucket}/out", s3_server)
    assert manifest["run_id"] == second["run_id"] != first["run_id"]
    assert sorted(r["id"] for r in rows) == sorted(ids) and not rejects and files == manifest["output_files"]
