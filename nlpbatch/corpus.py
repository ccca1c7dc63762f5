"""`nlpbatch corpus`: benchmark corpora built from the shared CoNLL sentences and SQuAD paragraphs, in four length
mixes (`KINDS`): the default (snippets, paragraphs and some documents longer than a 512-token window), short (one
sentence: tweets, titles; about 20 tokens), mixed (mostly single sentences, a few articles; about 50 tokens on
average) and long (articles of 2-6 paragraphs, mostly longer than one window)."""

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


KINDS = ("default", "short", "mixed", "long")


def build_rows(data_dir: str, rows: int, seed: int = 0, kind: str = "default") -> list[dict]:
    """Documents of one length mix (`KINDS`). default: 60% 1-5 CoNLL sentences, 30% one SQuAD paragraph, 10% 3-6
    paragraphs (mostly > 512 tokens); short: one CoNLL sentence of 5+ words; mixed: 93% one sentence, 7% an article
    of 1-4 paragraphs; long: an article of 2-6 paragraphs."""
    if kind not in KINDS:
        raise ValueError(f"corpus kind {kind!r} is not one of {', '.join(KINDS)}")
    rng = random.Random(seed)
    sentences, paragraphs = _sentences(data_dir), _paragraphs(data_dir)
    if kind in ("short", "mixed"):
        sentences = [s for s in sentences if len(s.split()) >= 5]

    def article(least: int, most: int) -> str:
        return "\n\n".join(rng.choice(paragraphs) for _ in range(rng.randint(least, most)))

    out = []
    for i in range(rows):
        draw = rng.random()
        if kind == "short" or (kind == "mixed" and draw < 0.93):
            text = rng.choice(sentences)
        elif kind == "mixed":
            text = article(1, 4)
        elif kind == "long":
            text = article(2, 6)
        elif draw < 0.6:
            text = " ".join(rng.choice(sentences) for _ in range(rng.randint(1, 5)))
        elif draw < 0.9:
            text = rng.choice(paragraphs)
        else:
            text = article(3, 6)
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
    kind: str = "default",
) -> list[str]:
    import pyarrow as pa

    from nlpbatch.annotate.sink import write_table
    from nlpbatch.storage import filesystem_for, join

    fs, base = filesystem_for(output, s3_endpoint)
    fs.create_dir(base, recursive=True)
    table = pa.Table.from_pylist(build_rows(data_dir, rows, seed, kind))
    step = -(-rows // files)
    paths = []
    for f in range(files):
        path = join(base, f"part-{f:05d}.{'parquet' if fmt == 'parquet' else 'jsonl'}")
        write_table(table.slice(f * step, step), fs, path, fmt)
        paths.append(path)
    return paths
