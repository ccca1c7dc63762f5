"""URIs -> pyarrow filesystems (local paths and globs, s3://bucket/prefix). The only module that knows about S3.

Every call to an object store can be throttled (503 SlowDown) or lose its connection: the S3 filesystem retries
with the AWS SDK's standard strategy (capped exponential backoff, `S3_MAX_ATTEMPTS`), and the few calls the
driver makes itself (manifest, lease, cleanup) go through `with_retries` as well.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from nlpbatch.progress import say

INPUT_EXTENSIONS = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json.gz": "jsonl",
    ".jsonl.bz2": "jsonl",
    ".json.bz2": "jsonl",
    ".jsonl.zst": "jsonl",
    ".json.zst": "jsonl",
    ".csv": "csv",  # a header row; comma-separated, quoted
    ".tsv": "csv",  # a header row; tab-separated, unquoted
}
S3_MAX_ATTEMPTS = int(os.environ.get("NLPBATCH_S3_MAX_ATTEMPTS", "10"))  # per call, the SDK's own retries
TRANSIENT = (
    "503",
    "500",
    "502",
    "504",
    "slowdown",
    "slow down",
    "throttl",
    "timeout",
    "timed out",
    "connection",
    "reset by peer",
    "broken pipe",
    "network",
    "temporarily",
    "internalerror",
    "serviceunavailable",
)
# failures no retry cures: an unknown host, refused credentials (retried, they only delay the error by minutes)
PERMANENT = (
    "resolve host",
    "name or service not known",
    "nodename nor servname",
    "no such host",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "accessdenied",
    "access denied",
    "expiredtoken",
)
T = TypeVar("T")


class StorageError(OSError):
    """A URI that cannot be read or written; the message names it."""


class NoInputError(StorageError):
    """The location exists but holds no input file."""


def normalize_endpoint(endpoint: str) -> str:
    """An endpoint URL with its scheme. `minio:9000` without one is ambiguous: loopback hosts get http://,
    anything else is an error that says what to write."""
    if "://" in endpoint:
        return endpoint
    host = endpoint.rsplit(":", 1)[0].strip("[]") if endpoint.count(":") <= 1 else endpoint.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return "http://" + endpoint
    raise StorageError(f"S3 endpoint {endpoint!r} has no scheme: write http://{endpoint} or https://{endpoint}")


def s3_region() -> str | None:
    """The region from the AWS chain (AWS_REGION, AWS_DEFAULT_REGION, the profile in ~/.aws/config)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    try:
        import boto3

        return boto3.session.Session().region_name
    except Exception:  # a broken ~/.aws/config must not stop a job that passes its region otherwise
        return None


def filesystem_for(uri: str, s3_endpoint: str | None = None):
    """(pyarrow FileSystem, path inside it). S3 uses the standard AWS credential chain; `s3_endpoint` or
    $AWS_ENDPOINT_URL points it at an S3-compatible store (MinIO, a test server)."""
    from pyarrow import fs

    if uri.startswith("s3://"):
        endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict = {"retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS)}
        if endpoint:
            parsed = urlparse(normalize_endpoint(endpoint))
            kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
        region = s3_region()
        if region:
            kwargs["region"] = region
        return fs.S3FileSystem(**kwargs), uri[len("s3://") :].rstrip("/")
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported URI scheme (use a local path or s3://)")
    return fs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def s3_client(s3_endpoint: str | None = None):
    """A boto3 client for what pyarrow cannot do (conditional PUTs for the lease and the manifest), retried like the
    filesystem. One per endpoint and process: clients are thread-safe and slow to build."""
    return _s3_client(s3_endpoint or os.environ.get("AWS_ENDPOINT_URL"), S3_MAX_ATTEMPTS)


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint: str | None, max_attempts: int):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=normalize_endpoint(endpoint) if endpoint else None,
        region_name=s3_region(),
        config=Config(retries={"mode": "standard", "max_attempts": max_attempts}),
    )


def is_transient(err: BaseException) -> bool:
    text = str(err).lower()
    if any(word in text for word in PERMANENT):
        return False
    return isinstance(err, ConnectionError | TimeoutError) or any(word in text for word in TRANSIENT)


def resolves(host: str, timeout: float = 5.0) -> bool:
    """Whether DNS knows `host` (checked in a thread, at most `timeout` seconds): an unknown endpoint fails in
    seconds, not after the SDK's retries."""
    import concurrent.futures
    import socket

    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        pool.submit(socket.getaddrinfo, host, None).result(timeout=timeout)
        return True
    except concurrent.futures.TimeoutError:
        return True  # a slow resolver is not a missing host: let the real call decide
    except OSError:
        return False
    finally:
        pool.shutdown(wait=False)


