"""How an annotation run owns, fills and publishes its output, so that no row is lost or duplicated and the last
good output survives every failure (Spark's file-commit protocol with a Delta-style manifest):

    OUTPUT/_LEASE.json                        one writer at a time: holder's run id, start, expiry (renewed)
    OUTPUT/_staging/<run_id>/{data,rejects}/  the run's files while it works ('_' prefix: readers skip it)
    OUTPUT/{data,rejects}/part-<run_id>-*     the published files
    OUTPUT/_SUCCESS.json                      the manifest, written last: the exact list of the current files

A run takes the lease (a conditional create: on S3 `If-None-Match: *`, locally a hard link), writes under its
staging prefix, reconciles its counts, moves its files into place, writes the manifest, and only then deletes the
files the replaced manifest named and the orphans of this output's own earlier failed runs. A refused, failed or
killed run leaves the published output as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from nlpbatch.progress import say
from nlpbatch.storage import StorageError, join, put_bytes, read_json, s3_client, with_retries, write_json

LEASE = "_LEASE.json"
MANIFEST = "_SUCCESS.json"
STAGING = "_staging"
KINDS = ("data", "rejects")


class LeaseHeldError(StorageError):
    """Another run holds the output; the message names it and how to proceed."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _is_s3(filesystem) -> bool:
    from pyarrow import fs

    return isinstance(filesystem, fs.S3FileSystem)


@dataclass
class Lease:
    """A held lease; a daemon thread renews it every ttl/3 while the run works."""

    filesystem: object
    out_path: str
    s3_endpoint: str | None
    body: dict
    etag: str | None = None
    lost: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def path(self) -> str:
        return join(self.out_path, LEASE)

    def _body(self, ttl: float) -> dict:
        now = _now()
        return {**self.body, "renewed_at": now.isoformat(), "expires_at": (now + dt.timedelta(seconds=ttl)).isoformat()}

    def renew(self) -> None:
        body = self._body(self.body["ttl_seconds"])
        if _is_s3(self.filesystem):
            etag = _create_exclusive(
                self.filesystem, self.path, json.dumps(body).encode(), self.s3_endpoint, if_match=self.etag
            )
            if etag is None:  # the version we wrote is gone: somebody broke our lease
                self.lost = "the lease was taken over"
                return
            self.etag = etag
        else:
            current = read_json(self.filesystem, self.path)
            if not current or current.get("run_id") != self.body["run_id"]:
                self.lost = f"the lease now names run {current and current.get('run_id')}"
                return
            write_json(self.filesystem, self.path, body)
        self.body = body

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.body["ttl_seconds"] / 3):
                try:
                    self.renew()
                except Exception as err:  # keep trying: the lease is only lost once it has expired
                    say(f"lease renewal failed: {err}")
                if self.lost:
                    return

        threading.Thread(target=beat, name="nlpbatch-lease", daemon=True).start()

    def check(self) -> None:
        """Raise unless this run still holds the lease (checked right before publishing)."""
        current = read_json(self.filesystem, self.path)
        if self.lost or not current or current.get("run_id") != self.body["run_id"]:
            holder = current.get("run_id") if current else None
            raise LeaseHeldError(
                f"{self.body['output']}: run {self.body['run_id']} lost its lease"
                + (f" to run {holder}" if holder else "")
                + "; nothing was published, the previous output is untouched"
            )

    def release(self) -> None:
        self._stop.set()
        current = read_json(self.filesystem, self.path)
        if current and current.get("run_id") == self.body["run_id"]:
            with_retries(lambda: self.filesystem.delete_file(self.path), f"delete {self.path}")


