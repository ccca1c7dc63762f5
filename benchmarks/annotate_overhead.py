"""What the annotate job costs around the model: the whole `annotate ner` job (read, parse, tokenize, predict,
decode, write) with a tiny random model (2 layers, hidden 32, so the model itself costs almost nothing), against
the fast tokenizer alone on the same texts, on the same cores, in one run.

    python benchmarks/annotate_overhead.py --out benchmarks/results/annotate_overhead_cpu.json

Target (the CPU throughput issue): the job runs at >= 50% of the tokenizer-alone tokens/s. Tokens are counted once
per document (no special tokens, no window overlap) for both. The tokenizer runs its batch API with all cores
(Rust threads), with and without the character offsets the job needs; figures per core are given beside. The job
runs as a user would: `nlpbatch export` (ONNX Runtime int8), then `annotate` with its defaults. To tell the
framework's cost from the model's, the bare model step (one thread, the job's windows and forward-pass size) is
measured too, and the serial floor per core: tokenizer then model, nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def tiny_model(path: str) -> str:
    """2 layers, hidden 32, random weights, the bundled tokenizer: a model that costs almost nothing."""
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    from nlpbatch.data.conll import NER_LABELS
    from nlpbatch.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=len(NER_LABELS),
        id2label=dict(enumerate(NER_LABELS)),
        label2id={n: i for i, n in enumerate(NER_LABELS)},
    )
    BertForTokenClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tokenizer_alone(texts: list[str], model: str, offsets: bool, batch: int = 1000) -> float:
    """Seconds for the fast tokenizer's batch API over all texts (windows of 512 with stride 128, as the job)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    kwargs = {"truncation": True, "max_length": 512, "stride": 128, "return_overflowing_tokens": True}
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        tok(texts[start : start + batch], return_offsets_mapping=offsets, **kwargs)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--out", default="benchmarks/results/annotate_overhead_cpu.json")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import ray
    from engine_batch import tokens_per_second
    from transformers import AutoTokenizer

    from nlpbatch.annotate.pipeline import run_annotation
    from nlpbatch.config import load_annotate_config
    from nlpbatch.corpus import write_corpus
    from nlpbatch.engines import export_onnx, load_engine

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(f"{tmp}/tiny")
        export_onnx(model, "int8")
        write_corpus(args.data_dir, args.rows, f"{tmp}/corpus")
        texts = pq.read_table(f"{tmp}/corpus/part-00000.parquet")["text"].to_pylist()
        tok = AutoTokenizer.from_pretrained(model)
        tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])

        plain, with_offsets = tokenizer_alone(texts, model, False), tokenizer_alone(texts, model, True)
        windows = tok(texts, truncation=True, max_length=512, stride=128, return_overflowing_tokens=True)["input_ids"]
        engine = load_engine("ner", model, "auto", threads=1)
        window_tokens = sum(len(w) for w in windows)
        model_alone = tokens_per_second(engine, windows, 512) * tokens / window_tokens  # per document token
        cfg = load_annotate_config(task="ner", model=model, input=f"{tmp}/corpus", output=f"{tmp}/out", quiet=True)
        t0 = time.perf_counter()
        manifest = run_annotation(cfg)
        wall = time.perf_counter() - t0
        resources = ray.cluster_resources()
        ray.shutdown()

    stream = manifest["timings"]["stream_seconds"]
    job = tokens / stream
    floor = 1 / (cores / (tokens / with_offsets) + 1 / model_alone)  # per core: tokenize, then the model
    result = {
        "benchmark": "annotate ner job with a tiny random model vs the fast tokenizer alone, same texts and cores",
        "machine": {"platform": platform.platform(), "cpus": cores},
        "corpus": {"rows": len(texts), "tokens": tokens},
        "tokenizer_alone": {
            "tokens_per_second": tokens / plain,
            "tokens_per_second_per_core": tokens / plain / cores,
            "with_offsets_tokens_per_second": tokens / with_offsets,
        },
        "model_alone": {
            "engine": engine.name,
            "tokens_per_second_one_thread": model_alone,
            "note": "the bare model step over the job's windows (512 tokens a pass), per document token",
        },
        "serial_floor_per_core": {
            "tokens_per_second": floor,
            "note": "tokenizer (with offsets) then the bare model, per core, with no framework at all",
        },
        "job": {
            "tokens_per_second": job,
            "tokens_per_second_per_core": job / cores,
            "stream_seconds": stream,
            "wall_seconds_incl_ray_start": wall,
            "stage_task_seconds": manifest["timings"]["stage_task_seconds"],
            "layout": "fused" if cfg.fused else "split",
            "ray_logical_cpus": resources.get("CPU"),
        },
        "job_share_of_tokenizer_alone": job / (tokens / plain),
        "job_share_of_tokenizer_with_offsets": job / (tokens / with_offsets),
        "job_share_of_serial_floor": job / cores / floor,
        "target_share": 0.5,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
