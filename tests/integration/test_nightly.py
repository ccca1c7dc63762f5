"""Nightly runs over dt= partitions on S3: backfill, no-op reruns, and a crashed night finished exactly once."""

import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.config import ConfigError, load_annotate_config
from nlpbatch.nightly import is_settled, run_nightly, select_dates

pytestmark = pytest.mark.integration

DATES = ["2026-11-19", "2026-11-20", "2026-11-21"]


def _put_parquet(client, bucket, key, rows):
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    client.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())


def _ids_in(client, bucket, prefix, manifest_only=False):
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    if manifest_only:  # what a reader following the manifest reads
        output = prefix.rsplit("data/", 1)[0]
        manifest = json.loads(client.get_object(Bucket=bucket, Key=output + "_SUCCESS.json")["Body"].read())
        keys = [output + rel for rel in manifest["output_files"] if rel.startswith("data/")]
    ids = []
    for key in keys:
        if key.endswith(".parquet"):
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            ids += pq.read_table(io.BytesIO(body))["id"].to_pylist()
    return sorted(ids)


def test_nightly_backfill_noop_and_crash_recovery(tiny_ner_model, s3_server, s3_bucket):
    client, bucket = s3_bucket
    for day in DATES:
        rows = [{"id": f"{day}-{i}", "text": f"Angela Merkel visited Paris, note {i}."} for i in range(3)]
        if day == DATES[1]:
            rows.append({"id": f"{day}-bad", "text": ""})
        _put_parquet(client, bucket, f"corpus/dt={day}/part-0.parquet", rows)
    base = load_annotate_config(
        task="ner",
        model=str(tiny_ner_model),
        input=f"s3://{bucket}/corpus/",
        output=f"s3://{bucket}/annotations/",
        s3_endpoint=s3_server,
        runner="local",  # what a machine without a cluster runs; the nightly over Ray: the test below
    )

    backfill = run_nightly(base, since=DATES[1])
    assert sorted(backfill["annotated"]) == DATES[1:] and backfill["annotated"][DATES[1]]["rows_rejected"] == 1
    nightly = run_nightly(base)
    assert list(nightly["annotated"]) == [DATES[0]] and nightly["skipped"] == DATES[1:]
    assert run_nightly(base)["annotated"] == {}  # a finished night is a no-op

    # a crash half way: the run's files moved in, its manifest never written (deleted here, its attempt record
    # kept), and a file of unknown origin beside them. The next run finishes it, each row exactly once, removes
    # the crashed run's files (its record proves them its own) and leaves the stranger alone
    crashed = f"annotations/dt={DATES[2]}/"
    client.delete_object(Bucket=bucket, Key=crashed + "_SUCCESS.json")
    stranger = [{"id": f"{DATES[2]}-0", "entities": []}, {"id": f"{DATES[2]}-1", "entities": []}]
    _put_parquet(client, bucket, crashed + "data/part-crashedrun-000000.parquet", stranger)
    recovered = run_nightly(base)
    assert list(recovered["annotated"]) == [DATES[2]]
    manifest = json.loads(client.get_object(Bucket=bucket, Key=crashed + "_SUCCESS.json")["Body"].read())
    assert manifest["removed_files_of_earlier_runs"] == 1 and manifest["rows_in"] == 3  # the crashed run's file
    assert manifest["foreign_files"] == ["data/part-crashedrun-000000.parquet"]
    assert _ids_in(client, bucket, crashed + "data/") == sorted([f"{DATES[2]}-{i}" for i in (0, 0, 1, 1, 2)])
    for day in DATES:  # every input row annotated or rejected exactly once, across all nights
        got = _ids_in(client, bucket, f"annotations/dt={day}/data/", manifest_only=True)
        assert got == [f"{day}-{i}" for i in range(3)]


def test_date_selection():
    assert select_dates(DATES, None, DATES[1], None) == DATES[1:]
    assert select_dates(DATES, None, None, DATES[0]) == DATES[:1]
    with pytest.raises(ConfigError, match="no partition dt=2026-12-01"):
        select_dates(DATES, "2026-12-01", None, None)
    with pytest.raises(ConfigError, match="--since .yesterday.: not a date in the form YYYY-MM-DD"):
        select_dates(DATES, None, "yesterday", None)


def test_nightly_waits_for_complete_partitions_redoes_changed_ones_and_survives_failures(
    ray_cluster, tiny_ner_model, s3_server, s3_bucket
):
    from nlpbatch.cli import main

    client, bucket = s3_bucket
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    days = ["2026-11-01", "2026-11-02", "2026-11-03", today]
    for day in days:
        rows = [{"id": f"{day}-{i}", "text": f"Angela Merkel visited Paris, note {i}."} for i in range(3)]
        _put_parquet(client, bucket, f"corpus/dt={day}/part-0.parquet", rows)
    client.put_object(Bucket=bucket, Key="corpus/dt=2026-11-02/part-1.parquet", Body=b"not parquet at all")
    base = load_annotate_config(
        task="ner",
        model=str(tiny_ner_model),
        input=f"s3://{bucket}/corpus/",
        output=f"s3://{bucket}/annotations/",
        s3_endpoint=s3_server,
        max_actors=1,  # small partitions: one inference actor a night, not a pool to start per partition
        retention_hours=0,  # a redone night's replaced files go at once: data/ holds one run's (test_publish_faults)
    )

    first = run_nightly(base)
    assert sorted(first["annotated"]) == ["2026-11-01", "2026-11-03"]  # the broken night did not stop the next
    assert list(first["failed"]) == ["2026-11-02"] and "part-1.parquet" in first["failed"]["2026-11-02"]
    assert first["waiting"] == [today]  # still filling: not taken, not marked done
    argv = ["nightly", "ner", "--model", str(tiny_ner_model), "--input", f"s3://{bucket}/corpus/"]
    argv += ["--output", f"s3://{bucket}/annotations/", "--s3-endpoint", s3_server]
    assert main(argv) == 1  # the exit status reports the failed partition

    # a file arrives late in a finished partition: the partition is due again and redone from all its files
    late = [{"id": f"2026-11-01-late{i}", "text": "Emmanuel Macron in Berlin."} for i in range(2)]
    _put_parquet(client, bucket, "corpus/dt=2026-11-01/part-9.parquet", late)
    client.delete_object(Bucket=bucket, Key="corpus/dt=2026-11-02/part-1.parquet")
    second = run_nightly(base)
    assert sorted(second["annotated"]) == ["2026-11-01", "2026-11-02"] and second["skipped"] == ["2026-11-03"]
    assert _ids_in(client, bucket, "annotations/dt=2026-11-01/data/") == sorted(
        [f"2026-11-01-{i}" for i in range(3)] + [r["id"] for r in late]
    )

    # with --require-input-marker only partitions whose upstream wrote _SUCCESS are taken (today's too)
    marked = run_nightly(base, require_input_marker=True)
    assert marked["annotated"] == {} and sorted(marked["waiting"]) == sorted(days)
    client.put_object(Bucket=bucket, Key=f"corpus/dt={today}/_SUCCESS", Body=b"")
    assert list(run_nightly(base, require_input_marker=True)["annotated"]) == [today]
    assert main(argv) == 0


def test_settle_rule():
    now = dt.datetime(2026, 11, 24, 1, 30, tzinfo=dt.timezone.utc)
    assert is_settled("2026-11-23", now, 0) and not is_settled("2026-11-24", now, 0)
    assert not is_settled("2026-11-23", now, 2) and is_settled("2026-11-22", now, 2)
