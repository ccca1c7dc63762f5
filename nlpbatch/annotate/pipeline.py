"""`nlpbatch annotate`: validate everything that can fail before model work, take the output's lease, stream the
corpus through read -> parse -> tokenize (CPU tasks) -> predict (actor pool) -> decode (CPU tasks) -> write into
the run's staging prefix, reconcile the counts, and publish (files moved into place, manifest last: `commit.py`)."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlpbatch import __version__
from nlpbatch.annotate.commit import MANIFEST, Commit, Store, acquire_lease
from nlpbatch.annotate.reader import check_parquet, iter_lines
from nlpbatch.config import AnnotateConfig, ConfigError
from nlpbatch.engines import auto_choice, engine_name
from nlpbatch.errors import RunFailed
from nlpbatch.model_card import card_defaults
from nlpbatch.models import local_model_path, model_fingerprint, model_version
from nlpbatch.progress import Progress, progress_mode, say
from nlpbatch.storage import (
    StorageError,
    check_reachable,
    file_signature,
    filesystem_for,
    format_of,
    input_root,
    list_input_infos,
    overlap,
)
from nlpbatch.tasks import get_task, require_task

COUNT_NOTICE_BYTES = 256 * 2**20  # inputs past this get a line before their rows are counted
__all__ = ["MANIFEST", "Plan", "annotate_texts", "plan_annotation", "run_annotation"]


def check_inputs(
    files: list[str],
    fmt: str,
    filesystem,
    columns: list[str],
    id_column: str,
    kept: list[str] = (),
    hints: dict[str, str] | None = None,
) -> int:
    """Fail fast on a file that lacks a required or kept column; return the number of input rows, counted with
    the same line splitter the read uses (the manifest's reconciliation). `hints`: per required column, the
    option that names it, for the error."""
    rows = 0
    for path in files:
        if fmt == "parquet":
            rows += check_parquet(filesystem, path, columns, optional=(id_column,), present=kept, hints=hints)
            continue
        if fmt == "csv":
            rows += _check_csv(filesystem, path, columns, kept, hints)
            continue
        wanted = list(dict.fromkeys([*columns, *kept]))
        sample: list[dict] = []
        try:
            with filesystem.open_input_stream(path, compression="detect") as fh:
                for _, line in iter_lines(fh):
                    rows += 1
                    if len(sample) < SAMPLE_RECORDS:
                        record = _record(line)
                        if record is not None:
                            sample.append(record)
        except ConfigError:
            raise
        except Exception as err:  # a truncated .gz, a file deleted meanwhile: name the file
            raise ConfigError(f"{path}: cannot be read ({type(err).__name__}: {err}); fix or remove the file") from err
        _check_keys(path, sample, wanted, hints or {})
    return rows


def _check_csv(filesystem, path: str, columns: list[str], kept: list[str], hints: dict[str, str] | None) -> int:
    """A CSV / TSV file's data rows (counted by the reader the read uses), after its header is checked for the
    required and kept columns as a Parquet file's are."""
    from nlpbatch.annotate.reader import csv_header, csv_tables, require_columns

    try:
        with filesystem.open_input_stream(path) as fh:
            header = csv_header(fh, path)
        require_columns(path, header, columns, kept, hints)
        with filesystem.open_input_stream(path) as fh:
            return sum(t.num_rows for t in csv_tables(fh, path, header, columns[:1]))
    except ConfigError:
        raise
    except Exception as err:  # pyarrow's parse errors: name the file
        raise ConfigError(f"{path}: cannot be read as CSV ({type(err).__name__}: {err}); fix or remove it") from err


SAMPLE_RECORDS = 1000  # JSON objects per file looked at for the columns
TOP_REASONS = 10  # reject reasons kept in the manifest, by count


def _record(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _check_keys(path: str, sample: list[dict], columns: list[str], hints: dict[str, str]) -> None:
    """A column that none of the file's first records has is a config error (a wrong --text-column), not 10^6
    rejects; a record that lacks it while others have it is a reject (or, for a kept column, a null), wherever it
    stands in the file."""
    missing = [column for column in columns if sample and not any(column in record for record in sample)]
    if missing:  # every missing column at once, each with the option that names it
        keys = " or ".join(repr(c) for c in missing)
        fixes = "; ".join(dict.fromkeys(hints.get(c, "check --keep-columns") for c in missing))
        raise ConfigError(
            f"{path}: none of its first {len(sample)} records has a {keys} key (keys of the first: "
            f"{', '.join(sample[0])}); {fixes}"
        )


def _columns(fmt: str, filesystem, path: str) -> set[str]:
    """The columns (keys) of an input file, from its schema, header or first record; empty when unreadable."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with filesystem.open_input_file(path) as fh:
                return set(pq.ParquetFile(fh).schema_arrow.names)
        with filesystem.open_input_stream(path, compression="detect") as fh:
            if fmt == "csv":
                from nlpbatch.annotate.reader import csv_header

                return set(csv_header(fh, path))
            for _, line in iter_lines(fh):
                return set(_record(line) or {})
    except Exception:  # a hint only: the checks above have named any real problem
        return set()
    return set()


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
    except StorageError:
        raise
    except OSError as err:
        hint = ""
        if isinstance(out_fs, fs.S3FileSystem) and not (cfg.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")):
            hint = "; for MinIO or another S3-compatible store pass --s3-endpoint URL (or set $AWS_ENDPOINT_URL)"
        raise StorageError(f"{cfg.output}: cannot be written ({err}){hint}") from err
    return out_fs, out_path


def _same_input(a: str | None, b: str) -> bool:
    """`in/`, `in` and `./in` name one input."""
    if a is None:
        return False
    if a.startswith("s3://") or b.startswith("s3://"):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.normpath(a) == os.path.normpath(b)


def _check_overlap(cfg: AnnotateConfig, in_fs, in_path: str, out_fs, out_path: str) -> None:
    """An output inside the input is read back by the next run; an input inside the output is published over."""
    if type(in_fs) is not type(out_fs):
        return
    inputs, output = input_root(in_fs, in_path), out_path
    if not cfg.input.startswith("s3://"):
        inputs, output = os.path.realpath(inputs), os.path.realpath(output)
    if overlap(inputs, output):
        raise ConfigError(
            f"--output {cfg.output} and --input {cfg.input} overlap (one lies inside the other): a run would read its "
            "own output, or publish over its input. Write the output to a folder outside the input"
        )


def _check_replaces(cfg: AnnotateConfig, previous: dict | None) -> None:
    """A run replaces the published output of the same task and input; anything else needs --overwrite."""
    if previous is None or cfg.overwrite:
        return
    if previous.get("task") != cfg.task or not _same_input(previous.get("input"), cfg.input):
        raise ConfigError(
            f"{cfg.output} holds the published {previous.get('task')} output of {previous.get('input')} "
            f"(run {previous.get('run_id')}); pass --overwrite to replace it with {cfg.task} of {cfg.input}"
        )


@dataclass(frozen=True)
class Plan:
    """Everything a run settles before any Ray work: what it reads, how many rows that is, and with which model."""

    infos: list  # the input files (pyarrow FileInfo), in reading order
    fmt: str  # "jsonl" | "parquet"
    questions: list[str] | None  # --questions: every document asked each of them
    question_column: str | None  # pair tasks without --questions: the row's own question
    required: list[str]  # the columns every row needs
    rows_in: int  # output rows the run must account for (input rows x questions)
    model_path: str  # the local model dir (a hub id fetched once here)
    model_config: Any  # its transformers config

    @property
    def files(self) -> list[str]:
        return [info.path for info in self.infos]


def plan_annotation(cfg: AnnotateConfig) -> Plan:
    """Resolve and check a run without Ray: the input files and their one format, the required columns (present in
    every file), the counted rows, the model and its card (a model of another task is refused). Everything that can
    fail before model work fails here, in seconds, naming the file or option at fault."""
    from transformers import AutoConfig

    from nlpbatch.annotate import stages

    for uri in (cfg.input, cfg.output):
        check_reachable(uri, cfg.s3_endpoint)  # seconds, not the SDK's minutes of retries
    in_fs, in_path = filesystem_for(cfg.input, cfg.s3_endpoint)
    _check_overlap(cfg, in_fs, in_path, *filesystem_for(cfg.output, cfg.s3_endpoint))
    infos = list_input_infos(cfg.input, in_fs, in_path, cfg.input_format, cfg.follow_symlinks)
    formats = {cfg.input_format or format_of(info.path) for info in infos}
    if len(formats) != 1:
        raise ConfigError(f"{cfg.input}: mixed input formats {sorted(formats)}; pass --input-format or split them")
    fmt = formats.pop()
    task = get_task(cfg.task)
    model_path = local_model_path(cfg.model, cfg.s3_endpoint)
    cfg = card_defaults(cfg, model_path)  # a pair model's second column is the card's unless given
    questions = _read_questions(cfg.questions)
    question_column = second_column(cfg, questions)
    required = [cfg.id_column, cfg.text_column] + ([question_column] if question_column else [])
    hints = {cfg.id_column: "set --id-column", cfg.text_column: "set --text-column"}
    if question_column and task.pair:
        hints[question_column] = "set --question-column, or ask every document the same questions with --questions FILE"
    elif question_column:
        hints[question_column] = "the model classifies sentence pairs: set --text-pair-column"
    size = sum(max(i.size or 0, 0) for i in infos)
    if size > COUNT_NOTICE_BYTES:  # reading every file to count its rows takes more than a few seconds
        say(f"annotate {cfg.task}: counting the rows of {len(infos)} input file(s), {size / 2**20:,.0f} MiB")
    rows_in = check_inputs([i.path for i in infos], fmt, in_fs, required, cfg.id_column, cfg.kept, hints)
    rows_in *= len(questions) if questions else 1
    if questions and task.pair and cfg.question_column in _columns(fmt, in_fs, infos[0].path):
        say(
            f"annotate {cfg.task}: --questions asks every row the file's {len(questions)} question(s); the input's "
            f"own {cfg.question_column!r} column is not used (drop --questions to ask each row its own)"
        )
    if rows_in == 0 and not cfg.allow_empty:
        raise ConfigError(
            f"{cfg.input}: no rows to annotate ({len(infos)} file(s), all empty); pass --allow-empty to publish an "
            "empty output"
        )
    require_task(cfg.model, model_path, cfg.task)
    model_config = AutoConfig.from_pretrained(model_path)
    stages.get_tokenizer(model_path)  # an unreadable tokenizer fails here, before any Ray work
    return Plan(infos, fmt, questions, question_column, required, rows_in, model_path, model_config)


def reconcile(rows_in: int, results: list[dict], output: str) -> dict:
    """The written rows' totals, which must account for every input row before anything is published, and the
    rejects' reasons by count (most frequent first, at most TOP_REASONS)."""
    totals = {key: sum(r[key] for r in results) for key in ("rows_out", "rows_rejected", "tokens")}
    reasons = collections.Counter()
    for result in results:
        reasons.update(result.get("reasons", {}))
    totals["reject_reasons"] = dict(reasons.most_common(TOP_REASONS))
    if rows_in != totals["rows_out"] + totals["rows_rejected"]:
        raise StorageError(
            f"rows do not reconcile: {rows_in} in, {totals['rows_out']} out + {totals['rows_rejected']} "
            f"rejected; nothing published, {output} still holds its previous output"
        )
    return totals


def run_annotation(cfg: AnnotateConfig) -> dict:
    """plan -> lease -> stream into staging -> reconcile -> publish (or abort: the published output stays)."""
    from nlpbatch.annotate.sink import AnnotationSink

    t0 = time.perf_counter()
    plan = plan_annotation(cfg)
    cfg = card_defaults(cfg, plan.model_path)  # the settings training chose (QA: the null threshold)
    in_fs, _ = filesystem_for(cfg.input, cfg.s3_endpoint)
    out_fs, out_path = _prepare_output(cfg)
    run_id = cfg.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    store = Store(out_fs, out_path, cfg.s3_endpoint)
    try:
        lease = acquire_lease(store, cfg.output, run_id, cfg.lease_ttl_seconds, cfg.break_lease)
    except OSError as err:
        if isinstance(err, StorageError):
            raise
        raise StorageError(
            f"{cfg.output}: cannot take the output's lease ({_os_error(err)}); nothing was changed"
        ) from err
    commit = None
    try:
        commit = Commit(out_fs, out_path, lease, cfg.retention_hours * 3600, cfg.overwrite)
        _check_replaces(cfg, commit.previous.body)
        fingerprint = model_fingerprint(plan.model_path)
        provenance = {
            "model": cfg.model,
            "model_uri": plan.model_path,  # what --model resolved to: the local dir, registry version or hub snapshot
            "model_sha256": fingerprint,
            "model_version": model_version(plan.model_path, fingerprint),
            "nlpbatch_version": __version__,
            "run_id": run_id,
        }
        t_prepare = time.perf_counter() - t0
        sink = AnnotationSink(
            out_fs,
            commit.staging,
            cfg.output_format,
            run_id,
            provenance,
            cfg.rows_per_file,
            commit.file_prefix,
            cfg.text_column,
            cfg.task,
        )
        local = cfg.local(plan.rows_in)
        t_cluster = time.perf_counter()
        if not local:
            from nlpbatch.raycluster import ensure_ray

            # a local cluster gets a CPU token beyond the actors' for the read and write tasks
            ensure_ray(int((cfg.max_actors or os.cpu_count() or 1) * cfg.cpus_per_actor) + 1)
        t_stream = time.perf_counter()
        with _progress(cfg, plan.rows_in, local) as progress:
            if local:
                _stream_here(cfg, plan, in_fs, sink, progress)
            else:
                _build_dataset(cfg, plan, in_fs, progress.counter).write_datasink(sink)
        stream_seconds = time.perf_counter() - t_stream

        try:  # checked before anything is published
            totals = reconcile(plan.rows_in, sink.results, cfg.output)
        except StorageError as err:
            raise StorageError(f"{err}{_changed_inputs(plan, in_fs)}") from err
        stage_seconds: dict[str, float] = {}
        for result in sink.results:
            for stage, seconds in result["seconds"].items():
                stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
        scheme = "s3://" if cfg.input.startswith("s3://") else ""
        failure = reject_rate_failure(plan.rows_in, totals, cfg)
        manifest = {
            # failed: published for the user to read, and redone by the next nightly run
            "status": "failed" if failure else "complete",
            **({"failure": failure} if failure else {}),
            "task": cfg.task,
            "run_id": run_id,
            "rows_in": plan.rows_in,
            **totals,
            "reconciled": True,
            "input": cfg.input,
            "input_files": [{**file_signature(i), "path": scheme + i.path} for i in plan.infos],
            "provenance": provenance,
            "runner": "local" if local else "ray",
            **_engine_fields(cfg, plan, local),
            "timings": {
                "prepare_seconds": t_prepare,
                "cluster_start_seconds": t_stream - t_cluster,  # joining or starting Ray (0: the local runner)
                "stream_seconds": stream_seconds,
                "stage_task_seconds": stage_seconds,  # summed over parallel tasks
                "docs_per_second": totals["rows_out"] / stream_seconds if stream_seconds else 0.0,
                "tokens_per_second": totals["tokens"] / stream_seconds if stream_seconds else 0.0,
            },
            "config": {k: v for k, v in vars(cfg).items()},
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        staged = sorted(f for r in sink.results for f in r["files"])
        if cfg.output_format == "delta":  # one commit of a Delta table, then the manifest
            from nlpbatch.annotate import delta

            manifest = delta.publish(commit, staged, manifest, cfg.output, cfg.s3_endpoint)
        else:
            manifest = commit.publish(staged, manifest)
    except BaseException as err:  # also Ctrl-C: this attempt's own files go, the published output stays as it was
        outcome = _abort(commit, cfg.output)
        if isinstance(err, KeyboardInterrupt):
            err.outcome = outcome  # the CLI's line after a signal says what is published
        elif isinstance(err, OSError) and not isinstance(err, StorageError):  # a full disk, a read-only folder
            raise StorageError(f"{cfg.output}: {_os_error(err)}; {outcome}") from err
        raise
    finally:
        _release(lease, cfg)
    reasons = "; ".join(f"{reason}: {n}" for reason, n in list(totals["reject_reasons"].items())[:3])
    say(
        f"annotate {cfg.task}: {plan.rows_in} rows in, {totals['rows_out']} annotated, "
        f"{totals['rows_rejected']} rejected{f' ({reasons})' if reasons else ''}, "
        f"{manifest['timings']['tokens_per_second']:.0f} tokens/s"
    )
    if failure:
        raise RunFailed(failure)
    return manifest


def _engine_fields(cfg: AnnotateConfig, plan: Plan, local: bool) -> dict:
    """The manifest's `engine` (what the engines ran) and, for `--backend auto` on CPU, `engine_choice`: why."""
    threads = 1 if local else max(1, int(cfg.cpus_per_actor))  # each engine's threads, as the runners set them
    gpu = cfg.num_gpus > 0
    fields = {"engine": engine_name(plan.model_path, cfg.backend, gpu, cfg.packing, cfg.task, threads)}
    if cfg.backend == "auto" and not gpu and cfg.packing != "on":
        fields["engine_choice"] = auto_choice(plan.model_path, cfg.task, threads)[1]
    return fields


def _abort(commit: Commit | None, output: str) -> str:
    """Remove what an attempt that did not publish wrote; return what is published now, in words."""
    if commit is None:
        return f"nothing was published; {output} is as it was"
    commit.abort()
    return commit.outcome()


def _release(lease, cfg: AnnotateConfig) -> None:
    """Release the lease; a failure to (a read-only or full store) is said, never raised over the run's outcome."""
    try:
        lease.release()
    except Exception as err:
        say(
            f"{cfg.output}: the lease could not be released ({_os_error(err)}); the next run takes it over "
            f"{cfg.lease_ttl_seconds:.0f} s after its last renewal, or at once with --break-lease"
        )


def _os_error(err: BaseException) -> str:
    """An OSError in words: its message and, for a full disk or a read-only folder, what to do."""
    import errno

    hints = {
        errno.ENOSPC: "the disk is full: free space and run again",
        errno.EROFS: "the file system is read-only: write the output elsewhere",
        errno.EACCES: "permission denied: check who owns the output folder",
        errno.EDQUOT: "the disk quota is exceeded: free space and run again",
    }
    text = f"{type(err).__name__}: {err}"
    hint = hints.get(getattr(err, "errno", None))
    return f"{text} ({hint})" if hint else text


def _changed_inputs(plan: Plan, in_fs) -> str:
    """The input files that changed since they were listed (the usual reason rows do not reconcile), in words."""
    changed = []
    for info in plan.infos:
        try:
            now = in_fs.get_file_info(info.path)
        except OSError:
            now = None
        if now is None or now.size != info.size or now.mtime != info.mtime:
            size = "gone" if now is None or now.size is None or now.size < 0 else f"{now.size:,} bytes now"
            changed.append(f"{info.path} ({info.size:,} bytes when listed, {size})")
    if not changed:
        return ""
    return (
        f". These input files changed during the run: {'; '.join(changed[:5])}. Annotate a file once its writer has "
        "finished (nightly: --require-input-marker, or --settle-hours)"
    )


def reject_rate_failure(rows_in: int, totals: dict, cfg: AnnotateConfig) -> str | None:
    """Why a run whose rejects exceed --max-reject-rate fails (a wrong column, a corpus of another shape), or None.
    Its rejects, with their reasons, are still published for the user to read."""
    rejected = totals["rows_rejected"]
    if not rows_in or rejected / rows_in <= cfg.max_reject_rate:
        return None
    reasons = "; ".join(f"{reason}: {n}" for reason, n in totals.get("reject_reasons", {}).items())
    return (
        f"{rejected} of {rows_in} rows rejected ({rejected / rows_in:.0%}, over --max-reject-rate "
        f"{cfg.max_reject_rate}); top reasons: {reasons}. The rejects are published in {cfg.output} (rejects/; "
        f"`nlpbatch show {cfg.output}`); raise --max-reject-rate if this is expected"
    )


def decode_and_count(batch, decode, counter, **options):
    """The split layout's decode task, which also tells the progress counter what it finished."""
    from nlpbatch.annotate.predictors import count_done

    return count_done(decode(batch, **options), counter)


class _progress:
    """Around the streaming write: rows annotated out of the counted rows_in, with ETA and tokens/s (a bar on a
    terminal, a line every 30 s otherwise, nothing with --quiet), counted where the rows are annotated (the
    inference actors, or the decode tasks after them), not where they are written: the writer bundles rows into
    large files and would report them all at the end. Ray Data's own per-operator status is turned off: in a log
    it is a 10-line block every 10 s that never knows the total."""

    def __init__(self, cfg: AnnotateConfig, rows_in: int, local: bool = False):
        import logging

        self.mode, self.stop = progress_mode(cfg.quiet), threading.Event()
        self.bar = Progress(f"annotate {cfg.task}", rows_in, "rows", self.mode)
        self.counter, self.local = None, local
        if local:  # the local runner tells `done` itself
            from nlpbatch.annotate.predictors import RowCounter

            self.totals = RowCounter()
            return
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled" notice
        if self.mode != "quiet":
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # on the driver's node: a lost worker node must not take the job's progress with it
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
            from nlpbatch.annotate.predictors import RowCounter

            self.counter = ray.remote(num_cpus=0, scheduling_strategy=here)(RowCounter).remote()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop.wait(1.0):
            self._refresh()

    def _refresh(self) -> None:
        import ray

        try:
            rows, rejected, tokens = ray.get(self.counter.totals.remote(), timeout=30)
        except (ray.exceptions.RayError, TimeoutError):  # progress is a view: it never fails the job
            return
        elapsed = time.perf_counter() - self.bar.t0
        self.bar.update(rows - self.bar.n, rejected=rejected, tokens=f"{tokens / elapsed:,.0f}/s")

    def done(self, batch) -> None:
        """The local runner's annotated batch (the streaming job's actors tell the counter instead)."""
        from nlpbatch.annotate.predictors import count_done

        count_done(batch, self.totals)
        rows, rejected, tokens = self.totals.totals()
        elapsed = time.perf_counter() - self.bar.t0
        self.bar.update(rows - self.bar.n, rejected=rejected, tokens=f"{tokens / elapsed:,.0f}/s")

    def __enter__(self):
        if self.counter is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.local:
            self.bar.close()
            return
        if self.counter is None:
            return
        self.stop.set()
        self.thread.join()
        if exc[0] is None:
            self._refresh()
        self.bar.close()


def second_column(cfg: AnnotateConfig, questions: list[str] | None) -> str | None:
    """The input column of a row's second input: a QA question (unless --questions asks every document the same
    ones), or the second text of a sentence pair (`text_pair_column`, for a model trained on pairs)."""
    if get_task(cfg.task).pair:
        return cfg.question_column if questions is None else None
    return cfg.text_pair_column or None  # "": single texts, even for a pair model


def _parse_options(cfg: AnnotateConfig, fmt: str, question_column: str | None, questions: list[str] | None) -> dict:
    """`stages.parse_rows`' keyword arguments."""
    return {
        "second": "question" if get_task(cfg.task).pair else "text pair",
        "fmt": fmt,
        "id_column": cfg.id_column,
        "text_column": cfg.text_column,
        "question_column": question_column,
        "questions": questions,
        "max_chars": cfg.max_chars,
        "keep": cfg.kept,
    }


def _build_dataset(cfg: AnnotateConfig, plan: Plan, in_fs, counter=None):
    """read (CPU tasks) -> [parse -> tokenize -> predict -> decode] with predict in an actor pool: fused into the
    actors on CPU, around them as CPU tasks when the actors hold GPUs (config.AnnotateConfig.fused)."""
    import ray

    from nlpbatch.annotate import stages
    from nlpbatch.annotate.predictors import Annotator, Predictor
    from nlpbatch.annotate.reader import CsvRows, JsonlLines, ParquetRowGroups

    resources = ray.cluster_resources()
    actors = max(cfg.min_actors or 1, cfg.actors(resources.get("CPU", 1), resources.get("GPU", 0)))
    batch_rows = cfg.rows_per_batch(plan.rows_in, actors)
    columns = list(dict.fromkeys([*plan.required, *cfg.kept]))
    if plan.fmt == "parquet":
        source = ParquetRowGroups(plan.files, columns=columns, filesystem=in_fs, include_paths=True)
    elif plan.fmt == "csv":
        source = CsvRows(plan.files, columns, cfg.csv_max_value_lines, filesystem=in_fs, include_paths=True)
    else:
        source = JsonlLines(plan.files, filesystem=in_fs, include_paths=True)
    ds = ray.data.read_datasource(source)
    parse = _parse_options(cfg, plan.fmt, plan.question_column, plan.questions)
    engine = {
        "model_path": plan.model_path,
        "batch_tokens": cfg.tokens_per_batch,
        "backend": cfg.backend,
        "threads": max(1, int(cfg.cpus_per_actor)),  # one engine thread per CPU the actor holds
        "packing": cfg.packing,
    }
    pool = {
        # a fixed pool unless --min-actors asks for an autoscaling one
        "compute": ray.data.ActorPoolStrategy(
            min_size=cfg.min_actors or actors,
            max_size=actors,
            # a GPU actor gets its next batch while it works on this one, so it never waits for the tokenize tasks
            max_tasks_in_flight_per_actor=4 if cfg.num_gpus > 0 else None,
        ),
        "batch_size": batch_rows,
        "batch_format": "pyarrow",
        "num_gpus": cfg.num_gpus,
        "num_cpus": cfg.cpus_per_actor,
    }
    if cfg.fused:
        # raw rows split into small blocks (a streaming repartition, cheap): every actor of the pool gets work
        ds = ds.repartition(target_num_rows_per_block=batch_rows)
        args = {
            **_annotator_args(cfg, plan.model_path, plan.model_config, parse, engine["threads"]),
            "counter": counter,
        }
        return ds.map_batches(Annotator, fn_constructor_kwargs=args, **pool)
    tokenize = {"max_length": cfg.window, "stride": cfg.stride, "words": cfg.words}
    task = get_task(cfg.task)
    decode = task.decode_options(cfg, plan.model_config)
    ds = ds.map_batches(stages.parse_rows, batch_format="pyarrow", fn_kwargs=parse)
    ds = ds.map_batches(
        stages.tokenize,
        batch_format="pyarrow",
        batch_size=256,
        fn_kwargs={"task": cfg.task, "model_path": plan.model_path, **tokenize},
    )
    # Streaming split into small blocks: every actor of the pool gets work (a small file is one block), and
    # tokenization stays in CPU tasks instead of being fused into the inference actors.
    ds = ds.repartition(target_num_rows_per_block=batch_rows)
    args = {"task": cfg.task, **engine, "use_gpu": cfg.num_gpus > 0}
    ds = ds.map_batches(Predictor, fn_constructor_kwargs=args, **pool)
    if counter is None:
        return ds.map_batches(task.decode, batch_format="pyarrow", fn_kwargs=decode)
    options = {"decode": task.decode, "counter": counter, **decode}
    return ds.map_batches(decode_and_count, batch_format="pyarrow", fn_kwargs=options)


def _stream_here(cfg: AnnotateConfig, plan: Plan, in_fs, sink, progress: _progress) -> None:
    """The local runner: the streaming job's read, fused stages and sink in this process. One engine thread per
    core, each with its own engine session and tokenizer (ONNX Runtime, torch and the Rust tokenizer release the
    GIL), annotating batches side by side; the results are written in input order, a file of about rows_per_file
    rows at a time, with a bounded number of batches in flight (memory stays bounded for any input)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from nlpbatch.annotate.predictors import Annotator
    from nlpbatch.annotate.reader import read_file

    workers = cfg.max_actors or max(1, os.cpu_count() or 1)
    say(f"annotate {cfg.task}: {plan.rows_in} rows, run in this process on {workers} threads (--runner ray: a cluster)")
    parse = _parse_options(cfg, plan.fmt, plan.question_column, plan.questions)
    # one engine thread each: the threads run batches side by side, as the actors of a cluster do
    options = _annotator_args(cfg, plan.model_path, plan.model_config, parse, threads=1)
    mine = threading.local()

    def annotate(batch):
        if not hasattr(mine, "annotator"):  # loaded once per thread
            mine.annotator = Annotator(**options)
        return mine.annotator(batch)

    columns = list(dict.fromkeys([*plan.required, *cfg.kept]))
    batch_rows = cfg.rows_per_batch(plan.rows_in, workers)
    sink.on_write_start()
    results, pending, running = [], [], deque()

    def write() -> None:  # one output file (and one of rejects) of the pending batches
        results.append(sink.write(pending, SimpleNamespace(task_idx=len(results))))
        pending.clear()

    def finish(keep: int) -> None:
        """Collect annotated batches, oldest first, until at most `keep` are in flight; write full files."""
        while len(running) > keep:
            pending.append(running.popleft().result())
            progress.done(pending[-1])
            if sum(t.num_rows for t in pending) >= cfg.rows_per_file:
                write()

    with ThreadPoolExecutor(workers, thread_name_prefix="nlpbatch-annotate") as pool:
        try:
            for path in plan.files:
                for block in read_file(plan.fmt, in_fs, path, columns, cfg.csv_max_value_lines):
                    for start in range(0, block.num_rows, batch_rows):
                        running.append(pool.submit(annotate, block.slice(start, batch_rows)))
                        finish(2 * workers)
            finish(0)
        except BaseException:  # a failure or a stop: batches not started are dropped, running ones end
            pool.shutdown(cancel_futures=True)
            raise
    if pending:
        write()
    sink.results = results


def in_process_annotator(cfg: AnnotateConfig, model_path: str, own_columns: bool = False):
    """The fused layout's Annotator (parse -> tokenize -> predict -> decode, the stage functions of the streaming
    job) for this process, over JSONL rows `{"id", "text"(, "question")}` (`own_columns`: the columns `cfg`
    names, kept columns too); the engine is loaded once, here."""
    from transformers import AutoConfig

    from nlpbatch.annotate.predictors import Annotator

    questions = _read_questions(cfg.questions)
    question_column = second_column(cfg, questions)
    question_column = question_column if own_columns or question_column is None else "question"
    parse = _parse_options(cfg, "jsonl", question_column, questions)
    if not own_columns:
        parse = {**parse, "id_column": "id", "text_column": "text", "keep": []}
    # threads None: the engine's own thread count, all of this process's cores
    return Annotator(**_annotator_args(cfg, model_path, AutoConfig.from_pretrained(model_path), parse, threads=None))


def _annotator_args(cfg: AnnotateConfig, model_path: str, model_config, parse: dict, threads: int | None) -> dict:
    """`predictors.Annotator`'s keyword arguments for this config: the fused stages in an actor, a thread of the
    local runner or the caller's process."""
    return {
        "task": cfg.task,
        "model_path": model_path,
        "batch_tokens": cfg.tokens_per_batch,
        "backend": cfg.backend,
        "threads": threads,
        "packing": cfg.packing,
        "parse": parse,
        "tokenize": {"max_length": cfg.window, "stride": cfg.stride, "words": cfg.words},
        "decode": get_task(cfg.task).decode_options(cfg, model_config),
    }


def annotate_rows(annotator, texts: list[str], questions: list[str] | None = None, ids: list[str] | None = None):
    """Output rows (rejects included, internal columns too) of texts run through an in-process annotator."""
    import pyarrow as pa

    ids = ids or [str(i) for i in range(len(texts))]
    lines = [
        json.dumps({"id": i, "text": t, **({"question": questions[n]} if questions else {})}).encode()
        for n, (i, t) in enumerate(zip(ids, texts))
    ]
    return output_rows(annotator(pa.table({"raw": pa.array(lines, pa.binary())})))


def output_rows(table) -> list[dict]:
    """An in-process annotator's output as rows, without the per-stage timing columns."""
    return table.select([c for c in table.column_names if not c.startswith("_sec_")]).to_pylist()


def annotate_texts(cfg: AnnotateConfig, texts: list[str], questions: list[str] | None = None) -> list[dict]:
    """The streaming job's stages in this process, without Ray: the single-process reference for the streaming
    job. Returns one output row per text (rejects included)."""
    model_path = local_model_path(cfg.model, cfg.s3_endpoint)
    cfg = card_defaults(cfg, model_path)
    return annotate_rows(in_process_annotator(cfg, model_path), texts, questions)
