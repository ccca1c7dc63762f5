"""`nlpbatch corpus`: a benchmark corpus with a realistic length mix, built from the shared CoNLL sentences and
SQuAD paragraphs: short news snippets, paragraph-sized documents, and some longer than a 512-token window."""

from __future__ import annotations

import random


def _sentences(data_dir: str) -> list[str]:
    from pathlib import Path

    from nlpbatch.data.conll import parse_conll

    path = Path(data_dir) / "conll2003" / "train.txt"
    return [" ".join(s["tokens"]) for s in parse_conll(path)]


def _paragraphs(data_dir: str) -> list[str]:
    import json
    from pathlib import Path

    doc = json.loads((Path(data_dir) / "squad" / "train.json").read_text(encoding="utf-8"))
    return [p["context"] for article in doc["data"] for p in article["paragraphs"]]


def build_rows(data_dir: str, rows: int, seed: int = 0) -> list[dict]:
    """Documents: 60% 1-5 CoNLL sentences, 30% one SQuAD paragraph, 10% 3-6 paragraphs (mostly > 512 tokens)."""
    rng = random.Random(seed)
    sentences, paragraphs = _sentences(data_dir), _paragraphs(data_dir)
    out = []
    for i in range(rows):
        kind = rng.random()
        if kind < 0.6:
            text = " ".join(rng.choice(sentences) for _ in range(rng.randint(1, 5)))
        elif kind < 0.9:
            text = rng.choice(paragraphs)
        else:
            text = "\n\n".join(rng.choice(paragraphs) for _ in range(rng.randint(3, 6)))
        out.append({"id": f"doc-{i:08d}", "text": text})
    return out


def write_corpus(
    data_dir: str,
    rows: int,
    output: str,
    seed: int = 0,
    fmt: str = "parquet",
    files: int = 1,
    s3_endpoint: str | None = None,
) -> list[str]:
    import pyarrow as pa

    from nlpbatch.annotate.sink import write_table
    from nlpbatch.storage import filesystem_for, join

    fs, base = filesystem_for(output, s3_endpoint)
    fs.create_dir(base, recursive=True)
    table = pa.Table.from_pylist(build_rows(data_dir, rows, seed))
    step = -(-rows // files)
    paths = []
    for f in range(files):
        path = join(base, f"part-{f:05d}.{'parquet' if fmt == 'parquet' else 'jsonl'}")
        write_table(table.slice(f * step, step), fs, path, fmt)
        paths.append(path)
    return paths
