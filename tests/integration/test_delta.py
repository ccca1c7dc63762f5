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


def _active_files(table_dir) -> dict[str, dict]:
    """The Delta table's live files by replaying its JSON log (add, then remove) without delta-rs: an independent
    reader of the protocol (no checkpoint exists for so few commits). {path: partitionValues}."""
    live: dict[str, dict] = {}
    for entry in sorted((table_dir / "_delta_log").glob("*.json")):
        for line in entry.read_text().splitlines():
            action = json.loads(line) if line else {}
            if "add" in action:
                live[action["add"]["path"]] = action["add"]["partitionValues"]
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return live


def _independent_rows(table_dir) -> list[tuple[str, str, str]]:
    """(dt, id, run_id) of every live row, read with pyarrow from the files the log names."""
    from urllib.parse import unquote

    found = []
    for path, values in _active_files(table_dir).items():
        part = pq.read_table(table_dir / unquote(path), columns=["id", "run_id"]).to_pylist()
        found += [(values["dt"], r["id"], r["run_id"]) for r in part]
    return sorted(found)


def test_nightly_writes_one_table_partitioned_by_night_and_a_rerun_replaces_only_its_night(tiny_ner_model, tmp_path):
    from deltalake import DeltaTable

    from nlpbatch.nightly import run_nightly
    from nlpbatch.show import read_rows

    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    for day in days:
        (tmp_path / "corpus" / f"dt={day}").mkdir(parents=True)
        rows = [{"id": f"{day}-{i}", "text": f"Angela Merkel visited Paris, note {i}."} for i in range(4)]
        rows.append({"id": f"{day}-bad", "text": ""})
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "corpus" / f"dt={day}" / "part-0.parquet")
    output = tmp_path / "annotations"
    base = load_annotate_config(
        task="ner",
        model=str(tiny_ner_model),
        input=str(tmp_path / "corpus"),
        output=str(output),
        output_format="delta",
        runner="local",
        max_length=32,
        stride=8,
    )
    first = run_nightly(base)
    assert list(first["annotated"]) == days and first["drift"] == {}  # three alike nights: no drift
    table = DeltaTable(str(output))
    night = json.loads((output / f"dt={days[0]}" / "_SUCCESS.json").read_text())
    entities = [e for r in table.to_pyarrow_table(filters=[("dt", "=", days[0])]).to_pylist() for e in r["entities"]]
    assert {k: v["count"] for k, v in night["labels"].items()} == {
        label: sum(e["label"] == label for e in entities) for label in {e["label"] for e in entities}
    }
    assert table.metadata().partition_columns == ["dt"] and table.version() == 2  # one commit a night
    rows = sorted((r["dt"], r["id"]) for r in table.to_pyarrow_table(columns=["dt", "id"]).to_pylist())
    assert rows == [(d, f"{d}-{i}") for d in days for i in range(4)]  # every id once, in its night
    assert [(d, i) for d, i, _ in _independent_rows(output)] == rows  # the log read without delta-rs agrees
    rejects = DeltaTable(str(output / "_rejects")).to_pyarrow_table().to_pylist()
    assert sorted((r["dt"], r["id"]) for r in rejects) == [(d, f"{d}-bad") for d in days]

    # a file arrives late in one night: the rerun replaces that night's rows only, in one commit
    late = [{"id": "2026-11-02-late", "text": "Emmanuel Macron in Berlin."}]
    pq.write_table(pa.Table.from_pylist(late), tmp_path / "corpus" / "dt=2026-11-02" / "part-1.parquet")
    before = {(d, i): run for d, i, run in _independent_rows(output)}
    second = run_nightly(base)
    assert list(second["annotated"]) == ["2026-11-02"] and second["skipped"] == ["2026-11-01", "2026-11-03"]
    after = {(d, i): run for d, i, run in _independent_rows(output)}
    assert sorted(after) == sorted([*before, ("2026-11-02", "2026-11-02-late")])
    assert all(after[k] == before[k] for k in before if k[0] != "2026-11-02")  # the other nights untouched
    assert {after[k] for k in after if k[0] == "2026-11-02"} == {second["annotated"]["2026-11-02"]["run_id"]}
    assert DeltaTable(str(output)).version() == 3

    # time travel: the version before the rerun holds the night as it was
    previous = DeltaTable(str(output), version=2).to_pyarrow_table(columns=["dt", "id"]).to_pylist()
    assert sorted((r["dt"], r["id"]) for r in previous) == rows
    manifest, shown = read_rows(str(output / "dt=2026-11-02"), 10)
    assert manifest["delta"]["partition"] == {"dt": "2026-11-02"} and len(shown) == 5
    assert {r["dt"] for r in shown} == {"2026-11-02"}
