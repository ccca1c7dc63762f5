"""CoNLL-style column files (CoNLL-2003, WNUT-17, any IOB2 tag set) -> `datasets.Dataset` with the hub's NER
features (tokens, ner_tags as a ClassLabel). The label set comes from the data (or is given): CoNLL-2003's nine
tags keep the hub's index order, any other set is `O` then each type's `B-`/`I-` in alphabetical order of types."""

from __future__ import annotations

import re
from pathlib import Path

from nlpbatch.data import DataError, read_text
from nlpbatch.data.schemes import SchemeError, sentences_to_iob2
from nlpbatch.progress import say

# Index order of the hub's conll2003 ClassLabel, so ids mean the same for local and hub data.
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
HUB_NAME = "lhoestq/conll2003"  # a script-free copy: datasets 4 runs no loading scripts (the hub's "conll2003")


def ner_features(labels: list[str] = NER_LABELS):
    from datasets import ClassLabel, Features, Sequence, Value

    return Features(
        {
            "id": Value("string"),
            "tokens": Sequence(Value("string")),
            "ner_tags": Sequence(ClassLabel(names=list(labels))),
        }
    )


def label_set(tags, given: list[str] | None = None) -> list[str]:
    """The label list for these tags: `given` (in its order) plus any type it lacks, appended; else derived
    (CoNLL-2003's own order when the types are exactly its four)."""
    types = sorted({t[2:] for t in tags if t != "O"})
    if given:
        known = set(given)
        extra = [f"{p}-{t}" for t in types for p in "BI" if f"{p}-{t}" not in known]
        return list(given) + extra
    if set(types) <= {"PER", "ORG", "LOC", "MISC"}:
        return NER_LABELS
    return ["O"] + [f"{p}-{t}" for t in types for p in "BI"]


def parse_labels(value: str | None) -> list[str] | None:
    """--labels: a comma list of tags or of types (`PER,ORG` means O, B-PER, I-PER, ...), or a file with one a line."""
    if not value:
        return None
    path = Path(value)
    items = path.read_text(encoding="utf-8").split() if path.is_file() else value.split(",")
    items = [i.strip() for i in items if i.strip()]
    tags = ["O"] + [t for i in items if i != "O" for t in ((i,) if i[:2] in ("B-", "I-") else (f"B-{i}", f"I-{i}"))]
    return list(dict.fromkeys(tags))


def _token_line(parts: list[str], n_columns: int | None, seen: list[str]) -> bool:
    """Whether a line that starts with '#' is a token row: as many columns as the file's rows, a tag last."""
    last = parts[-1]
    is_tag = last == "O" or re.fullmatch(r"[BIESLU]-\S+", last) is not None or last in seen
    return n_columns is not None and len(parts) == n_columns and is_tag


def parse_conll(path: str | Path, scheme: str = "auto", tag_column: int | None = None) -> list[dict]:
    """Parse one column file: `word ... TAG` per line (tag last; spaces or tabs), blank line between sentences,
    `-DOCSTART-` lines and `#` comment lines skipped; `tag_column` (1-based) when the tag is not last. Tags in any
    scheme of `schemes.SCHEMES` (`auto`: detected over the whole file, and said when it is not IOB2) come back as
    IOB2.

    Every problem raises DataError naming `file:line`: a wrong column count, or a tag sequence the scheme does not
    allow (an I-X that continues nothing in IOB2, an unclosed BIOES entity, ...). Nothing is skipped silently.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CoNLL file not found")
    sentences: list[tuple[list[str], list[str], list[int]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    n_columns: int | None = None

    def flush() -> None:
        if tokens:
            sentences.append((list(tokens), list(tags), list(lines)))
            tokens.clear()
            tags.clear()
            lines.clear()

    for lineno, raw in enumerate(read_text(path).split("\n"), start=1):
        line = raw.strip()
        if not line:
            flush()
            continue
        parts = line.split()
        if (line.startswith("# ") or line == "#") and not _token_line(parts, n_columns, tags):
            continue  # a comment; `# SYM O O` in a file of 3 columns is the token '#', tagged
        if parts[0] == "-DOCSTART-":
            flush()
            continue
        if n_columns is None:
            n_columns = len(parts)
            if n_columns < 2:
                raise DataError(f"{path}:{lineno}: expected 'word ... TAG' columns, got {line!r}")
            if tag_column is not None and not 2 <= tag_column <= n_columns:
                raise DataError(f"{path}:{lineno}: --tag-column {tag_column}, but the file has {n_columns} columns")
        elif len(parts) != n_columns:
            raise DataError(
                f"{path}:{lineno}: expected {n_columns} columns like the first row, got {len(parts)}: {line!r}"
            )
        tokens.append(parts[0])
        tags.append(parts[-1 if tag_column is None else tag_column - 1])
        lines.append(lineno)
    flush()
    if not sentences:
        raise DataError(f"{path}: no sentences found (empty file?)")
    detected = scheme == "auto"
    try:
        scheme, converted = sentences_to_iob2([t for _, t, _ in sentences], scheme)
    except SchemeError as err:
        hint = "" if err.scheme != "iob2" else "; another scheme? --tag-scheme iob1|bioes|io"
        raise DataError(f"{path}:{sentences[err.sentence][2][err.index]}: {err}{hint}") from err
    if detected and scheme != "iob2":
        say(f"{path}: tags read as {scheme.upper()} (detected), converted to IOB2; --tag-scheme sets it")
    rows = [
        {"id": str(number), "tokens": words, "ner_tags": tags}
        for number, ((words, _, _), tags) in enumerate(zip(sentences, converted))
    ]
    return rows


def load_conll(
    path: str | Path,
    max_examples: int | None = None,
    labels: list[str] | None = None,
    scheme: str = "auto",
    tag_column: int | None = None,
):
    """Read a column file into a Dataset with hub-identical features; its label list: `labels` plus any type they
    lack, else the file's own (`label_set`)."""
    return rows_dataset(parse_conll(path, scheme, tag_column), max_examples, labels)


