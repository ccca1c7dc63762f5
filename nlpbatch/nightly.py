"""`nlpbatch nightly`: annotate the date partitions (`dt=YYYY-MM-DD/`) of a corpus whose output is missing or stale.

A partition is taken only once it is complete: with `require_input_marker`, when the upstream writer has put a
`_SUCCESS` file in it; otherwise once its day (UTC) has ended `settle_hours` ago, so today's still-filling
partition waits for a later night. A partition is done when OUTPUT/dt=D/_SUCCESS.json exists, says the run was
complete (a run that failed after publishing, e.g. over --max-reject-rate, is redone) and names the same input files
(path, size, modification time) as the partition holds now: a file that arrives or changes later makes the partition
due again. A partition written by other weights than the model's now (a registry's promotion, a retrain into the
same dir) is stale: `--model-change redo` (the default) re-annotates it, newest first, after the due ones; `keep`
leaves it. The model (a registry's current version) is resolved once per run, so one run never mixes two versions,
and every partition it writes names that version. Every due partition is tried; a partition whose output another
live run holds (an overlapping cron) is "in progress", not failed; the failures are listed and make the exit
status non-zero.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from nlpbatch.config import AnnotateConfig, ConfigError
from nlpbatch.progress import say
from nlpbatch.storage import (
    NoInputError,
    StorageError,
    file_signature,
    filesystem_for,
    join,
    list_input_infos,
    with_retries,
)

PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
INPUT_MARKER = "_SUCCESS"


def list_partitions(uri: str, s3_endpoint: str | None = None) -> list[str]:
    """Dates of the `dt=YYYY-MM-DD` folders directly under `uri`, sorted."""
    from pyarrow import fs

    filesystem, path = filesystem_for(uri, s3_endpoint)
    try:
        infos = with_retries(lambda: filesystem.get_file_info(fs.FileSelector(path)), f"list {uri}")
    except (FileNotFoundError, OSError) as err:
        raise StorageError(f"{uri}: cannot list partitions ({err})") from err
    return sorted(m.group(1) for i in infos if i.type == fs.FileType.Directory and (m := PARTITION.match(i.base_name)))


def select_dates(available: list[str], date: str | None, since: str | None, until: str | None = None) -> list[str]:
    for name, value in (("date", date), ("since", since), ("until", until)):
        if value is not None:
            try:
                dt.date.fromisoformat(value)
            except ValueError as err:
                if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):  # the shape is right: the day is not (2026-11-31)
                    raise ConfigError(f"--{name} {value}: no such date ({err})") from err
                raise ConfigError(f"--{name} {value!r}: not a date in the form YYYY-MM-DD") from err
    if date is not None:
        if date not in available:
            raise ConfigError(f"date {date}: no partition dt={date}/ in the input")
        return [date]
    return [d for d in available if (since is None or d >= since) and (until is None or d <= until)]


def is_settled(date: str, now: dt.datetime, settle_hours: float) -> bool:
    """The day has ended (UTC) at least `settle_hours` ago: its partition will not grow any more."""
    end_of_day = dt.datetime.combine(dt.date.fromisoformat(date) + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    return now >= end_of_day + dt.timedelta(hours=settle_hours)


MODEL_CHANGES = ("redo", "keep")  # --model-change


def partition_state(
    cfg: AnnotateConfig,
    date: str,
    require_input_marker: bool,
    settle_hours: float,
    now,
    model_sha256: str | None = None,
) -> str:
    """'waiting' (not complete upstream), 'empty' (complete but without input files: nothing to annotate), 'done'
    (its output names the files it holds now, written by the weights `model_sha256`), 'stale' (the same files,
    other weights) or 'due'.
    `cfg.input` / `cfg.output` are the partition's own folders."""
    from pyarrow import fs

    from nlpbatch.annotate.commit import MANIFEST
    from nlpbatch.storage import read_json

    in_fs, partition = filesystem_for(cfg.input, cfg.s3_endpoint)
    if require_input_marker:
        marker = with_retries(lambda: in_fs.get_file_info(join(partition, INPUT_MARKER)), "check input marker")
        if marker.type != fs.FileType.File:
            return "waiting"
    elif not is_settled(date, now, settle_hours):
        return "waiting"
    try:
        current = list_input_infos(cfg.input, in_fs, partition, cfg.input_format, cfg.follow_symlinks)
    except NoInputError:
        return "empty"
    out_fs, out_path = filesystem_for(cfg.output, cfg.s3_endpoint)
    manifest = read_json(out_fs, join(out_path, MANIFEST))
    if manifest is None or manifest.get("status") != "complete":
        return "due"  # never run, or failed (the run says why: an unreadable manifest is named there)
    scheme = "s3://" if cfg.input.startswith("s3://") else ""
    signature = [{**file_signature(i), "path": scheme + i.path} for i in current]
    if manifest.get("input_files") != signature:
        return "due"
    written_by = (manifest.get("provenance") or {}).get("model_sha256")
    return "stale" if model_sha256 is not None and written_by != model_sha256 else "done"


