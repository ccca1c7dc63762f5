"""`--output-format delta`: the output is a Delta Lake table that delta-rs (the reader Spark, Trino and DuckDB share
the protocol with) reads as exactly the run's rows; a rerun replaces them in one commit, a retried commit is a
no-op, the rejects are a table of their own; locally and on the S3 server."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.config import load_annotate_config

pytestmark = pytest.mark.integration
deltalake = pytest.importorskip("deltalake")


def _corpus(tmp_path, n=40):
    rows = [{"id": f"d{i}", "text": f"Angela Merkel met Emmanuel Macron in Paris, note {i}."} for i in range(n)]
    rows += [{"id": "bad", "text": ""}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    return [r["id"] for r in rows[:n]]


@pytest.mark.parametrize("store", ["local", "s3"])
def test_annotate_publishes_a_delta_table_exactly_once_per_run(store, tiny_ner_model, s3_server, s3_bucket, tmp_path):
    from deltalake import DeltaTable

    from nlpbatch.annotate import delta

    ids = _corpus(tmp_path)
    output, endpoint = str(tmp_path / "table"), None
    if store == "s3":
        output, endpoint = f"s3://{s3_bucket[1]}/table", s3_server
    cfg = load_annotate_config(
        task="ner",
        model=str(tiny_ner_model),
        input=str(tmp_path / "in.parquet"),
        output=output,
        output_format="delta",
        s3_endpoint=endpoint,
        runner="local",
        max_length=32,
        stride=8,
        rows_per_file=15,  # several staged files, one commit
    )
    first = run_annotation(cfg)
    second = run_annotation(cfg)  # a rerun of the same input: replaces, never duplicates
    options = delta.storage_options(output, endpoint)
    table = DeltaTable(delta.table_uri(output), storage_options=options)
    rows = table.to_pyarrow_table().to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(ids) and {r["run_id"] for r in rows} == {second["run_id"]}
    assert all(isinstance(r["entities"], list) for r in rows)
    assert table.version() == second["delta"]["version"] == first["delta"]["version"] + 1
    # the transaction log itself, read without delta-rs: one commit per run, each naming its run and transaction
    from nlpbatch.storage import filesystem_for

    log_fs, log_path = filesystem_for(output, endpoint)
    for run, version in ((first, first["delta"]["version"]), (second, second["delta"]["version"])):
        with log_fs.open_input_stream(f"{log_path}/_delta_log/{version:020d}.json") as fh:
            actions = [json.loads(line) for line in fh.read().decode().splitlines() if line]
        info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
        txn = next(a["txn"] for a in actions if "txn" in a)
        assert info["nlpbatch_run_id"] == run["run_id"] and txn == {
            **txn,
            "appId": f"nlpbatch-{run['run_id']}-{run['attempt']}",
            "version": 1,
        }
    rejects = DeltaTable(delta.table_uri(output) + "/_rejects", storage_options=options).to_pyarrow_table()
    assert rejects.column("id").to_pylist() == ["bad"] and rejects.column("reason").to_pylist() == ["text is empty"]

    # a retried commit of the same run (its reply lost): found in the log by its transaction, not repeated
    app_id = f"nlpbatch-{second['run_id']}-{second['attempt']}"
    assert table.transaction_version(app_id) == 1
    again = delta.commit_table(delta.table_uri(output), None, ["never/read.parquet"], app_id, {}, options)
    assert again == table.version() and DeltaTable(delta.table_uri(output), storage_options=options).version() == again

    from nlpbatch.show import read_rows

    manifest, shown = read_rows(output, 3, endpoint)
    assert manifest["delta"]["version"] == table.version() and len(shown) == 3 and shown[0]["text"]
    assert manifest["output_files"] == []  # the table's log lists its files; the manifest names none of its own
    if store == "local":
        staged = list((tmp_path / "table").glob("_staging/**/*.parquet"))
        assert not staged and json.loads((tmp_path / "table" / "_SUCCESS.json").read_text())["version"] == 2
