"""`nlpbatch annotate`, the run: plan (`plan.py`: everything that can fail before model work) -> take the output's
lease -> stream the corpus through the stages into the run's staging prefix, with one of two runners (`ray_runner`:
Ray Data on a cluster; `local_runner`: this process) -> reconcile the counts -> publish (files moved into place,
manifest last: `commit.py`), or abort (the published output stays)."""

from __future__ import annotations

import collections
import datetime as dt
import os
import time
import uuid

from nlpbatch import __version__
from nlpbatch.annotate import local_runner, ray_runner
from nlpbatch.annotate.commit import MANIFEST, Commit, Store, acquire_lease
from nlpbatch.annotate.local_runner import annotate_texts
from nlpbatch.annotate.plan import Plan, plan_annotation, same_input
from nlpbatch.config import AnnotateConfig, ConfigError
from nlpbatch.drift import merge, summary
from nlpbatch.engines import auto_choice, engine_name
from nlpbatch.errors import RunFailed
from nlpbatch.model_card import card_defaults
from nlpbatch.models import model_fingerprint, model_version
from nlpbatch.progress import say
from nlpbatch.storage import StorageError, file_signature, filesystem_for

TOP_REASONS = 10  # reject reasons kept in the manifest, by count
__all__ = ["MANIFEST", "Plan", "annotate_texts", "plan_annotation", "run_annotation"]


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


def _check_replaces(cfg: AnnotateConfig, previous: dict | None) -> None:
    """A run replaces the published output of the same task and input; anything else needs --overwrite."""
    if previous is None or cfg.overwrite:
        return
    if previous.get("task") != cfg.task or not same_input(previous.get("input"), cfg.input):
        raise ConfigError(
            f"{cfg.output} holds the published {previous.get('task')} output of {previous.get('input')} "
            f"(run {previous.get('run_id')}); pass --overwrite to replace it with {cfg.task} of {cfg.input}"
        )


def reconcile(rows_in: int, results: list[dict], output: str) -> dict:
    """The written rows' totals, which must account for every input row before anything is published, and the
    rejects' reasons by count (most frequent first, at most TOP_REASONS)."""
    totals = {key: sum(r[key] for r in results) for key in ("rows_out", "rows_rejected", "tokens")}
    reasons = collections.Counter()
    for result in results:
        reasons.update(result.get("reasons", {}))
    totals["reject_reasons"] = dict(reasons.most_common(TOP_REASONS))
    # per label: count, share, mean score: what `nightly` compares a night with the nights before (drift.py)
    totals["labels"] = summary(merge([r.get("labels", {}) for r in results]))
    if rows_in != totals["rows_out"] + totals["rows_rejected"]:
        raise StorageError(
            f"rows do not reconcile: {rows_in} in, {totals['rows_out']} out + {totals['rows_rejected']} "
            f"rejected; nothing published, {output} still holds its previous output"
        )
    return totals


def run_annotation(cfg: AnnotateConfig, partition: tuple[str, str] | None = None) -> dict:
    """plan -> lease -> stream into staging -> reconcile -> publish (or abort: the published output stays).
    `partition` (column, value), with --output-format delta: the rows replace that partition of the table at the
    output's parent (nightly: one table for all nights)."""
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
        runner = local_runner if local else ray_runner  # the two runners share one interface: start, stream
        t_cluster = time.perf_counter()
        runner.start(cfg)
        t_stream = time.perf_counter()
        runner.stream(cfg, plan, in_fs, sink)
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

            manifest = delta.publish(commit, staged, manifest, cfg.output, cfg.s3_endpoint, partition)
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
