"""Reading the corpus. One line splitter serves both the driver's row count and the Ray Data read, so the two
can never disagree; files are streamed in blocks, so a read task holds one block, not one file.

JSONL rows are the lines of a file split on b"\\n" only (a trailing b"\\r" dropped, a UTF-8 BOM before the first
line dropped); a blank or whitespace-only line is not a row. Lines travel as bytes: decoding and JSON parsing
happen per row in `stages.parse_rows`, where a bad line becomes a reject naming its file and line.

Parquet is read one row group at a time; a row group that cannot be decoded yields reject rows for each of its
rows (the count comes from the footer), so a corrupt block is rejected, never lost.

CSV / TSV (a header row first; `.tsv` tab-separated and unquoted, as GLUE and most exports write it) is streamed
by pyarrow's CSV reader with every column read as text; a row with the wrong number of fields becomes a reject row
naming its line, and `csv_tables` serves both the driver's count and the read. The parser cannot tell an unclosed
quote from a long quoted value (it folds the rest of the file into one row), so a row spanning more than
`max_value_lines` lines is a reject naming its first line and the likely cause, never a silent fold.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

BOM = b"\xef\xbb\xbf"
BLOCK_ROWS = 4096
MAX_VALUE_LINES = 100  # CSV: a row spanning more lines is a reject (AnnotateConfig.csv_max_value_lines)
JSONL_SCHEMA = pa.schema([("raw", pa.binary()), ("line", pa.int64())])


def iter_lines(stream, chunk_size: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) for every row of a JSONL byte stream, read in chunks."""
    pending = b""
    number = 0
    first = True
    while chunk := stream.read(chunk_size):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            number += 1
            if first:
                line, first = line.removeprefix(BOM), False
            if line.strip():
                yield number, line.removesuffix(b"\r")
    if pending:
        number += 1
        if first:
            pending = pending.removeprefix(BOM)
        if pending.strip():
            yield number, pending.removesuffix(b"\r")


def jsonl_blocks(f, path: str) -> Iterator[pa.Table]:
    """Blocks of (raw line bytes, line number) of one JSON Lines stream."""
    raws, numbers = [], []
    try:
        for number, line in iter_lines(f):
            raws.append(line)
            numbers.append(number)
            if len(raws) >= BLOCK_ROWS:
                yield pa.table([pa.array(raws, pa.binary()), pa.array(numbers, pa.int64())], schema=JSONL_SCHEMA)
                raws, numbers = [], []
    except Exception as err:  # checked on the driver first; a file damaged since is still named
        raise OSError(f"{path}: cannot be read ({type(err).__name__}: {err})") from err
    if raws:
        yield pa.table([pa.array(raws, pa.binary()), pa.array(numbers, pa.int64())], schema=JSONL_SCHEMA)


class JsonlLines(FileBasedDatasource):
    """`jsonl_blocks` of each file; `include_paths` adds the file."""

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        yield from jsonl_blocks(f, path)