def check_reachable(uri: str, s3_endpoint: str | None = None) -> None:
    """An s3:// URI whose endpoint host does not resolve is a StorageError at once, naming the host and the fix."""
    if not uri.startswith("s3://"):
        return
    endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
    region = s3_region()
    host = urlparse(normalize_endpoint(endpoint)).hostname if endpoint else f"s3.{region or 'us-east-1'}.amazonaws.com"
    if host and not resolves(host):
        source = "--s3-endpoint / $AWS_ENDPOINT_URL" if endpoint else "the AWS region (AWS_REGION)"
        raise StorageError(
            f"{uri}: cannot reach S3: the host {host} does not resolve (no network, or a wrong {source})"
        )


def _is_sdk_error(err: BaseException) -> bool:
    """botocore's ClientError (a 503 SlowDown once the SDK's own retries ran out) and connection errors: they
    are not OSErrors, but throttling them is as transient as pyarrow's."""
    return type(err).__module__.startswith(("botocore", "urllib3"))


def with_retries(fn: Callable[[], T], what: str, attempts: int = 8, base: float = 0.2, cap: float = 5.0) -> T:
    """Call `fn`, retrying transient storage errors (throttling, 5xx, dropped connections; pyarrow's OSErrors and
    the AWS SDK's errors alike) with capped exponential backoff and jitter; other errors, and the last transient
    one, propagate."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:
            if not isinstance(err, OSError) and not _is_sdk_error(err):
                raise
            if attempt == attempts - 1 or not is_transient(err):
                raise
            delay = min(cap, base * 2**attempt) * (0.5 + random.random() / 2)
            say(f"{what}: {err}; retrying in {delay:.1f} s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def format_of(path: str) -> str | None:
    """parquet | jsonl | csv from a file name (any letter case), or None for a file that is not input."""
    lower = path.lower()
    for ext, kind in sorted(INPUT_EXTENSIONS.items(), key=lambda kv: -len(kv[0])):
        if lower.endswith(ext):
            return kind
    return None


def _unsupported_compression(path: str) -> str | None:
    """The extension of a JSON Lines file packed in a way the reader cannot open (e.g. .jsonl.xz), else None."""
    match = re.search(r"\.jsonl?\.([a-z0-9]+)$", path.lower())
    return match.group(1) if match and f".jsonl.{match.group(1)}" not in INPUT_EXTENSIONS else None


def glob_base(path: str) -> tuple[str, list[str]]:
    """(the folder a glob starts in, the pattern's segments below it)."""
    segments = path.split("/")
    first = next(i for i, seg in enumerate(segments) if any(ch in seg for ch in "*?["))
    return "/".join(segments[:first]) or "/", segments[first:]


def match_segments(pattern: list[str], parts: list[str]) -> bool:
    """A glob matched one path segment at a time: `*` and `?` never cross a `/`; `**` stands for any number of
    folders (zero included)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(match_segments(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and match_segments(pattern[1:], parts[1:])


def _hidden(relative: str) -> bool:
    """Spark's `_temporary/`, `_SUCCESS`, `.staging/`, editors' dot files: skipped at every level."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _walk_local(base: str, follow_symlinks: bool) -> list[tuple[str, os.stat_result]]:
    """(path, stat) of every file under `base` without entering `_`/`.` folders. Symlinks are skipped unless
    `follow_symlinks`; followed, each real folder is entered and each real file listed once (a loop ends)."""
    found, seen_dirs, seen_files = [], set(), set()
    stack = [base]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen_dirs:
            continue
        seen_dirs.add(real)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith((".", "_")):
                    continue
                if entry.is_symlink() and not follow_symlinks:
                    continue
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=True):
                    target = os.path.realpath(entry.path)
                    if target not in seen_files:
                        seen_files.add(target)
                        found.append((entry.path, entry.stat(follow_symlinks=True)))
    return found