def run_nightly(
    base: AnnotateConfig,
    date: str | None = None,
    since: str | None = None,
    until: str | None = None,
    require_input_marker: bool = False,
    settle_hours: float = 0.0,
    now: dt.datetime | None = None,
    model_change: str = "redo",
) -> dict:
    """Annotate every selected partition that is due (then, with model_change "redo", every stale one, newest
    first); one partition's failure does not stop the others. Returns {dates, model_version, annotated,
    redone_for_model, skipped, waiting, empty, in_progress, failed}."""
    from nlpbatch.annotate.commit import LeaseHeldError
    from nlpbatch.annotate.pipeline import run_annotation
    from nlpbatch.models import local_model_path, model_fingerprint, model_version

    if model_change not in MODEL_CHANGES:
        raise ConfigError(f"--model-change {model_change!r}: choose one of {', '.join(MODEL_CHANGES)}")
    now = now or dt.datetime.now(dt.timezone.utc)
    dates = select_dates(list_partitions(base.input, base.s3_endpoint), date, since, until)
    # the model once for the whole run: a promotion meanwhile reaches the next run, never half of this one
    model_path = local_model_path(base.model, base.s3_endpoint)
    fingerprint = model_fingerprint(model_path)
    version = model_version(model_path, fingerprint)
    base = dataclasses.replace(base, model=model_path)
    done, redone, skipped, waiting, empty, running, failed, drifted = {}, {}, [], [], [], {}, {}, {}
    states, stale = {}, []
    for day in dates:
        try:
            states[day] = partition_state(
                _partition(base, day), day, require_input_marker, settle_hours, now, fingerprint
            )
        except Exception as err:
            failed[day] = f"{type(err).__name__}: {err}"
            say(f"nightly: dt={day} FAILED: {failed[day]}")
            continue
        if states[day] == "stale" and model_change == "redo":
            stale.append(day)
        elif states[day] != "due":
            {"done": skipped, "stale": skipped, "waiting": waiting, "empty": empty}[states[day]].append(day)
            why = {
                "done": "already complete",
                "stale": f"written by other weights than {version}, kept (--model-change keep)",
                "waiting": "waiting",
                "empty": "complete but holds no input files",
            }
            say(f"nightly: dt={day} {why[states[day]]}")
    order = [d for d in dates if states.get(d) == "due"] + sorted(stale, reverse=True)  # stale: newest first
    for day in order:
        cfg = _partition(base, day)
        try:
            if states[day] == "stale":
                say(f"nightly: re-annotating dt={day} with {version} (its output was written by other weights)")
            else:
                say(f"nightly: annotating dt={day}")
            # Delta: one table at OUTPUT partitioned by dt, this night's partition replaced (annotate/delta.py)
            manifest = run_annotation(cfg, ("dt", day) if cfg.output_format == "delta" else None)
        except LeaseHeldError as err:  # another live run (an overlapping cron) holds it: its work, not a failure
            running[day] = str(err)
            say(f"nightly: dt={day} in progress in another run: {err}")
            continue
        except Exception as err:  # the next partition still runs; the summary and exit status report this one
            failed[day] = f"{type(err).__name__}: {err}"
            say(f"nightly: dt={day} FAILED: {failed[day]}")
            continue
        result = {k: manifest[k] for k in ("run_id", "rows_in", "rows_out", "rows_rejected")}
        (redone if states[day] == "stale" else done)[day] = result
        moved = night_drift(base.output, day, base.s3_endpoint, manifest)
        if moved:
            drifted[day] = moved
            for flag in moved:
                say(f"nightly: dt={day} drift: {describe(flag)}")
    return {
        "dates": dates,
        "model_version": version,
        "annotated": done,
        "redone_for_model": redone,
        "skipped": skipped,
        "waiting": waiting,
        "empty": empty,
        "in_progress": running,
        "failed": failed,
        "drift": drifted,
    }


def _partition(base: AnnotateConfig, day: str) -> AnnotateConfig:
    return dataclasses.replace(
        base,
        input=join(base.input.rstrip("/"), f"dt={day}") + "/",
        output=join(base.output.rstrip("/"), f"dt={day}"),
        run_id=None,
    )


def night_drift(output: str, day: str, s3_endpoint: str | None = None, manifest: dict | None = None) -> list[dict]:
    """How dt=`day`'s predictions moved against the up to `drift.TRAILING` published nights before it
    (`drift.compare` over the manifests' `labels`)."""
    from nlpbatch.annotate.commit import MANIFEST
    from nlpbatch.drift import TRAILING, compare
    from nlpbatch.storage import read_json

    filesystem, root = filesystem_for(output, s3_endpoint)
    if manifest is None:
        manifest = read_json(filesystem, join(root, f"dt={day}", MANIFEST)) or {}
    earlier = [d for d in list_partitions(output, s3_endpoint) if d < day][-TRAILING:]
    before = [read_json(filesystem, join(root, f"dt={d}", MANIFEST)) or {} for d in earlier]
    before = [m["labels"] for m in before if m.get("status") == "complete" and "labels" in m]
    return compare(manifest.get("labels") or {}, before) if "labels" in manifest else []


def describe(flag: dict) -> str:
    if flag["kind"] == "share":
        return f"{flag['label']} is {flag['now']:.1%} of the predictions, {flag['before']:.1%} the nights before"
    return f"{flag['label']}'s mean score is {flag['now']:.3f}, {flag['before']:.3f} the nights before"