def parquet_blocks(f, columns: list[str]) -> Iterator[pa.Table]:
    """The named columns of one Parquet file as strings, one block per row group, plus `line` (the row's 1-based
    position in the file) and `_error` (why the row's group could not be read, else null)."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(f)
    first_row = 1
    for group in range(parquet.num_row_groups):
        n = parquet.metadata.row_group(group).num_rows
        errors: list[str | None] = [None] * n
        try:
            table = parquet.read_row_group(group, columns=columns)
            values = [_valid_utf8(name, _as_strings(name, table[name], errors), errors) for name in columns]
        except Exception as err:  # a corrupt block: its rows become rejects, the rest of the file is read
            errors = [f"unreadable Parquet row group {group}: {type(err).__name__}: {err}"[:1000]] * n
            values = [pa.nulls(n, pa.string()) for _ in columns]
        yield pa.table(
            [*values, pa.array(range(first_row, first_row + n), pa.int64()), pa.array(errors, pa.string())],
            names=[*columns, "line", "_error"],
        )
        first_row += n


class ParquetRowGroups(FileBasedDatasource):
    """`parquet_blocks` of each file."""

    def __init__(self, paths, columns: list[str], **kwargs):
        super().__init__(paths, **kwargs)
        self.columns = columns

    def _open_input_source(self, filesystem, path: str, **open_args):
        return filesystem.open_input_file(path)  # Parquet needs random access (footer first)

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        yield from parquet_blocks(f, self.columns)


def _valid_utf8(name: str, column: pa.ChunkedArray, errors: list[str | None]) -> pa.ChunkedArray:
    """The column with every value that is not valid UTF-8 (Parquet does not check) made null, and the reason put
    in `errors` for that row: one bad value is one reject, not a failed job."""
    try:
        column.validate(full=True)
        return column
    except pa.ArrowInvalid:
        pass
    values = []
    for i, raw in enumerate(column.cast(pa.binary()).to_pylist()):
        try:
            values.append(None if raw is None else raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            values.append(None)
            errors[i] = errors[i] or f"column {name!r} is not valid UTF-8 ({err.reason} at byte {err.start})"
    return pa.chunked_array([pa.array(values, pa.string())])


def _as_strings(name: str, column: pa.ChunkedArray, errors: list[str | None]) -> pa.ChunkedArray:
    """A column as text: Arrow's cast where there is one (numbers, dates), else JSON per value (lists, structs:
    a kept column may hold anything). A nested value that cannot be read (invalid UTF-8 inside it) is null, with
    its row's reason in `errors`: one reject, not its whole row group."""
    import json

    try:
        return column.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        pass
    values: list[str | None] = []
    for i, scalar in enumerate(column.combine_chunks()):
        try:
            value = scalar.as_py()
        except (UnicodeDecodeError, pa.ArrowInvalid) as err:
            values.append(None)
            errors[i] = errors[i] or f"column {name!r} holds a value that is not valid UTF-8 ({err})"[:300]
            continue
        values.append(None if value is None else json.dumps(value, ensure_ascii=False, default=str))
    return pa.chunked_array([pa.array(values, pa.string())], pa.string())


def check_parquet(
    filesystem,
    path: str,
    columns: list[str],
    optional: tuple[str, ...] = (),
    present: list[str] = (),
    hints: dict[str, str] | None = None,
) -> int:
    """Fail fast on a file that cannot be annotated at all (unreadable footer, missing column, a text column that is
    not text); return its row count. `hints`: per required column, the option that names it."""
    import pyarrow.parquet as pq

    from nlpbatch.config import ConfigError

    try:
        with filesystem.open_input_file(path) as fh:
            meta = pq.ParquetFile(fh)
            schema, rows = meta.schema_arrow, meta.metadata.num_rows
    except (OSError, pa.ArrowInvalid) as err:
        raise ConfigError(f"{path}: not a readable Parquet file ({err}); fix or remove it") from err
    names = schema.names
    require_columns(path, names, columns, present, hints)
    for column in columns:
        kind = schema.field(column).type
        if pa.types.is_dictionary(kind):  # dictionary-encoded text (pandas categoricals, Spark): its values count
            kind = kind.value_type
        allowed = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
        allowed = allowed or pa.types.is_string_view(kind)
        if column in optional:  # ids may be integers
            allowed = allowed or pa.types.is_integer(kind)
        if not allowed:
            raise ConfigError(f"{path}: column {column!r} is {kind}, expected string")
    return rows


def require_columns(
    path: str, names: list[str], columns: list[str], present: list[str] = (), hints: dict[str, str] | None = None
) -> None:
    """A table file's required `columns` (all missing ones at once, each with the option that names it) and kept
    `present` columns (a typo is named, not silently null) among its column `names`."""
    from nlpbatch.config import ConfigError

    missing = [column for column in columns if column not in names]
    if missing:
        fixes = "".join(f"; {h}" for h in dict.fromkeys((hints or {}).get(c) for c in missing) if h)
        which = " or ".join(repr(c) for c in missing)
        raise ConfigError(f"{path}: no column {which} (columns: {', '.join(names)}){fixes}")
    for column in present:
        if column not in names:
            raise ConfigError(f"{path}: no column {column!r} to keep (columns: {', '.join(names)})")


def csv_header(stream, path: str) -> list[str]:
    """The column names of a CSV / TSV file: its first line (a UTF-8 BOM dropped)."""
    import csv

    first = b""
    while b"\n" not in first and (chunk := stream.read(1 << 16)):
        first += chunk
    line = first.split(b"\n", 1)[0].removeprefix(BOM).removesuffix(b"\r").decode("utf-8", errors="replace")
    tsv = path.lower().endswith(".tsv")
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {}
    return next(csv.reader([line], **dialect), [])


def _csv_parse(path: str, bad: list | None = None):
    import pyarrow.csv as pacsv

    def keep(row) -> str:  # a row with the wrong number of fields: kept as a reject, never dropped unseen
        bad.append(row)
        return "skip"

    tsv = path.lower().endswith(".tsv")
    return pacsv.ParseOptions(
        delimiter="\t" if tsv else ",",
        quote_char=False if tsv else '"',
        newlines_in_values=not tsv,
        invalid_row_handler=keep if bad is not None else None,
    )


