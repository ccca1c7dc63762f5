"""CoNLL-2003 column files -> `datasets.Dataset` with the hub `conll2003` features (tokens, ner_tags)."""

from __future__ import annotations

from pathlib import Path

from nlpbatch.data import DataError

# Index order of the hub's conll2003 ClassLabel, so ids mean the same for local and hub data.
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
HUB_NAME = "conll2003"


def ner_features():
    from datasets import ClassLabel, Features, Sequence, Value

    return Features(
        {
            "id": Value("string"),
            "tokens": Sequence(Value("string")),
            "ner_tags": Sequence(ClassLabel(names=NER_LABELS)),
        }
    )


def parse_conll(path: str | Path) -> list[dict]:
    """Parse one CoNLL file: `word ... TAG` per line (tag last), blank line between sentences.

    Every problem raises DataError naming `file:line`: a wrong column count, an unknown tag, or an IOB2
    inconsistency (an I-X that does not continue a B-X/I-X). Nothing is skipped silently.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CoNLL file not found")
    label_set = set(NER_LABELS)
    sentences: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    n_columns: int | None = None

    def flush() -> None:
        if tokens:
            sentences.append({"id": str(len(sentences)), "tokens": list(tokens), "ner_tags": list(tags)})
            tokens.clear()
            tags.clear()

    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                flush()
                continue
            parts = line.split()
            if parts[0] == "-DOCSTART-":
                flush()
                continue
            if n_columns is None:
                n_columns = len(parts)
                if n_columns < 2:
                    raise DataError(f"{path}:{lineno}: expected 'word ... TAG' columns, got {line!r}")
            elif len(parts) != n_columns:
                raise DataError(
                    f"{path}:{lineno}: expected {n_columns} columns like the first row, got {len(parts)}: {line!r}"
                )
            tag = parts[-1]
            if tag not in label_set:
                raise DataError(f"{path}:{lineno}: unknown NER tag {tag!r} (expected one of {', '.join(NER_LABELS)})")
            if tag.startswith("I-"):
                prev = tags[-1] if tags else "O"
                if prev == "O" or prev[2:] != tag[2:]:
                    raise DataError(
                        f"{path}:{lineno}: IOB2 tag {tag} follows {prev} (an I- tag must continue its own entity)"
                    )
            tokens.append(parts[0])
            tags.append(tag)
    flush()
    if not sentences:
        raise DataError(f"{path}: no sentences found (empty file?)")
    return sentences


def load_conll(path: str | Path, max_examples: int | None = None):
    """Read a CoNLL file into a Dataset with hub-identical features."""
    from datasets import Dataset

    rows = parse_conll(path)
    if max_examples is not None:
        rows = rows[:max_examples]
    columns = {key: [row[key] for row in rows] for key in ("id", "tokens", "ner_tags")}
    return Dataset.from_dict(columns, features=ner_features())


def load_conll_hub(name: str = HUB_NAME, split: str = "train", max_examples: int | None = None):
    """The hub's conll2003 reduced to the columns the local reader produces (one code path after loading)."""
    from nlpbatch.data import load_hub_dataset

    ds = load_hub_dataset(name, split, "conll2003/{train,validation}.txt")
    ds = ds.select_columns(["id", "tokens", "ner_tags"])
    if ds.features["ner_tags"].feature.names != NER_LABELS:
        raise DataError(f"hub dataset {name}: label set {ds.features['ner_tags'].feature.names} != {NER_LABELS}")
    if max_examples is not None:
        ds = ds.select(range(min(max_examples, len(ds))))
    return ds