def _create_exclusive(filesystem, path: str, data: bytes, s3_endpoint: str | None, if_match: str | None = None):
    """Create `path` only if it does not exist (or, with `if_match`, replace exactly that version). Returns the
    new ETag on S3, True locally, or None when another writer got there first."""
    if _is_s3(filesystem):
        bucket, key = path.split("/", 1)
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            return s3_client(s3_endpoint).put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"]
        except Exception as err:
            if any(code in str(err) for code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")):
                return None
            raise
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    put_bytes(filesystem, tmp, data)
    try:
        if if_match:
            os.replace(tmp, path)  # local break: one machine, the caller re-reads to confirm
            return True
        os.link(tmp, path)  # atomic and exclusive: fails if the lease exists
        return True
    except FileExistsError:
        return None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _etag(filesystem, path: str, s3_endpoint: str | None) -> str | None:
    if not _is_s3(filesystem):
        return "local"
    bucket, key = path.split("/", 1)
    try:
        return s3_client(s3_endpoint).head_object(Bucket=bucket, Key=key)["ETag"]
    except Exception:
        return None


def acquire_lease(
    filesystem,
    out_path: str,
    output_uri: str,
    run_id: str,
    ttl_seconds: float,
    break_lease: bool,
    s3_endpoint: str | None = None,
) -> Lease:
    """Take the output's lease or raise LeaseHeldError naming the holder. An expired lease (its run crashed) is
    taken over; `break_lease` takes over a live-looking one (the user knows that run is dead)."""
    lease = Lease(
        filesystem,
        out_path,
        s3_endpoint,
        {
            "run_id": run_id,
            "output": output_uri,
            "started_at": _now().isoformat(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "ttl_seconds": ttl_seconds,
        },
    )
    body = lease._body(ttl_seconds)
    data = json.dumps(body).encode()
    for _ in range(3):
        created = with_retries(lambda: _create_exclusive(filesystem, lease.path, data, s3_endpoint), "take lease")
        if created:
            break
        etag = _etag(filesystem, lease.path, s3_endpoint)
        holder = read_json(filesystem, lease.path)
        if holder is None:
            continue  # released (or half-written) meanwhile: try again
        expired = dt.datetime.fromisoformat(holder["expires_at"]) < _now()
        if not (expired or break_lease):
            raise LeaseHeldError(
                f"{output_uri} is being written by run {holder['run_id']} (started {holder['started_at']} on "
                f"{holder.get('host')} pid {holder.get('pid')}; its lease runs until {holder['expires_at']}). "
                "Nothing was changed. Wait for that run, or if it is dead pass --break-lease"
            )
        why = "expired" if expired else "broken with --break-lease"
        say(f"taking over the lease of run {holder['run_id']} ({why})")
        created = etag and _create_exclusive(filesystem, lease.path, data, s3_endpoint, if_match=etag)
        if created and (read_json(filesystem, lease.path) or {}).get("run_id") == run_id:
            break
    else:
        raise LeaseHeldError(f"{output_uri}: could not take the lease (another run keeps taking it)")
    lease.body = body
    lease.etag = created if isinstance(created, str) else None
    lease.start_heartbeat()
    return lease


def staging_dir(out_path: str, run_id: str) -> str:
    return join(out_path, STAGING, run_id)


def _parallel(fn, items: list, what: str) -> list:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda item: with_retries(lambda: fn(item), what), items))


def publish(filesystem, out_path: str, lease: Lease, staged: list[str], manifest: dict) -> dict:
    """Move the staged files into place, write the manifest naming them, then remove what the replaced manifest
    named and any orphans (files of this output's earlier failed runs). Returns the manifest as written."""
    from pyarrow import fs

    lease.check()
    staging = staging_dir(out_path, lease.body["run_id"]) + "/"
    final = [join(out_path, path[len(staging) :]) for path in staged]
    for kind in KINDS:
        with_retries(lambda k=kind: filesystem.create_dir(join(out_path, k), recursive=True), "create output dir")
    _parallel(lambda pair: filesystem.move(*pair), list(zip(staged, final)), "move staged file")
    previous = read_json(filesystem, join(out_path, MANIFEST)) or {}
    keep = set(final)
    doomed = {f for f in previous.get("output_files", []) if f not in keep}
    for kind in KINDS:  # orphans: only the lease holder writes here, so any unlisted part file is one
        selector = fs.FileSelector(join(out_path, kind), allow_not_found=True)
        infos = with_retries(lambda s=selector: filesystem.get_file_info(s), "list output")
        doomed |= {i.path for i in infos if i.type == fs.FileType.File and i.path not in keep}
    lease.check()
    manifest = {**manifest, "output_files": sorted(final), "removed_files_of_earlier_runs": len(doomed)}
    write_json(filesystem, join(out_path, MANIFEST), manifest)
    _parallel(filesystem.delete_file, sorted(doomed), "delete replaced file")
    with_retries(lambda: _delete_tree(filesystem, join(out_path, STAGING)), "delete staging")
    return manifest


def _delete_tree(filesystem, path: str) -> None:
    from pyarrow import fs

    if filesystem.get_file_info(path).type != fs.FileType.NotFound:
        filesystem.delete_dir(path)
