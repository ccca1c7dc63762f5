"""`nlpbatch nightly`: annotate the date partitions (`dt=YYYY-MM-DD/`) of a corpus that have no complete output yet.

A partition is done when OUTPUT/dt=D/_SUCCESS.json exists (the manifest is written last). Re-running a finished
night is a no-op; a night that crashed half way has no manifest and is annotated again, and the rerun replaces the
crashed run's part files, so every input row ends up annotated exactly once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from nlpbatch.config import AnnotateConfig, ConfigError
from nlpbatch.storage import StorageError, filesystem_for, join

PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


def list_partitions(uri: str, s3_endpoint: str | None = None) -> list[str]:
    """Dates of the `dt=YYYY-MM-DD` folders directly under `uri`, sorted."""
    from pyarrow import fs

    filesystem, path = filesystem_for(uri, s3_endpoint)
    try:
        infos = filesystem.get_file_info(fs.FileSelector(path))
    except (FileNotFoundError, OSError) as err:
        raise StorageError(f"{uri}: cannot list partitions ({err})") from err
    return sorted(m.group(1) for i in infos if i.type == fs.FileType.Directory and (m := PARTITION.match(i.base_name)))


def is_done(output_uri: str, date: str, s3_endpoint: str | None = None) -> bool:
    from pyarrow import fs

    from nlpbatch.annotate.pipeline import MANIFEST

    filesystem, path = filesystem_for(output_uri, s3_endpoint)
    return filesystem.get_file_info(join(path, f"dt={date}", MANIFEST)).type == fs.FileType.File


def select_dates(available: list[str], date: str | None, since: str | None, until: str | None = None) -> list[str]:
    for name, value in (("date", date), ("since", since), ("until", until)):
        if value is not None:
            try:
                dt.date.fromisoformat(value)
            except ValueError as err:
                raise ConfigError(f"{name}: {value!r} is not YYYY-MM-DD") from err
    if date is not None:
        if date not in available:
            raise ConfigError(f"date {date}: no partition dt={date}/ in the input")
        return [date]
    return [d for d in available if (since is None or d >= since) and (until is None or d <= until)]


def run_nightly(
    base: AnnotateConfig, date: str | None = None, since: str | None = None, until: str | None = None
) -> dict:
    """Annotate every selected partition that is not done; returns what was done and skipped."""
    from nlpbatch.annotate.pipeline import run_annotation

    dates = select_dates(list_partitions(base.input, base.s3_endpoint), date, since, until)
    done, skipped = {}, []
    for day in dates:
        if is_done(base.output, day, base.s3_endpoint):
            skipped.append(day)
            print(f"[nlpbatch] nightly: dt={day} already complete, skipped", flush=True)
            continue
        cfg = dataclasses.replace(
            base,
            input=join(base.input.rstrip("/"), f"dt={day}") + "/",
            output=join(base.output.rstrip("/"), f"dt={day}"),
            run_id=None,
        )
        print(f"[nlpbatch] nightly: annotating dt={day}", flush=True)
        manifest = run_annotation(cfg)
        done[day] = {k: manifest[k] for k in ("run_id", "rows_in", "rows_out", "rows_rejected")}
    return {"dates": dates, "annotated": done, "skipped": skipped}
