"""`nlpbatch annotate`: validate everything that can fail before model work, then stream the corpus through
read -> parse -> tokenize (CPU tasks) -> predict (actor pool) -> decode (CPU tasks) -> write, and publish a
`_SUCCESS.json` manifest last."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from pathlib import Path

from nlpbatch import __version__
from nlpbatch.config import AnnotateConfig, ConfigError
from nlpbatch.storage import StorageError, filesystem_for, format_of, join, list_inputs

MANIFEST = "_SUCCESS.json"


def model_fingerprint(model_path: str) -> str:
    """sha256 over the weight files, so every output row says exactly which weights produced it."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(model_path).iterdir() if p.suffix in (".safetensors", ".bin"))
    for path in files:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16] if files else "unknown"


def _local_model_path(model: str) -> str:
    from nlpbatch.models import resolve_model

    path = resolve_model(model)
    if not Path(path).is_dir():  # a hub id: fetch once here so every actor reads the same local snapshot
        from huggingface_hub import snapshot_download

        path = snapshot_download(path)
    return path


def check_inputs(files: list[str], fmt: str, filesystem, columns: list[str]) -> int:
    """Fail fast on a file that lacks a required column; return the number of input rows (for the manifest's
    reconciliation, counted independently of the pipeline)."""
    import pyarrow.parquet as pq

    rows = 0
    for path in files:
        if fmt == "parquet":
            with filesystem.open_input_file(path) as fh:
                meta = pq.ParquetFile(fh)
                missing = [c for c in columns if c not in meta.schema_arrow.names]
                rows += meta.metadata.num_rows
            if missing:
                raise ConfigError(f"{path}: no column {missing[0]!r} (columns: {', '.join(meta.schema_arrow.names)})")
            continue
        checked = False
        with filesystem.open_input_stream(path, compression="detect") as fh:
            for line in _nonempty_lines(fh):
                rows += 1
                if not checked:
                    checked = _check_first_record(path, line, columns)
    return rows


def _nonempty_lines(stream, chunk_size: int = 1 << 20):
    """Non-empty lines of a byte stream, read in chunks so a large file never sits in memory whole (the same
    lines Ray's read_text yields: split on newlines, empty ones dropped)."""
    pending = b""
    while chunk := stream.read(chunk_size):
        *lines, pending = (pending + chunk).split(b"\n")
        yield from (line for line in lines if line)
    if pending:
        yield pending