def rows_dataset(rows: list[dict], max_examples: int | None = None, labels: list[str] | None = None):
    """{"id", "tokens", "ner_tags" (IOB2 strings)} rows -> a Dataset with ClassLabel tags (`label_set`)."""
    from datasets import Dataset

    if max_examples is not None:
        rows = rows[:max_examples]
    names = label_set([t for row in rows for t in row["ner_tags"]], labels)
    columns = {key: [row[key] for row in rows] for key in ("id", "tokens", "ner_tags")}
    return Dataset.from_dict(columns, features=ner_features(names))


def load_conll_hub(
    name: str = HUB_NAME,
    split: str = "train",
    max_examples: int | None = None,
    tokens_column: str | None = None,
    tags_column: str | None = None,
    scheme: str = "auto",
):
    """A hub dataset (or a local folder laid out as one) reduced to the columns the local readers produce: its
    `tokens_column` (tokens) and `tags_column` (ner_tags, else tags) of ClassLabel ids keep the dataset's label
    names and order; string tags go through the same scheme conversion as files."""
    from nlpbatch.data import load_hub_dataset

    ds = load_hub_dataset(name, split, "conll2003/{train,validation}.txt")
    tokens_column = tokens_column or "tokens"
    tags_column = tags_column or ("ner_tags" if "ner_tags" in ds.column_names else "tags")
    missing = [c for c in (tokens_column, tags_column) if c not in ds.column_names]
    if missing:
        raise DataError(
            f"hub dataset {name} ({split}): no column {', '.join(map(repr, missing))} (columns: "
            f"{', '.join(ds.column_names)}); --tokens-column and --tags-column name the token and tag columns"
        )
    if max_examples is not None:
        ds = ds.select(range(min(max_examples, len(ds))))
    feature = getattr(ds.features[tags_column], "feature", None)
    if not hasattr(feature, "names"):  # tags as strings: the file readers' path
        rows = [
            {"id": str(i), "tokens": list(r[tokens_column]), "tags": [str(t) for t in r[tags_column]]}
            for i, r in enumerate(ds.select_columns([tokens_column, tags_column]))
        ]
        try:
            _, converted = sentences_to_iob2([r.pop("tags") for r in rows], scheme)
        except SchemeError as err:
            raise DataError(f"hub dataset {name} ({split}): row {err.sentence}: {err}") from err
        return rows_dataset([{**r, "ner_tags": tags} for r, tags in zip(rows, converted)])
    from datasets import Value

    ids = [str(i) for i in (ds["id"] if "id" in ds.column_names else range(len(ds)))]
    ds = ds.select_columns([tokens_column, tags_column])
    ds = ds.rename_columns({c: t for c, t in ((tokens_column, "tokens"), (tags_column, "ner_tags")) if c != t})
    return ds.add_column("id", ids, feature=Value("string")).select_columns(["id", "tokens", "ner_tags"])