def list_input_infos(
    uri: str, filesystem, path: str, input_format: str | None = None, follow_symlinks: bool = False
) -> list:
    """FileInfo (path, size, mtime) of the input files under a file, folder/prefix or glob, sorted by path.

    Each row is read once: folders and files whose name starts with `_` or `.` are skipped at every level (Spark's
    `_temporary/`, markers, hidden files), symlinks are not followed unless `follow_symlinks`, a glob matches
    segment by segment (`*` never crosses `/`, `**` does), and a path that exists is taken as it is even when its
    name holds `[`, `*` or `?`. Files that are not input are named in a log line, never silently dropped from a
    folder the manifest calls complete; a JSON Lines file with a compression the reader cannot open is an error.
    Fails fast, naming the URI, when nothing is there or the store cannot be reached."""
    from pyarrow import fs

    local = isinstance(filesystem, fs.LocalFileSystem)
    try:
        info = with_retries(lambda: filesystem.get_file_info(path), f"list {uri}")
        pattern = None
        if info.type == fs.FileType.NotFound and any(ch in path for ch in "*?["):
            base, pattern = glob_base(path)
            info = with_retries(lambda: filesystem.get_file_info(base), f"list {uri}")
        else:
            base = path
        if info.type == fs.FileType.File and pattern is None:
            candidates = [info]
        elif info.type == fs.FileType.Directory:
            if local:
                candidates = [
                    fs.FileInfo(p, fs.FileType.File, size=st.st_size, mtime_ns=st.st_mtime_ns)
                    for p, st in _walk_local(base, follow_symlinks)
                ]
            else:
                selector = fs.FileSelector(base, recursive=True)
                listed = with_retries(lambda: filesystem.get_file_info(selector), f"list {uri}")
                candidates = [f for f in listed if f.type == fs.FileType.File]
            prefix = base.rstrip("/") + "/"
            candidates = [f for f in candidates if not _hidden(f.path[len(prefix) :])]
            if pattern is not None:
                candidates = [f for f in candidates if match_segments(pattern, f.path[len(prefix) :].split("/"))]
        else:
            raise StorageError(f"{uri}: no such file, directory or prefix")
    except StorageError:
        raise
    except OSError as err:
        raise StorageError(f"{uri}: cannot be read ({err})") from err
    files, skipped = [], []
    for candidate in sorted(candidates, key=lambda f: f.path):
        packed = _unsupported_compression(candidate.path)
        if packed and not input_format:
            raise StorageError(
                f"{candidate.path}: .{packed} compression cannot be read; use .jsonl, .jsonl.gz, .jsonl.bz2, "
                ".jsonl.zst or Parquet"
            )
        if input_format or format_of(candidate.path):
            files.append(candidate)
        else:
            skipped.append(candidate.path)
    if not files:
        what = f" (found only {', '.join(skipped[:5])})" if skipped else ""
        raise NoInputError(f"{uri}: no input files (.parquet, .jsonl, .jsonl.gz, .csv, .tsv){what}")
    if skipped:
        say(
            f"{uri}: skipping {len(skipped)} file(s) that are not .parquet, .jsonl, .csv or .tsv: "
            f"{', '.join(skipped[:5])}" + (" ..." if len(skipped) > 5 else "")
        )
    return files


def input_root(filesystem, path: str) -> str:
    """The folder (or file) an input URI covers: a glob's fixed leading folders, else the path itself."""
    from pyarrow import fs

    if any(ch in path for ch in "*?[") and filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return glob_base(path)[0]
    return path


def overlap(a: str, b: str) -> bool:
    """Two locations of one store where either lies inside the other (or they are the same)."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def file_signature(info) -> dict:
    """What identifies an input file's content for the nightly "is this partition unchanged?" check."""
    return {"path": info.path, "size": info.size, "mtime_ns": info.mtime_ns}


def read_json(filesystem, path: str) -> dict | None:
    """The JSON object at `path`, or None when there is none (or it is not a complete JSON object)."""
    from pyarrow import fs

    def read() -> bytes | None:
        if filesystem.get_file_info(path).type != fs.FileType.File:
            return None
        with filesystem.open_input_stream(path) as fh:
            return fh.read()

    data = with_retries(read, f"read {path}")
    try:
        return json.loads(data) if data is not None else None
    except ValueError:
        return None


def write_json(filesystem, path: str, payload: dict) -> None:
    """Replace `path` in one step: a single PUT on S3, write-then-rename locally, so a reader never sees half."""
    from pyarrow import fs

    data = json.dumps(payload, indent=2).encode("utf-8")
    if not isinstance(filesystem, fs.LocalFileSystem):
        with_retries(lambda: put_bytes(filesystem, path, data), f"write {path}")
        return
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        put_bytes(filesystem, tmp, data)
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: no half-written temporary file stays behind
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def put_bytes(filesystem, path: str, data: bytes) -> None:
    with filesystem.open_output_stream(path) as fh:
        fh.write(data)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def user_cache(*parts: str) -> Path:
    """A folder under the user's cache ($XDG_CACHE_HOME, else ~/.cache)/nlpbatch: engine choices, registry versions
    copied from S3, MLflow model versions."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).joinpath("nlpbatch", *parts)
