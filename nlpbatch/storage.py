"""URIs -> pyarrow filesystems (local paths and globs, s3://bucket/prefix). The only module that knows about S3.

Every call to an object store can be throttled (503 SlowDown) or lose its connection: the S3 filesystem retries
with the AWS SDK's standard strategy (capped exponential backoff, `S3_MAX_ATTEMPTS`), and the few calls the
driver makes itself (manifest, lease, cleanup) go through `with_retries` as well.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

from nlpbatch.progress import say

INPUT_EXTENSIONS = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json.gz": "jsonl",
}
S3_MAX_ATTEMPTS = 10
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
T = TypeVar("T")


class StorageError(OSError):
    """A URI that cannot be read or written; the message names it."""


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
    """A boto3 client for what pyarrow cannot do (conditional PUTs for the lease), retried like the filesystem."""
    import boto3
    from botocore.config import Config

    endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client(
        "s3",
        endpoint_url=normalize_endpoint(endpoint) if endpoint else None,
        region_name=s3_region(),
        config=Config(retries={"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS}),
    )


def is_transient(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, ConnectionError | TimeoutError) or any(word in text for word in TRANSIENT)


def with_retries(fn: Callable[[], T], what: str, attempts: int = 8, base: float = 0.2, cap: float = 5.0) -> T:
    """Call `fn`, retrying transient storage errors (throttling, 5xx, dropped connections) with capped
    exponential backoff and jitter; other errors, and the last transient one, propagate."""
    for attempt in range(attempts):
        try:
            return fn()
        except OSError as err:
            if attempt == attempts - 1 or not is_transient(err):
                raise
            delay = min(cap, base * 2**attempt) * (0.5 + random.random() / 2)
            say(f"{what}: {err}; retrying in {delay:.1f} s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def format_of(path: str) -> str | None:
    for ext, kind in sorted(INPUT_EXTENSIONS.items(), key=lambda kv: -len(kv[0])):
        if path.endswith(ext):
            return kind
    return None


def list_input_infos(uri: str, filesystem, path: str, input_format: str | None = None) -> list:
    """FileInfo (path, size, mtime) of the input files under a file, directory/prefix or glob, sorted by path;
    hidden and `_`-prefixed files are skipped. Fails fast, naming the URI, when nothing is there or the store
    cannot be reached."""
    from pyarrow import fs

    has_glob = any(ch in path for ch in "*?[")
    base = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0] if has_glob else path
    try:
        info = with_retries(lambda: filesystem.get_file_info(base), f"list {uri}")
        if info.type == fs.FileType.File and not has_glob:
            candidates = [info]
        elif info.type == fs.FileType.Directory:
            selector = fs.FileSelector(base, recursive=True)
            candidates = [
                f
                for f in with_retries(lambda: filesystem.get_file_info(selector), f"list {uri}")
                if f.type == fs.FileType.File
            ]
        else:
            raise StorageError(f"{uri}: no such file, directory or prefix")
    except StorageError:
        raise
    except OSError as err:
        raise StorageError(f"{uri}: cannot be read ({err})") from err
    files = []
    for candidate in sorted(candidates, key=lambda f: f.path):
        if candidate.base_name.startswith((".", "_")) or (has_glob and not fnmatch.fnmatch(candidate.path, path)):
            continue
        if input_format or format_of(candidate.path):
            files.append(candidate)
    if not files:
        raise StorageError(f"{uri}: no input files (.parquet, .jsonl, .jsonl.gz)")
    return files


def list_inputs(uri: str, filesystem, path: str, input_format: str | None = None) -> list[str]:
    return [f.path for f in list_input_infos(uri, filesystem, path, input_format)]


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
    put_bytes(filesystem, tmp, data)
    os.replace(tmp, path)


def put_bytes(filesystem, path: str, data: bytes) -> None:
    with filesystem.open_output_stream(path) as fh:
        fh.write(data)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])
