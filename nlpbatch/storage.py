"""URIs -> pyarrow filesystems (local paths and globs, s3://bucket/prefix). The only module that knows about S3."""

from __future__ import annotations

import fnmatch
import os
from urllib.parse import urlparse

INPUT_EXTENSIONS = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json.gz": "jsonl",
}


class StorageError(OSError):
    """A URI that cannot be read or written; the message names it."""


def filesystem_for(uri: str, s3_endpoint: str | None = None):
    """(pyarrow FileSystem, path inside it). S3 uses the standard AWS credential chain; `s3_endpoint` or
    $AWS_ENDPOINT_URL points it at an S3-compatible store (MinIO, a test server)."""
    from pyarrow import fs

    if uri.startswith("s3://"):
        endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
        kwargs = {}
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs = {"endpoint_override": parsed.netloc or parsed.path, "scheme": parsed.scheme or "https"}
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return fs.S3FileSystem(region=region, **kwargs), uri[len("s3://") :].rstrip("/")
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported URI scheme (use a local path or s3://)")
    return fs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def format_of(path: str) -> str | None:
    for ext, kind in sorted(INPUT_EXTENSIONS.items(), key=lambda kv: -len(kv[0])):
        if path.endswith(ext):
            return kind
    return None


def list_inputs(uri: str, filesystem, path: str, input_format: str | None = None) -> list[str]:
    """Input files under a file, directory/prefix or glob, sorted; hidden and `_`-prefixed files are skipped.
    Fails fast, naming the URI, when nothing is there or the store cannot be reached."""
    from pyarrow import fs

    has_glob = any(ch in path for ch in "*?[")
    base = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0] if has_glob else path
    try:
        info = filesystem.get_file_info(base)
        if info.type == fs.FileType.File and not has_glob:
            candidates = [path]
        elif info.type == fs.FileType.Directory:
            candidates = [
                f.path
                for f in filesystem.get_file_info(fs.FileSelector(base, recursive=True))
                if f.type == fs.FileType.File
            ]
        else:
            raise StorageError(f"{uri}: no such file, directory or prefix")
    except StorageError:
        raise
    except OSError as err:
        raise StorageError(f"{uri}: cannot be read ({err})") from err
    files = []
    for candidate in sorted(candidates):
        name = candidate.rsplit("/", 1)[-1]
        if name.startswith((".", "_")) or (has_glob and not fnmatch.fnmatch(candidate, path)):
            continue
        if input_format or format_of(candidate):
            files.append(candidate)
    if not files:
        raise StorageError(f"{uri}: no input files (.parquet, .jsonl, .jsonl.gz)")
    return files


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])