def csv_tables(
    stream, path: str, header: list[str], columns: list[str], max_value_lines: int = MAX_VALUE_LINES
) -> Iterator[pa.Table]:
    """The named columns of a CSV / TSV file as text, in blocks, plus `line` (the row's first line in the file; the
    header is line 1) and `_error` (a malformed row's reason, its values null). Every column is parsed, so a line
    break quoted in any of them moves the next rows' line numbers and counts against `max_value_lines`."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    bad: list = []
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, use_threads=False, block_size=1 << 22),
        parse_options=_csv_parse(path, bad),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            strings_can_be_null=False,
            check_utf8=False,  # checked per value below: one bad value is one reject
        ),
    )
    line = 2
    for batch in reader:
        n = batch.num_rows
        skipped = {r.number for r in bad}  # the block's malformed rows, by line: the good rows take the others
        lines = np.array([x for x in range(line, line + n + len(bad)) if x not in skipped][:n], dtype=np.int64)
        breaks = np.zeros(n, dtype=np.int64)  # line breaks quoted inside each row's values
        for column in batch.columns:
            breaks += pc.fill_null(pc.count_substring(column.view(pa.binary()), "\n"), 0).to_numpy()
        lines[1:] += np.cumsum(breaks)[:-1]
        errors: list[str | None] = [None] * n
        for i in np.flatnonzero(breaks >= max_value_lines):
            errors[i] = (
                f"a quoted value spans {breaks[i] + 1} lines from line {lines[i]} (over --csv-max-value-lines "
                f"{max_value_lines}): an unclosed quote on that line folds the rest of the file into one row; "
                "close the quote, or raise --csv-max-value-lines if such long values are meant"
            )
        values = [_valid_utf8(name, pa.chunked_array([batch.column(name)]), errors) for name in columns]
        if any(errors):  # the folded row's values are not the document's: null, the reason kept
            valid = pa.array([e is None for e in errors])
            values = [pc.if_else(valid, v, pa.scalar(None, pa.string())) for v in values]
        yield pa.table(
            [*values, pa.array(lines, pa.int64()), pa.array(errors, pa.string())], names=[*columns, "line", "_error"]
        )
        line += n + len(bad) + int(breaks.sum())
        if bad:  # rows skipped in this block: one reject row each
            reasons = [f"row with {r.actual_columns} fields, the header has {r.expected_columns}" for r in bad]
            numbers = [r.number or 0 for r in bad]
            yield pa.table(
                [*(pa.nulls(len(bad), pa.string()) for _ in columns), pa.array(numbers, pa.int64()), reasons],
                names=[*columns, "line", "_error"],
            )
            bad.clear()


def csv_blocks(
    f, path: str, columns: list[str], filesystem, max_value_lines: int = MAX_VALUE_LINES
) -> Iterator[pa.Table]:
    """`csv_tables` of one file; the header is read first, from a second look at the file."""
    with filesystem.open_input_stream(path) as head:
        header = csv_header(head, path)
    yield from csv_tables(f, path, header, columns, max_value_lines)


class CsvRows(FileBasedDatasource):
    """`csv_blocks` of each file."""

    def __init__(self, paths, columns: list[str], max_value_lines: int = MAX_VALUE_LINES, **kwargs):
        super().__init__(paths, **kwargs)
        self.columns, self.max_value_lines = columns, max_value_lines

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        yield from csv_blocks(f, path, self.columns, self._filesystem, self.max_value_lines)


def read_file(
    fmt: str, filesystem, path: str, columns: list[str], max_value_lines: int = MAX_VALUE_LINES
) -> Iterator[pa.Table]:
    """One input file's blocks, read in this process (the local runner) exactly as the Ray read task reads them,
    with the `path` column its `include_paths` adds."""
    if fmt == "parquet":
        opened = filesystem.open_input_file(path)
    else:
        opened = filesystem.open_input_stream(path, compression="detect")
    with opened as f:
        if fmt == "parquet":
            blocks = parquet_blocks(f, columns)
        elif fmt == "csv":
            blocks = csv_blocks(f, path, columns, filesystem, max_value_lines)
        else:
            blocks = jsonl_blocks(f, path)
        for block in blocks:
            yield block.append_column("path", pa.array([path] * block.num_rows, pa.string()))