def _check_first_record(path: str, line: bytes, columns: list[str]) -> bool:
    """True once a JSON object has been seen (and has every column); a bad line is a reject, not a file error."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    if not isinstance(record, dict):
        return False
    missing = [c for c in columns if c not in record]
    if missing:
        raise ConfigError(f"{path}: first record has no {missing[0]!r} key (keys: {', '.join(record)})")
    return True


def _read_questions(path: str | None) -> list[str] | None:
    if path is None:
        return None
    questions = [q.strip() for q in Path(path).read_text(encoding="utf-8").splitlines() if q.strip()]
    if not questions:
        raise ConfigError(f"{path}: no questions (one per line)")
    return questions


def _prepare_output(cfg: AnnotateConfig):
    from pyarrow import fs

    out_fs, out_path = filesystem_for(cfg.output, cfg.s3_endpoint)
    try:
        if isinstance(out_fs, fs.S3FileSystem):
            bucket = out_path.split("/", 1)[0]
            if out_fs.get_file_info(bucket).type == fs.FileType.NotFound:
                raise StorageError(f"{cfg.output}: bucket {bucket!r} does not exist")
        out_fs.create_dir(out_path, recursive=True)
        manifest = join(out_path, MANIFEST)
        if out_fs.get_file_info(manifest).type == fs.FileType.File:
            out_fs.delete_file(manifest)  # the output is incomplete until this run writes a new one
    except StorageError:
        raise
    except OSError as err:
        raise StorageError(f"{cfg.output}: cannot be written ({err})") from err
    return out_fs, out_path


def _remove_stale_parts(out_fs, out_path: str, keep: set[str]) -> int:
    """After a complete write, drop every part file this run did not report: earlier runs' (a rerun replaces,
    never duplicates) and any a lost write task left half-written before its retry."""
    from pyarrow import fs

    removed = 0
    for sub in ("data", "rejects"):
        selector = fs.FileSelector(join(out_path, sub), allow_not_found=True)
        for info in out_fs.get_file_info(selector):
            if info.type == fs.FileType.File and info.path not in keep:
                out_fs.delete_file(info.path)
                removed += 1
    return removed


def run_annotation(cfg: AnnotateConfig) -> dict:
    import ray
    from transformers import AutoConfig

    from nlpbatch.annotate import stages
    from nlpbatch.annotate.predictors import NerPredictor, QaPredictor
    from nlpbatch.annotate.sink import AnnotationSink
    from nlpbatch.train.trainer import ensure_ray

    t0 = time.perf_counter()
    in_fs, in_path = filesystem_for(cfg.input, cfg.s3_endpoint)
    files = list_inputs(cfg.input, in_fs, in_path, cfg.input_format)
    formats = {cfg.input_format or format_of(f) for f in files}
    if len(formats) != 1:
        raise ConfigError(f"{cfg.input}: mixed input formats {sorted(formats)}; pass --input-format or split them")
    fmt = formats.pop()
    questions = _read_questions(cfg.questions)
    question_column = cfg.question_column if cfg.task == "qa" and questions is None else None
    required = [cfg.id_column, cfg.text_column] + ([question_column] if question_column else [])
    rows_in = check_inputs(files, fmt, in_fs, required) * (len(questions) if questions else 1)

    model_path = _local_model_path(cfg.model)
    model_config = AutoConfig.from_pretrained(model_path)
    stages.get_tokenizer(model_path)  # an unreadable tokenizer fails here, before any Ray work
    out_fs, out_path = _prepare_output(cfg)
    run_id = cfg.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    provenance = {
        "model": cfg.model,
        "model_sha256": model_fingerprint(model_path),
        "nlpbatch_version": __version__,
        "run_id": run_id,
    }
    t_prepare = time.perf_counter() - t0

    ensure_ray(int(cfg.max_actors * cfg.cpus_per_actor) + 1)
    if fmt == "parquet":
        ds = ray.data.read_parquet(files, filesystem=in_fs, columns=required, include_paths=True)
    else:
        ds = ray.data.read_text(files, filesystem=in_fs, include_paths=True)
    ds = ds.map_batches(
        stages.parse_rows,
        batch_format="pyarrow",
        fn_kwargs={
            "fmt": fmt,
            "id_column": cfg.id_column,
            "text_column": cfg.text_column,
            "question_column": question_column,
            "questions": questions,
            "max_chars": cfg.max_chars,
        },
    )
    ds = ds.map_batches(
        stages.tokenize,
        batch_format="pyarrow",
        batch_size=256,
        fn_kwargs={"task": cfg.task, "model_path": model_path, "max_length": cfg.window, "stride": cfg.stride},
    )
    # Streaming split into small blocks: every actor of the pool gets work (a small file is one block), and
    # tokenization stays in CPU tasks instead of being fused into the inference actors.
    ds = ds.repartition(target_num_rows_per_block=cfg.batch_rows)
    predictor = QaPredictor if cfg.task == "qa" else NerPredictor
    ds = ds.map_batches(
        predictor,
        fn_constructor_kwargs={"model_path": model_path, "batch_tokens": cfg.batch_tokens, "use_gpu": cfg.num_gpus > 0},
        compute=ray.data.ActorPoolStrategy(min_size=cfg.min_actors, max_size=cfg.max_actors),
        batch_size=cfg.batch_rows,
        batch_format="pyarrow",
        num_gpus=cfg.num_gpus,
        num_cpus=cfg.cpus_per_actor,
    )
    if cfg.task == "qa":
        ds = ds.map_batches(
            stages.decode_qa,
            batch_format="pyarrow",
            fn_kwargs={"n_best": cfg.n_best, "max_answer_length": cfg.max_answer_length},
        )
    else:
        id2label = {int(k): v for k, v in model_config.id2label.items()}
        ds = ds.map_batches(
            stages.decode_ner, batch_format="pyarrow", fn_kwargs={"id2label": id2label, "aggregation": cfg.aggregation}
        )
    sink = AnnotationSink(out_fs, out_path, cfg.output_format, run_id, provenance)
    t_stream = time.perf_counter()
    ds.write_datasink(sink)
    stream_seconds = time.perf_counter() - t_stream
    removed = _remove_stale_parts(out_fs, out_path, {f for r in sink.results for f in r["files"]})

    totals = {key: sum(r[key] for r in sink.results) for key in ("rows_out", "rows_rejected", "tokens")}
    stage_seconds: dict[str, float] = {}
    for result in sink.results:
        for stage, seconds in result["seconds"].items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
    manifest = {
        "status": "complete",
        "task": cfg.task,
        "run_id": run_id,
        "rows_in": rows_in,
        **totals,
        "reconciled": rows_in == totals["rows_out"] + totals["rows_rejected"],
        "input": cfg.input,
        "input_files": [f"s3://{f}" if cfg.input.startswith("s3://") else f for f in files],
        "output_files": sorted(f for r in sink.results for f in r["files"]),
        "removed_files_of_earlier_runs": removed,
        "provenance": provenance,
        "timings": {
            "prepare_seconds": t_prepare,
            "stream_seconds": stream_seconds,
            "stage_task_seconds": stage_seconds,  # summed over parallel tasks
            "docs_per_second": totals["rows_out"] / stream_seconds if stream_seconds else 0.0,
            "tokens_per_second": totals["tokens"] / stream_seconds if stream_seconds else 0.0,
        },
        "config": {k: v for k, v in vars(cfg).items()},
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    if not manifest["reconciled"]:
        raise RuntimeError(
            f"rows do not reconcile: {rows_in} in, {totals['rows_out']} out + "
            f"{totals['rows_rejected']} rejected; no manifest written"
        )
    with out_fs.open_output_stream(join(out_path, MANIFEST)) as fh:
        fh.write(json.dumps(manifest, indent=2).encode("utf-8"))
    print(
        f"[nlpbatch] annotate {cfg.task}: {rows_in} rows in, {totals['rows_out']} annotated, "
        f"{totals['rows_rejected']} rejected, {manifest['timings']['tokens_per_second']:.0f} tokens/s",
        flush=True,
    )
    return manifest


def annotate_texts(cfg: AnnotateConfig, texts: list[str], questions: list[str] | None = None) -> list[dict]:
    """The same stages in this process, without Ray: the single-process reference for the streaming job, and a
    quick way to annotate a few texts from Python. Returns one output row per text (rejects included)."""
    import pyarrow as pa
    from transformers import AutoConfig

    from nlpbatch.annotate import stages
    from nlpbatch.annotate.predictors import NerPredictor, QaPredictor

    model_path = _local_model_path(cfg.model)
    rows = [
        json.dumps({"id": str(i), "text": t, **({"question": questions[i]} if questions else {})})
        for i, t in enumerate(texts)
    ]
    table = stages.parse_rows(
        pa.table({"text": rows}), "jsonl", "id", "text", "question" if cfg.task == "qa" else None, None, cfg.max_chars
    )
    table = stages.tokenize(table.drop_columns(["_sec_parse"]), cfg.task, model_path, cfg.window, cfg.stride)
    if cfg.task == "qa":
        table = QaPredictor(model_path, cfg.batch_tokens)(table)
        table = stages.decode_qa(table, cfg.n_best, cfg.max_answer_length)
    else:
        table = NerPredictor(model_path, cfg.batch_tokens)(table)
        id2label = {int(k): v for k, v in AutoConfig.from_pretrained(model_path).id2label.items()}
        table = stages.decode_ner(table, id2label, cfg.aggregation)
    return table.select([c for c in table.column_names if not c.startswith("_sec_")]).to_pylist()
