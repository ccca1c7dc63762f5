"""How an annotation run owns, fills and publishes its output, so that no row is lost or duplicated, the last good
output survives every failure, and nothing the run cannot prove is its own is ever deleted. Spark's file-commit
protocol (a staging prefix per attempt, files moved into place) with a Delta/Iceberg-style optimistic commit (the
manifest replaced by a compare-and-swap on its version):

    OUTPUT/_LEASE.json                          one writer at a time: holder's run id and attempt token
    OUTPUT/_attempts/<run>-<attempt>.json       each attempt's record: the manifest version it started from and
                                                the files it will move in (written before it moves them)
    OUTPUT/_staging/<run>-<attempt>/{data,rejects}/part-<run>-<attempt>-NNNNNN.*   files while the attempt works
    OUTPUT/{data,rejects}/part-<run>-<attempt>-NNNNNN.*                          the published files
    OUTPUT/_SUCCESS.json                        the manifest, written last: version N, the current files (paths
                                                relative to OUTPUT)
    OUTPUT/_tombstones/<version>-<run>-<attempt>.json   the files version N replaced: kept for readers of version
                                                N-1 until the retention period has passed, then removed by a later run

An attempt takes the lease, reads the manifest (version N-1) and records itself, stages its files, reconciles its
counts, records its file list, renews the lease once more (a conditional write: it fails if the lease was taken
over), moves its files into place and replaces the manifest *only if it is still version N-1* (S3: `If-Match` on
its ETag; locally: compare and rename under an exclusive lock of the output folder). Only the winner of version N
deletes anything, and only files it can prove belong to this output's own dead attempts: the replaced manifest's
files, and those of attempt records that started from a version below N (they can never publish: their
compare-and-swap must fail), each file named with that attempt's run id and token and lying under OUTPUT's data/
or rejects/. Anything else in the output is foreign: listed in the manifest, left alone. The replaced manifest's
files are not deleted at once: a tombstone names them, and the first run to publish after the retention period
(`retention_seconds`, default 24 h) removes them, so a query still reading the previous version finishes its read.

A signal (Ctrl-C, SIGTERM) is held over the compare-and-swap and the bookkeeping that records its outcome; any
exception there (a second signal, a full disk, a lost connection) leaves the attempt "uncertain" until a re-read of
the store proves whether the manifest names its files, and only files proven unpublished are ever removed.

Liveness of a lease is judged by the store's own clock (the age of the lease object's last write as the store
reports it), never by comparing the holder's clock with the taker's. A conditional write whose reply was lost and
whose retry is refused is recognised by the random nonce every written object carries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import fcntl
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from nlpbatch.errors import signals_held
from nlpbatch.progress import say
from nlpbatch.storage import StorageError, join, put_bytes, read_json, s3_client, with_retries, write_json

LEASE = "_LEASE.json"
MANIFEST = "_SUCCESS.json"
STAGING = "_staging"
ATTEMPTS = "_attempts"
TOMBSTONES = "_tombstones"
RETENTION_SECONDS = 24 * 3600.0  # replaced files outlive their manifest this long (a day of queries on the old one)
LOCK_TIMEOUT = 30.0  # seconds a local compare-and-swap waits for the output's lock (held for milliseconds)
KINDS = ("data", "rejects")
S3_CLOCK_SLACK = 1.0  # S3 reports times to the second
_REFUSED = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409")


class LeaseHeldError(StorageError):
    """Another run holds the output; the message names it and how to proceed."""


class PublishConflictError(StorageError):
    """Another attempt published first; this attempt published nothing."""


class LockTimeout(StorageError):
    """The output's local lock stayed held past its timeout: its holder is stopped or hung."""


class ManifestError(StorageError):
    """The output's manifest is not one nlpbatch can follow (hand-edited, or another tool's file)."""


