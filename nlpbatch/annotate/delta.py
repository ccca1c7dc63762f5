"""`--output-format delta`: a run's rows published as one commit of a Delta Lake table at OUTPUT (delta-rs'
`deltalake`, no JVM, no Spark), which Spark, Trino / Athena, DuckDB, Polars and pandas read atomically from its
transaction log, and the rejects as a table of their own at OUTPUT/_rejects (committed first: the data table's
commit is the run's publish).

The run works as every annotate run does (the output's lease, rows staged as Parquet under OUTPUT/_staging/,
counts reconciled); then, still holding the lease, it commits the staged rows as one `overwrite` of the table (a
rerun replaces the previous run's rows; their files stay for Delta's own VACUUM retention, so readers of the old
version finish), carrying the run as an application transaction (`txn`: app id `nlpbatch-<run>-<attempt>`): a
retried commit whose first try landed (a lost reply) finds its transaction in the log and is a no-op, never a
duplicate. Last, the manifest (`_SUCCESS.json`) records the Delta version, so `show` and `nightly` work as for the
other formats. On S3 the commit uses the store's conditional writes (`AWS_CONDITIONAL_PUT=etag`).

`nightly --output-format delta` writes one table for all nights instead: OUTPUT is the table, partitioned by `dt`,
and each night's run replaces only its own partition (an overwrite with the predicate `dt = 'D'`; the other nights'
rows are untouched), while OUTPUT/dt=D/ keeps that night's lease and manifest (underscore-named, as Delta ignores
them). A kept column a later night adds is merged into the table's schema (earlier rows read it as null).
"""

from __future__ import annotations

import os

from nlpbatch.progress import say
from nlpbatch.storage import StorageError, join, normalize_endpoint, s3_region

REJECTS = "_rejects"


def available() -> bool:
    try:
        import deltalake  # noqa: F401
    except ImportError:
        return False
    return True


def table_uri(output: str) -> str:
    """The table's URI as delta-rs takes it: s3://bucket/prefix, or an absolute local path."""
    return output.rstrip("/") if output.startswith("s3://") else os.path.abspath(output)


def storage_options(output: str, s3_endpoint: str | None) -> dict[str, str] | None:
    """delta-rs' object store settings for an s3:// output (credentials come from the usual AWS variables)."""
    if not output.startswith("s3://"):
        return None
    options = {"AWS_CONDITIONAL_PUT": "etag"}  # the commit's put-if-absent on S3, no lock table needed
    endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        endpoint = normalize_endpoint(endpoint)
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    region = s3_region()
    if region:
        options["AWS_REGION"] = region
    return options


def open_table(uri: str, options):
    """The Delta table at `uri`, or None when there is none yet. (Not `DeltaTable.is_deltatable`: its listing timed
    out against an S3-compatible server where opening the table answered at once.)"""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    try:
        return DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return None
    except DeltaError as err:
        if "No files in log segment" in str(err):  # an object store without the table's log: none yet
            return None
        raise


def _reader(filesystem, paths: list[str], partition: tuple[str, str] | None = None):
    """The staged Parquet files as one Arrow stream (bounded memory, whatever their size), with the partition's
    column appended to every batch."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    reader = ds.dataset(paths, filesystem=filesystem, format="parquet").scanner().to_reader()
    if partition is None:
        return reader
    column, value = partition
    schema = reader.schema.append(pa.field(column, pa.string()))
    batches = (b.append_column(column, pa.array([value] * b.num_rows, pa.string())) for b in reader)
    return pa.RecordBatchReader.from_batches(schema, batches)


COMMIT_TRIES = 5  # a concurrent commit of another night's partition: delta-rs refuses ours; read again, retry


def commit_table(
    uri: str, filesystem, paths: list[str], app_id: str, metadata: dict, options, partition=None
) -> int | None:
    """Overwrite the table at `uri` (with `partition` (column, value): only that partition) with the staged files
    in one commit carrying transaction (`app_id`, 1); a commit already in the log with that transaction is not
    repeated. Returns the table's version (None: no rows and no table)."""
    from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
    from deltalake.exceptions import CommitFailedError

    for attempt in range(COMMIT_TRIES):
        existing = open_table(uri, options)
        if existing is not None and (existing.transaction_version(app_id) or 0) >= 1:
            say(f"{uri}: this run's commit is already in the table (version {existing.version()}): not repeated")
            return existing.version()
        if not paths and (partition is None or existing is None):
            return existing.version() if existing is not None else None
        properties = CommitProperties(
            custom_metadata={k: str(v) for k, v in metadata.items()}, app_transactions=[Transaction(app_id, 1)]
        )
        if not paths:  # a night of no rows (all rejected): its partition's earlier rows go, in one commit
            existing.delete(f"{partition[0]} = '{partition[1]}'", commit_properties=properties)
            return DeltaTable(uri, storage_options=options).version()
        where = {}
        if partition is not None:  # this night's rows only: the others' stay; a new kept column is merged in
            where = {"partition_by": [partition[0]], "predicate": f"{partition[0]} = '{partition[1]}'"}
            where["schema_mode"] = "merge"
        else:
            where = {"schema_mode": "overwrite"}
        try:
            write_deltalake(
                uri,
                _reader(filesystem, paths, partition),
                mode="overwrite",
                commit_properties=properties,
                storage_options=options,
                **where,
            )
        except CommitFailedError:
            if attempt == COMMIT_TRIES - 1:
                raise
            continue
        return DeltaTable(uri, storage_options=options).version()
    return None


def publish(commit, staged: list[str], manifest: dict, output: str, s3_endpoint: str | None, partition=None) -> dict:
    """Commit the staged rows (rejects, then data) under the held lease, then the manifest; the staging goes.
    `partition` (column, value): the rows replace that partition of the table at OUTPUT's parent (nightly)."""
    lease = commit.lease
    lease.check()  # a run paused past its lease publishes nothing
    table = output.rstrip("/").rsplit("/", 1)[0] if partition is not None else output
    uri, options = table_uri(table), storage_options(table, s3_endpoint)
    prefix = commit.staging.rstrip("/") + "/"
    kinds = {k: sorted(p for p in staged if p.startswith(prefix + k + "/")) for k in ("data", "rejects")}
    app_id = f"nlpbatch-{lease.run_id}-{lease.attempt}"
    metadata = {"nlpbatch_run_id": lease.run_id, "rows_in": manifest["rows_in"], "rows_out": manifest["rows_out"]}
    try:
        rejects = commit_table(
            join(uri, REJECTS), commit.filesystem, kinds["rejects"], app_id, metadata, options, partition
        )
        version = commit_table(uri, commit.filesystem, kinds["data"], app_id, metadata, options, partition)
    except Exception as err:  # delta-rs' errors (a commit conflict, the store refusing): one line, nothing half-said
        if isinstance(err, OSError):
            raise  # the store's own error, said by run_annotation with what to do
        raise StorageError(f"{output}: the Delta commit failed ({type(err).__name__}: {err})") from err
    commit.abort()  # the staged files are in the table now (Delta copies them): the staging and record go
    found = {"table": uri, "version": version, "rejects_version": rejects}
    if partition is not None:
        found["partition"] = {partition[0]: partition[1]}
    return commit.finish({**manifest, "delta": found})
