"""Which NER aggregation should `annotate` use by default? Entity F1 on the CoNLL validation set of `simple`,
`first` and `max`, measured through the annotate path (the real job: Ray Data, the default engine), in one run.

    python benchmarks/ner_aggregation.py --model runs/ner --out benchmarks/results/ner_aggregation_cpu.json

Each validation sentence becomes one document (its words joined by spaces, so every word's character span is
known); the job's entity spans are mapped back to word-level BIO tags (a word inside a span gets its label: B- on
the span's first word, I- after) and scored with seqeval against the gold tags, as `evaluate` scores. Also counted:
entities that start or end inside a word (sub-word fragments such as `K` / `hart` / `oum`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path


def word_spans(tokens: list[str]) -> list[tuple[int, int]]:
    spans, start = [], 0
    for token in tokens:
        spans.append((start, start + len(token)))
        start += len(token) + 1
    return spans


def to_tags(entities: list[dict], spans: list[tuple[int, int]]) -> tuple[list[str], int]:
    """Word-level BIO tags from character-level entities, and how many entities cut a word."""
    tags, fragments = ["O"] * len(spans), 0
    starts, ends = {s for s, _ in spans}, {e for _, e in spans}
    for entity in entities:
        fragments += entity["start"] not in starts or entity["end"] not in ends
        inside = [i for i, (s, e) in enumerate(spans) if s < entity["end"] and e > entity["start"]]
        for n, i in enumerate(inside):
            if tags[i] == "O":
                tags[i] = ("B-" if n == 0 else "I-") + entity["label"]
    return tags, fragments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--max-sentences", type=int, help="only the first N validation sentences (smoke runs)")
    parser.add_argument("--out", default="benchmarks/results/ner_aggregation_cpu.json")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import ray

    from nlpbatch.annotate.pipeline import run_annotation
    from nlpbatch.config import load_annotate_config
    from nlpbatch.data.conll import load_conll
    from nlpbatch.metrics import seqeval_scores

    raw = load_conll(Path(args.data_dir) / "conll2003" / "validation.txt", args.max_sentences)
    names = raw.features["ner_tags"].feature.names
    sentences = [(r["tokens"], [names[t] for t in r["ner_tags"]]) for r in raw]
    result = {
        "benchmark": "entity F1 by NER aggregation through `nlpbatch annotate` (CoNLL validation, a doc per sentence)",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "model": args.model,
        "sentences": len(sentences),
        "aggregations": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "validation.jsonl"
        corpus.write_text(
            "".join(json.dumps({"id": str(i), "text": " ".join(w)}) + "\n" for i, (w, _) in enumerate(sentences))
        )
        for aggregation in ("simple", "first", "max"):
            cfg = load_annotate_config(
                task="ner",
                model=args.model,
                input=str(corpus),
                output=f"{tmp}/out-{aggregation}",
                aggregation=aggregation,
                quiet=True,
            )
            manifest = run_annotation(cfg)
            ray.shutdown()
            rows = {}
            for path in manifest["output_files"]:  # relative to the output
                if path.startswith("data/"):
                    rows.update({r["id"]: r["entities"] for r in pq.read_table(f"{cfg.output}/{path}").to_pylist()})
            pred, fragments, entities = [], 0, 0
            for i, (words, _) in enumerate(sentences):
                tags, cut = to_tags(rows.get(str(i), []), word_spans(words))
                pred.append(tags)
                fragments += cut
                entities += len(rows.get(str(i), []))
            scores = seqeval_scores([g for _, g in sentences], pred)
            result["aggregations"][aggregation] = {
                "overall_f1": scores["overall_f1"],
                "overall_precision": scores["overall_precision"],
                "overall_recall": scores["overall_recall"],
                "entities": entities,
                "entities_cutting_a_word": fragments,
                "rows_out": manifest["rows_out"],
            }
            print(aggregation, result["aggregations"][aggregation], flush=True)
    best = max(result["aggregations"], key=lambda k: result["aggregations"][k]["overall_f1"])
    result["best"] = best
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