def manifest_problem(body: dict | None) -> str | None:
    """Why a stored manifest cannot be followed, or None when it can. A manifest of an early version has no
    `version` (it counts as 0)."""
    if body is None:
        return "it is not a JSON object"
    version = body.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        return f"its version is {version!r}, not a whole number"
    files = body.get("output_files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return "its output_files is not a list of file names"
    return None


def check_manifest(output: str, body: dict | None) -> dict:
    """The manifest, or ManifestError naming the file, what is wrong and the way out."""
    problem = manifest_problem(body)
    if problem:
        raise ManifestError(
            f"{join(output, MANIFEST)} cannot be followed: {problem} (edited by hand, or not written by nlpbatch). "
            "Nothing was changed. Restore it, or pass --overwrite to publish over it (the files it names are then "
            "left alone as foreign files)"
        )
    return body


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _is_s3(filesystem) -> bool:
    from pyarrow import fs

    return isinstance(filesystem, fs.S3FileSystem)


@dataclass(frozen=True)
class Stored:
    """A small JSON object as the store holds it: its body (None if absent or unreadable), its version (None if
    absent) and the seconds since it was last written, by the store's clock."""

    body: dict | None
    version: str | None
    age: float | None


class Store:
    """Compare-and-swap on the small JSON objects of one output (lease, manifest, attempt records).

    S3: conditional PUT/DELETE (`If-None-Match: *`, `If-Match: <ETag>`); the age comes from the object's
    Last-Modified and the reply's Date, both the server's clock. Local: read, compare and rename under an
    exclusive flock of the output folder (one machine's kernel); the version is a hash of the content."""

    def __init__(self, filesystem, root: str, s3_endpoint: str | None = None):
        self.filesystem, self.root, self.s3_endpoint = filesystem, root, s3_endpoint
        self.s3 = _is_s3(filesystem)

    def path(self, name: str) -> str:
        return join(self.root, name)

    def _bucket_key(self, name: str) -> tuple[str, str]:
        bucket, key = self.path(name).split("/", 1)
        return bucket, key

    def get(self, name: str) -> Stored:
        if not self.s3:
            return self._get_local(name)
        bucket, key = self._bucket_key(name)

        def read():
            try:
                reply = s3_client(self.s3_endpoint).get_object(Bucket=bucket, Key=key)
            except Exception as err:
                if "NoSuchKey" in str(err) or "Not Found" in str(err):
                    return None
                raise
            return reply, reply["Body"].read()

        got = with_retries(read, f"read {name}")
        if got is None:
            return Stored(None, None, None)
        reply, data = got
        served = reply["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        age = None
        if served:
            age = (email.utils.parsedate_to_datetime(served) - reply["LastModified"]).total_seconds()
        return Stored(_parse(data), reply["ETag"], age)

    def _get_local(self, name: str) -> Stored:
        try:
            with open(self.path(name), "rb") as fh:
                data = fh.read()
                modified = os.fstat(fh.fileno()).st_mtime
        except FileNotFoundError:
            return Stored(None, None, None)
        return Stored(_parse(data), hashlib.sha256(data).hexdigest()[:32], time.time() - modified)

    @contextlib.contextmanager
    def _locked(self, timeout: float | None = None):
        """An exclusive flock of the output folder, waited for at most `timeout` seconds (it is held for the
        milliseconds of one compare-and-rename: a longer wait means its holder is stopped or hung)."""
        timeout = LOCK_TIMEOUT if timeout is None else timeout
        fd = os.open(self.root, os.O_RDONLY)
        try:
            start, told = time.monotonic(), False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - start
                    if waited > 5 and not told:
                        say(f"{self.root}: waiting for the output's lock, held by {self._holder()}")
                        told = True
                    if waited > timeout:
                        raise LockTimeout(
                            f"{self.root}: the output's lock has been held for {timeout:.0f} s by {self._holder()}, "
                            "which takes milliseconds when its holder runs: that process is stopped or hung. Nothing "
                            "was changed; end or resume it, then run again"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _holder(self) -> str:
        """Who is likely inside the lock: the lease's holder (the only writer of the manifest and the lease)."""
        lease = self._get_local(LEASE).body or {}
        if not lease:
            return "another process (no lease is held)"
        return f"run {lease.get('run_id')} (pid {lease.get('pid')} on {lease.get('host')}) or a run taking its lease"

    def put_if(self, name: str, body: dict, version: str | None) -> str | None:
        """Write `body` only if the object is absent (`version` None) or still at `version`. Returns the new
        version, or None when the precondition failed. `body["nonce"]` identifies this write: a write whose reply
        was lost and whose retry was refused (it had already landed) is recognised as ours."""
        data = json.dumps(body, indent=2).encode("utf-8")
        if not self.s3:
            with self._locked():
                if self._get_local(name).version != version:
                    return None
                tmp = f"{self.path(name)}.{uuid.uuid4().hex}.tmp"
                try:
                    put_bytes(self.filesystem, tmp, data)
                    os.replace(tmp, self.path(name))
                except BaseException:  # a full disk, a signal: no half-written temporary file stays behind
                    with contextlib.suppress(OSError):
                        os.remove(tmp)
                    raise
            return hashlib.sha256(data).hexdigest()[:32]
        bucket, key = self._bucket_key(name)
        condition = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
        client = s3_client(self.s3_endpoint)
        try:
            return with_retries(
                lambda: client.put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"], f"write {name}"
            )
        except Exception as err:
            if not any(code in str(err) for code in _REFUSED):
                raise
        stored = self.get(name)
        if stored.body is not None and stored.body.get("nonce") == body.get("nonce"):
            return stored.version  # our write landed; only its reply was lost
        return None

    def delete_if(self, name: str, version: str) -> bool:
        """Delete the object only if it is still at `version`."""
        if not self.s3:
            with self._locked():
                if self._get_local(name).version != version:
                    return False
                os.remove(self.path(name))
                return True
        bucket, key = self._bucket_key(name)
        client = s3_client(self.s3_endpoint)
        try:
            with_retries(lambda: client.delete_object(Bucket=bucket, Key=key, IfMatch=version), f"delete {name}")
        except Exception as err:
            if any(code in str(err) for code in _REFUSED):
                return False
            if "NotImplemented" not in str(err):
                raise
            # a store without conditional deletes: check, then delete (a lease taken over in between is rewritten
            # by its new holder's next renewal... or lost, which the manifest's compare-and-swap still fences)
            if self.get(name).version != version:
                return False
            with_retries(lambda: client.delete_object(Bucket=bucket, Key=key), f"delete {name}")
        return True


def _parse(data: bytes) -> dict | None:
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


@dataclass
class Lease:
    """A held lease; a daemon thread renews it every ttl/3 while the run works. Every renewal is a conditional
    write on the version this holder last wrote, so a holder that was paused past its TTL and taken over finds
    out at its next renewal and can no longer publish."""

    store: Store
    body: dict
    version: str
    lost: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    @property
    def run_id(self) -> str:
        return self.body["run_id"]

    @property
    def attempt(self) -> str:
        return self.body["attempt"]

    def renew(self) -> bool:
        with self._lock:
            if self.lost:
                return False
            body = {**self.body, "nonce": uuid.uuid4().hex, "renewed_at": _now().isoformat()}
            version = self.store.put_if(LEASE, body, self.version)
            if version is None:
                holder = self.store.get(LEASE).body
                self.lost = f"run {holder.get('run_id')}" if holder else "nobody (the lease was deleted)"
                return False
            self.body, self.version = body, version
            return True

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.body["ttl_seconds"] / 3):
                try:
                    if not self.renew():
                        say(f"run {self.run_id} lost its lease to {self.lost}")
                        return
                except Exception as err:  # keep trying: the lease is only lost once it has been taken over
                    say(f"lease renewal failed: {err}")

        self._thread = threading.Thread(target=beat, name="nlpbatch-lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Renew once more, conditionally, right before publishing; raise unless this attempt still holds the lease."""
        if not self.renew():
            raise LeaseHeldError(
                f"{self.body['output']}: run {self.run_id} lost its lease to {self.lost}; nothing was published, "
                "the previous output is untouched"
            )

    def release(self) -> None:
        """Stop renewing (waiting for a renewal in flight), then delete the lease if it is still this attempt's.
        A signal waits until it is done: a lease left behind would refuse the next run for its TTL."""
        with signals_held("the output's lease is released"):
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            with self._lock:
                current = self.store.get(LEASE)
                if current.body and current.body.get("attempt") == self.attempt and current.version:
                    self.store.delete_if(LEASE, current.version)


def acquire_lease(
    store: Store, output_uri: str, run_id: str, ttl_seconds: float, break_lease: bool, heartbeat: bool = True
) -> Lease:
    """Take the output's lease or raise LeaseHeldError naming the holder. A lease not renewed for its TTL (by the
    store's clock: its holder crashed or was paused) is taken over; `break_lease` takes over a live-looking one
    (the user knows that run is dead)."""
    now = _now().isoformat()
    body = {
        "run_id": run_id,
        "attempt": uuid.uuid4().hex[:8],
        "output": output_uri,
        "started_at": now,
        "renewed_at": now,  # informational: the holder's clock
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "ttl_seconds": ttl_seconds,
        "nonce": uuid.uuid4().hex,
    }
    for _ in range(5):
        version = store.put_if(LEASE, body, None)
        if version:
            break
        held = store.get(LEASE)
        if held.version is None:
            continue  # released meanwhile: try again
        holder = held.body or {}
        ttl = float(holder.get("ttl_seconds", ttl_seconds))
        age = held.age if held.age is not None else 0.0
        expired = age > ttl + (S3_CLOCK_SLACK if store.s3 else 0.0)
        if not (expired or break_lease):
            raise LeaseHeldError(
                f"{output_uri} is being written by run {holder.get('run_id')} (started {holder.get('started_at')} on "
                f"{holder.get('host')} pid {holder.get('pid')}; its lease was renewed {age:.0f} s ago and lapses "
                f"{ttl:.0f} s after its last renewal). Nothing was changed. Wait for that run, or if it is dead pass "
                "--break-lease"
            )
        why = f"not renewed for {age:.0f} s" if expired else "broken with --break-lease"
        say(f"taking over the lease of run {holder.get('run_id')} ({why})")
        body = {**body, "nonce": uuid.uuid4().hex}
        version = store.put_if(LEASE, body, held.version)
        if version:
            break
    else:
        raise LeaseHeldError(f"{output_uri}: could not take the lease (other runs keep taking it)")
    lease = Lease(store, body, version)
    if heartbeat:
        lease.start_heartbeat()
    return lease


def _parallel(fn, items: list, what: str) -> list:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda item: with_retries(lambda: fn(item), what), items))


def _missing_ok(fn):
    def call(path):
        try:
            fn(path)
        except FileNotFoundError:
            pass  # already gone (an S3 lifecycle rule, a user): what we wanted

    return call


def relative_file(out_path: str, path: str) -> str | None:
    """A manifest's file as `data/<name>` or `rejects/<name>` under the output, or None when it lies anywhere
    else. Absolute paths (manifests of earlier versions) count only when they are inside this output."""
    if path.startswith(out_path.rstrip("/") + "/"):
        path = path[len(out_path.rstrip("/")) + 1 :]
    parts = path.split("/")
    if len(parts) != 2 or parts[0] not in KINDS or parts[1] in ("", ".", "..") or "\\" in path:
        return None
    return path


def _owned(rel: str | None, run_id: str | None, attempt: str | None) -> bool:
    """A file name that proves it was written by that attempt (or, for manifests written before attempt tokens,
    by that run)."""
    if rel is None or not run_id:
        return False
    name = rel.split("/", 1)[1]
    prefix = f"part-{run_id}-{attempt}-" if attempt else f"part-{run_id}-"
    return name.startswith(prefix) and re.fullmatch(r"\d{6}\.(parquet|jsonl|json)", name[len(prefix) :]) is not None


_PART = re.compile(r"part-.+-\d{6}\.(parquet|jsonl|json)")


class Commit:
    """One attempt's way from its staging prefix to the published manifest. `prepare` moves the files in (after a
    last conditional lease renewal), `finish` publishes them with the manifest's compare-and-swap and cleans up;
    `abort` removes what this attempt wrote. Nothing here deletes a file of another attempt, except the winner of
    a version cleaning up after dead ones (and, once the retention period has passed, after replaced versions)."""

    def __init__(
        self,
        filesystem,
        out_path: str,
        lease: Lease,
        retention_seconds: float = RETENTION_SECONDS,
        overwrite: bool = False,
    ):
        self.filesystem, self.out_path, self.lease = filesystem, out_path, lease
        self.store = lease.store
        self.retention_seconds = retention_seconds
        self.previous = self.store.get(MANIFEST)  # the only version this attempt may replace
        if self.previous.version and manifest_problem(self.previous.body):
            if not overwrite:
                check_manifest(lease.body["output"], self.previous.body)
            say(f"{lease.body['output']}: publishing over a manifest that cannot be followed (--overwrite)")
            self.previous = Stored(None, self.previous.version, self.previous.age)  # its files are not followed
        self.base = int((self.previous.body or {}).get("version", 0)) if self.previous.version else 0
        self.name = f"{lease.run_id}-{lease.attempt}"
        self.staging = join(out_path, STAGING, self.name)
        self.file_prefix = f"part-{self.name}-"
        self.files: list[str] = []
        self.moved = False
        self.published = False
        self.uncertain = False
        self.record = {
            "run_id": lease.run_id,
            "attempt": lease.attempt,
            "base_version": self.base,
            "started_at": lease.body["started_at"],
            "files": [],
        }
        self._write_record()

    @property
    def record_path(self) -> str:
        return join(self.out_path, ATTEMPTS, f"{self.name}.json")

    def _write_record(self) -> None:
        with_retries(
            lambda: self.filesystem.create_dir(join(self.out_path, ATTEMPTS), recursive=True), "create output dir"
        )
        write_json(self.filesystem, self.record_path, self.record)

    def prepare(self, staged: list[str]) -> None:
        """Record the files, renew the lease conditionally (raises if it was taken over), move the files in."""
        prefix = self.staging + "/"
        for path in staged:
            if not path.startswith(prefix) or not _owned(path[len(prefix) :], self.lease.run_id, self.lease.attempt):
                raise StorageError(f"{path}: not a staged file of run {self.name}")
        self.files = sorted(path[len(prefix) :] for path in staged)
        self.record["files"] = self.files
        self._write_record()  # before any move: whoever cleans up after this attempt knows what it moved
        self.lease.check()
        if self.store.get(MANIFEST).version != self.previous.version:
            self._conflict()
        for kind in KINDS:
            with_retries(
                lambda k=kind: self.filesystem.create_dir(join(self.out_path, k), recursive=True), "create output dir"
            )
        self.moved = True
        pairs = [(join(prefix.rstrip("/"), f), join(self.out_path, f)) for f in self.files]
        _parallel(lambda pair: self.filesystem.move(*pair), pairs, "move staged file")

    def publish(self, staged: list[str], manifest: dict) -> dict:
        """Move the staged files into place and publish the manifest naming them (see the module docstring)."""
        self.prepare(staged)
        return self.finish(manifest)

    def finish(self, manifest: dict) -> dict:
        """Publish: replace the manifest if it is still the version this attempt started from, tombstone the files
        it replaced, then delete what the dead attempts left. Returns the manifest as written; raises
        PublishConflictError (after removing this attempt's files) when another attempt published first."""
        version = self.base + 1
        plan = self._plan_cleanup(version)
        foreign = self._foreign(plan.doomed | plan.replaced | plan.held)
        previous = self.previous.body or {}
        manifest = {
            **manifest,
            "version": version,
            "run_id": self.lease.run_id,
            "attempt": self.lease.attempt,
            "replaces": {"version": self.base, "run_id": previous.get("run_id")} if self.previous.version else None,
            "output_files": self.files,
            "removed_files_of_earlier_runs": len(plan.doomed),
            "replaced_files_kept_for_readers": len(plan.replaced),
            "retention_seconds": self.retention_seconds,
            "foreign_files": foreign[:20],
            "foreign_file_count": len(foreign),
            "nonce": uuid.uuid4().hex,
        }
        # From here until the store says otherwise the manifest may name this attempt's files: abort keeps them.
        self.uncertain = True
        tombstoned = False
        try:
            with signals_held("the manifest is published"):
                written = self.store.put_if(MANIFEST, manifest, self.previous.version)
                if written is not None:
                    self.published, self.uncertain = True, False
                    tombstoned = self._tombstone(version, plan.replaced)
        except BaseException as err:
            if not self.published:
                self._settle(manifest["nonce"])
            if not (self.published and isinstance(err, Exception)):
                raise  # a signal (or an error with the outcome unknown): what is published is what the store says
            written = "ours"  # the write landed, only its reply (or the bookkeeping after it) failed
        if written is None:
            self.uncertain = False  # refused: the store holds another version, ours can never land
            self._conflict()
        if foreign:
            say(
                f"{self.lease.body['output']}: {len(foreign)} file(s) in data/ or rejects/ are not this output's own "
                f"and were left alone: {', '.join(foreign[:5])}" + (" ..." if len(foreign) > 5 else "")
            )
        if tombstoned:
            self._cleanup(plan, [] if tombstoned is True else [tombstoned])
        else:
            say(f"{self.lease.body['output']}: the replaced files were not recorded; cleanup is left to the next run")
        return manifest

    def _settle(self, nonce: str) -> None:
        """After an exception around the compare-and-swap: re-read the store. Our nonce: published. Another version,
        or (locally, where a write is never in flight after an exception) the same one: proven unpublished. Else
        (S3, the same version, or no answer) the outcome stays unknown and nothing of ours is removed."""
        try:
            now = self.store.get(MANIFEST)
        except BaseException:  # no answer: the outcome stays unknown
            return
        if now.body is not None and now.body.get("nonce") == nonce:
            self.published, self.uncertain = True, False
        elif now.version != self.previous.version or not self.store.s3:
            self.uncertain = False

    def outcome(self) -> str:
        """What this attempt left published, in words (for the message after a signal or an error)."""
        output, run = self.lease.body["output"], self.lease.run_id
        if self.published:
            return f"run {run} published version {self.base + 1} of {output}; the next run finishes its cleanup"
        if self.uncertain:
            return (
                f"the store did not say whether run {run} published version {self.base + 1} of {output}: its files "
                "are kept, and the next run removes them if the manifest does not name them (`nlpbatch show` tells)"
            )
        was = f"version {self.base}" if self.previous.version else "no published output"
        return f"nothing of run {run} was published; {output} is as it was ({was})"

    def _conflict(self) -> None:
        now = self.store.get(MANIFEST).body or {}
        self.abort()
        raise PublishConflictError(
            f"{self.lease.body['output']}: run {now.get('run_id')} published version {now.get('version')} while "
            f"run {self.lease.run_id} worked from version {self.base}; nothing of run {self.lease.run_id} was "
            "published. Run it again"
        )

    def _list(self, folder: str) -> list:
        from pyarrow import fs

        selector = fs.FileSelector(join(self.out_path, folder), allow_not_found=True)
        infos = with_retries(lambda: self.filesystem.get_file_info(selector), f"list {folder}")
        return [i for i in infos if i.type == fs.FileType.File and i.base_name.endswith(".json")]

    def _records(self) -> list[tuple[str, dict]]:
        records = []
        for info in self._list(ATTEMPTS):
            record = read_json(self.filesystem, info.path)
            if record is not None and info.base_name == f"{record.get('run_id')}-{record.get('attempt')}.json":
                records.append((info.path, record))
        return records

    def _tombstones(self) -> list[tuple[str, list[str], float | None]]:
        """(name, replaced files, age by the store's clock) of every tombstone."""
        found = []
        for info in self._list(TOMBSTONES):
            name = f"{TOMBSTONES}/{info.base_name}"
            stored = self.store.get(name)
            files = (stored.body or {}).get("files")
            if isinstance(files, list):
                found.append((name, [f for f in files if isinstance(f, str)], stored.age))
        return found

    def _plan_cleanup(self, version: int) -> _Cleanup:
        """What to do once `version` is published. Replaced: the replaced manifest's own files, tombstoned for the
        retention period. Doomed: files of dead attempts (those that started from a version below it, or from a
        manifest since deleted: they can never publish), deleted at once unless a tombstone keeps them. A file
        counts only when its name proves it belongs to that attempt."""
        replaced: set[str] = set()
        previous = self.previous.body or {}
        for path in previous.get("output_files", []):
            rel = relative_file(self.out_path, path)
            if _owned(rel, previous.get("run_id"), previous.get("attempt")):
                replaced.add(rel)
            else:
                say(f"{self.lease.body['output']}: the replaced manifest names {path}, not a file of its own run: left")
        tombstones = self._tombstones()
        held = {rel for _, files, _ in tombstones for f in files if (rel := relative_file(self.out_path, f))}
        doomed: set[str] = set()
        dead = []
        for path, record in self._records():
            base = record.get("base_version", version)
            base = base if isinstance(base, int) else version
            gone = self.previous.version is None and base > 0  # its manifest was deleted
            if record.get("attempt") == self.lease.attempt or (base >= version and not gone):
                continue
            dead.append((path, record))
            for f in record.get("files", []):
                rel = relative_file(self.out_path, f) if isinstance(f, str) else None
                if _owned(rel, record.get("run_id"), record.get("attempt")):
                    doomed.add(rel)
        mine = set(self.files)
        return _Cleanup(replaced - mine, doomed - replaced - held - mine, held - mine, dead, tombstones)

    def _tombstone(self, version: int, replaced: set[str]) -> tuple[str, list[str], float] | bool:
        """Record the files this version replaced (they stay for readers of the previous manifest): the tombstone
        written (name, files, age 0), True when there was nothing to record, False when the record could not be
        written: cleanup then waits for the next run, so nothing a reader may hold is lost."""
        if not replaced:
            return True
        body = {
            "version": version,
            "run_id": self.lease.run_id,
            "attempt": self.lease.attempt,
            "replaced_at": _now().isoformat(),
            "files": sorted(replaced),
        }
        try:
            with_retries(
                lambda: self.filesystem.create_dir(join(self.out_path, TOMBSTONES), recursive=True), "create dir"
            )
            name = f"{TOMBSTONES}/{version:08d}-{self.name}.json"
            write_json(self.filesystem, self.store.path(name), body)
        except Exception as err:  # published already: a cleanup left undone is the price, never lost rows
            say(f"could not record the replaced files ({err})")
            return False
        return name, body["files"], 0.0

    def _foreign(self, ours: set[str]) -> list[str]:
        from pyarrow import fs

        found = []
        for kind in KINDS:
            selector = fs.FileSelector(join(self.out_path, kind), allow_not_found=True, recursive=True)
            infos = with_retries(lambda s=selector: self.filesystem.get_file_info(s), "list output")
            prefix = self.out_path.rstrip("/") + "/"
            found += [i.path[len(prefix) :] for i in infos if i.type == fs.FileType.File]
        ours = set(self.files) | ours
        return sorted(f for f in found if f not in ours)

    def _cleanup(self, plan: _Cleanup, written: list[tuple[str, list[str], float]]) -> None:
        """After publishing: delete the dead attempts' files and records, and the files of tombstones older than
        the retention period (never one the current manifest names). A failure here leaves leftovers for the next
        winner (their records and tombstones stay), never an error for a run that published."""
        try:
            paths = [join(self.out_path, f) for f in sorted(plan.doomed)]
            _parallel(_missing_ok(self.filesystem.delete_file), paths, "delete replaced file")
            for path, record in plan.dead:
                self._delete_tree(join(self.out_path, STAGING, f"{record['run_id']}-{record['attempt']}"))
                with_retries(lambda p=path: _missing_ok(self.filesystem.delete_file)(p), "delete attempt record")
            self._expire(plan.tombstones + written)
            self._delete_tree(self.staging)
            self._remove_temporaries()
        except Exception as err:  # published already: the next run's winner cleans up what is left
            say(f"cleanup after publishing left files behind ({err}); the next run removes them")

    def _expire(self, tombstones: list[tuple[str, list[str], float | None]]) -> None:
        """Delete the files of tombstones written at least `retention_seconds` ago (by the store's clock), then
        the tombstones. The tombstone this run just wrote (age 0) counts too (retention 0: at once)."""
        mine = set(self.files)
        for name, files, age in tombstones:
            if age is None or age < self.retention_seconds:
                continue
            rels = {rel for f in files if (rel := relative_file(self.out_path, f))}
            doomed = sorted(rel for rel in rels - mine if _PART.fullmatch(rel.split("/", 1)[1]))
            _parallel(_missing_ok(self.filesystem.delete_file), [join(self.out_path, f) for f in doomed], "expire")
            with_retries(lambda n=name: _missing_ok(self.filesystem.delete_file)(self.store.path(n)), "delete tomb")

    def _remove_temporaries(self) -> None:
        """Locally: temporary files a write cut short left beside the manifest and the lease (under the lock, so
        no write in flight is touched)."""
        if self.store.s3:
            return
        pattern = re.compile(rf"({re.escape(MANIFEST)}|{re.escape(LEASE)})\.[0-9a-f]{{32}}\.tmp")
        with self.store._locked():
            for name in os.listdir(self.out_path):
                if pattern.fullmatch(name):
                    with contextlib.suppress(OSError):
                        os.remove(join(self.out_path, name))

    def _delete_tree(self, path: str) -> None:
        from pyarrow import fs

        if with_retries(lambda: self.filesystem.get_file_info(path), "stat").type != fs.FileType.NotFound:
            with_retries(lambda: self.filesystem.delete_dir(path), f"delete {path}")
        parent = join(self.out_path, STAGING)
        if not _is_s3(self.filesystem):
            with contextlib.suppress(OSError):
                os.rmdir(parent)  # only when no other attempt's folder is left in it
            return
        # pyarrow leaves an empty marker object for the parent folder: remove that one key (other attempts' objects
        # are keys of their own, untouched)
        bucket, key = parent.split("/", 1)
        client = s3_client(self.store.s3_endpoint)
        with_retries(lambda: client.delete_object(Bucket=bucket, Key=key + "/"), "delete staging marker")

    def abort(self) -> None:
        """Remove what this attempt wrote (its staged and moved files, its record) unless it published or may have
        (then they stay, and its record lets the next winner remove them if they were not). Best effort: what is
        left, its record names, and the next winner removes. A signal waits until it is done."""
        if self.published or self.uncertain:
            return
        try:
            with signals_held("this run's own files are removed"):
                if self.moved:
                    paths = [join(self.out_path, f) for f in self.files]
                    _parallel(_missing_ok(self.filesystem.delete_file), paths, "delete own file")
                self._delete_tree(self.staging)
                _missing_ok(self.filesystem.delete_file)(self.record_path)
        except Exception as err:
            say(f"could not remove the files of run {self.lease.run_id} ({err}); the next run removes them")


@dataclass
class _Cleanup:
    """`Commit._plan_cleanup`'s answer."""

    replaced: set[str]  # the replaced manifest's files: tombstoned
    doomed: set[str]  # dead attempts' files: deleted at once
    held: set[str]  # files earlier tombstones keep for their readers
    dead: list[tuple[str, dict]]  # dead attempt records (path, record)
    tombstones: list[tuple[str, list[str], float | None]]
