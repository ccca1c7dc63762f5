"""One pass, two outputs: annotated rows to data/, rejected rows (with their reason) to rejects/, both under the
run's staging prefix (`commit.py` publishes them). Each write task writes one file per kind of about
`rows_per_file` rows and returns its counts, files and stage timings, which the driver folds into the manifest."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasink

from nlpbatch.data.exports import EXTENSIONS
from nlpbatch.storage import with_retries

BOOKKEEPING = ("_reject", "_input", "n_tokens")  # consumed here; `source` and `line` stay as lineage


def write_table(
    table: pa.Table, filesystem, path: str, fmt: str, text_column: str = "text", task: str | None = None
) -> None:
    """One output file: Parquet, JSON Lines of the rows, or a labelling tool's import format (`data.exports`)."""
    if fmt in ("parquet", "delta"):  # delta: staged as Parquet, committed to the table by annotate/delta.py
        import pyarrow.parquet as pq

        pq.write_table(table, path, filesystem=filesystem)
        return
    rows = table.to_pylist()
    if fmt in ("spacy", "label-studio"):
        from nlpbatch.data.exports import label_studio_task, spacy_record
        from nlpbatch.tasks import get_task

        spans = get_task(task).spans
        if fmt == "spacy":
            rows = [spacy_record(row, spans(row), text_column) for row in rows]
        else:
            version = str(rows[0].get("model_version") or rows[0].get("model") or "nlpbatch") if rows else "nlpbatch"
            tasks = [label_studio_task(row, spans(row), text_column, version) for row in rows]
            with filesystem.open_output_stream(path) as out:  # Label Studio imports one JSON list of tasks
                out.write(json.dumps(tasks, ensure_ascii=False).encode("utf-8"))
            return
    with filesystem.open_output_stream(path) as out:
        for row in rows:
            out.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


class AnnotationSink(Datasink):
    def __init__(
        self,
        filesystem,
        out_path: str,
        fmt: str,
        run_id: str,
        provenance: dict,
        rows_per_file: int,
        file_prefix: str,
        text_column: str = "text",
        task: str | None = None,
    ):
        self.filesystem = filesystem
        self.out_path = out_path  # the attempt's staging prefix
        self.fmt = fmt
        self.run_id = run_id
        self.file_prefix = file_prefix  # part-<run id>-<attempt>-: the name proves whose file it is
        self.provenance = provenance
        self.rows_per_file = rows_per_file
        self.text_column = text_column  # the labelling tools' formats: the text their spans index
        self.task = task
        self.results: list[dict] = []

    @property
    def min_rows_per_write(self) -> int:
        # Ray bundles blocks up to this many rows per write task: object-store-sized files, not one per block.
        return self.rows_per_file

    def on_write_start(self, schema=None) -> None:
        for name in ("data", "rejects"):
            self.filesystem.create_dir(f"{self.out_path}/{name}", recursive=True)

    def write(self, blocks, ctx) -> dict:
        from ray.data.block import BlockAccessor

        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        result = {"rows_out": 0, "rows_rejected": 0, "tokens": 0, "seconds": {}, "files": [], "reasons": {}}
        if not tables:
            return result
        table = pa.concat_tables(tables, promote_options="default")
        timing = [c for c in table.column_names if c.startswith("_sec_")]
        result["seconds"] = {c[len("_sec_") :]: pc.sum(table[c]).as_py() or 0.0 for c in timing}
        result["tokens"] = pc.sum(table["n_tokens"]).as_py() or 0
        rejected = pc.is_valid(table["_reject"])
        good = table.filter(pc.invert(rejected)).drop_columns([*BOOKKEEPING, *timing])
        good = good.rename_columns([c.removeprefix("_keep_") for c in good.column_names])  # kept input columns
        from nlpbatch.drift import label_stats

        result["labels"] = label_stats(good.select([c for c in good.column_names if c != self.text_column]))
        for key, value in self.provenance.items():
            good = good.append_column(key, pa.array([value] * good.num_rows, pa.string()))
        bad = table.filter(rejected)
        counts = pc.value_counts(bad["_reject"]).to_pylist() if bad.num_rows else []
        top = sorted(((r["counts"], r["values"]) for r in counts), reverse=True)[:100]  # reasons may all differ
        result["reasons"] = {reason: n for n, reason in top}
        bad = pa.table(
            {
                "id": bad["id"],
                "reason": bad["_reject"],
                "input": bad["_input"],
                "source": bad["source"],
                "line": bad["line"],
                "run_id": pa.array([self.run_id] * bad.num_rows, pa.string()),
            }
        )
        for name, part in (("data", good), ("rejects", bad)):
            if part.num_rows:
                fmt = self.fmt if name == "data" else ("parquet" if self.fmt in ("parquet", "delta") else "jsonl")
                path = f"{self.out_path}/{name}/{self.file_prefix}{ctx.task_idx:06d}.{EXTENSIONS[fmt]}"
                with_retries(
                    lambda p=part, f=path, k=fmt: write_table(p, self.filesystem, f, k, self.text_column, self.task),
                    f"write {path}",
                )
                result["files"].append(path)
        result["rows_out"], result["rows_rejected"] = good.num_rows, bad.num_rows
        return result

    def on_write_complete(self, write_result) -> None:
        self.results = list(write_result.write_returns)
