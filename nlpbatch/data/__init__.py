"""Readers that turn local files or hub datasets into `datasets.Dataset`s with the hub's features."""

from pathlib import Path


class DataError(ValueError):
    """Malformed input data; the message names the file and line (or example id) at fault."""


def read_text(path: str | Path) -> str:
    """A file's text (UTF-8, a BOM dropped); a byte that is not UTF-8 is a DataError naming the line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[err.start]:02x}); re-save the file as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path}`"
        ) from None


def read_rows(path: str | Path, text: str | None = None) -> list[tuple[int, dict]]:
    """[(row number, record)] of a JSON Lines file (1-based lines, blank lines skipped; `text`: its content when
    already read) or a Parquet file (1-based rows); a line that is not a JSON object, or a file pyarrow cannot read,
    is a DataError naming it."""
    import json

    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            return list(enumerate(pq.read_table(path).to_pylist(), 1))
        except Exception as err:  # pyarrow's own errors: not Parquet, truncated
            raise DataError(f"{path}: not a readable Parquet file ({err})") from err
    records = []
    for number, line in enumerate((read_text(path) if text is None else text).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise DataError(f"{path}:{number}: not a JSON line ({err})") from err
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: a JSON line must be an object, got {type(record).__name__}")
        records.append((number, record))
    return records


def fetch_data(source: str | None) -> str | None:
    """An s3:// training or evaluation source (an object, or a glob of objects) copied to a local temporary folder,
    as the local path (or glob) the readers take; any other source as it is. $AWS_ENDPOINT_URL points at an
    S3-compatible store, as for annotate."""
    if not source or not source.startswith("s3://"):
        return source
    import atexit
    import shutil
    import tempfile

    from pyarrow import fs

    from nlpbatch.storage import filesystem_for, glob_base, match_segments, with_retries

    filesystem, path = filesystem_for(source)
    pattern = any(c in path for c in "*?[")
    if pattern:  # matched a path segment at a time, as annotate's --input globs are
        base, segments = glob_base(path)
        infos = filesystem.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
        keys = sorted(
            i.path
            for i in infos
            if i.type == fs.FileType.File and match_segments(segments, i.path[len(base) :].lstrip("/").split("/"))
        )
    else:
        keys = [path] if filesystem.get_file_info(path).type == fs.FileType.File else []
    if not keys:
        raise DataError(f"{source}: no such object (or nothing matches the pattern)")
    local = tempfile.mkdtemp(prefix="nlpbatch-data-")
    atexit.register(shutil.rmtree, local, ignore_errors=True)
    for key in keys:
        target = Path(local) / key.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        with_retries(lambda k=key, t=target: fs.copy_files(k, str(t), filesystem, fs.LocalFileSystem()), f"read {key}")
    return str(Path(local) / path.lstrip("/")) if pattern else str(Path(local) / keys[0].lstrip("/"))


def load_hub_dataset(name: str, split: str, local_layout: str):
    """`datasets.load_dataset(name, split=split)` (`NAME:CONFIG` for a dataset's configuration); when the hub
    cannot be reached (offline, a firewall), a DataError that says how to use local files instead of a
    ConnectionError traceback."""
    from datasets import load_dataset

    repo, _, config = name.partition(":")  # NAME:CONFIG picks a configuration (wikiann:en, glue:mrpc)
    try:
        return load_dataset(repo, config or None, split=split)
    except (ConnectionError, OSError, ValueError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        hint = "Offline? "
        if "scripts are no longer supported" in str(err):  # datasets >= 4 runs no loading scripts
            hint = "It is a script-based dataset, which datasets 4 no longer runs: use a script-free copy, or "
        raise DataError(
            f"hub dataset {name!r} ({split}) could not be loaded: {first[:300]}. {hint}Pass --data-dir DIR "
            f"(or set $NLPBATCH_DATA_DIR) with {local_layout}, --train FILE --validation FILE, or --data FILE for "
            "evaluate"
        ) from err
