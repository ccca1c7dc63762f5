"""Engine throughput by forward-pass size on this machine: the bare model step (no Ray, no tokenizer, no decode)
for each engine and `--batch-tokens` value, one thread, on the windows of a `nlpbatch corpus`. It decides the
CPU default of `annotate --batch-tokens`.

    python benchmarks/engine_batch.py --model runs/ner --out benchmarks/results/engine_batch_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def corpus_windows(data_dir: str, rows: int, model: str, folder: str) -> list:
    """The token ids of every 512-token window (stride 128) of a `nlpbatch corpus` of `rows` documents."""
    import numpy as np
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from nlpbatch.corpus import write_corpus

    write_corpus(data_dir, rows, f"{folder}/corpus")
    texts = pq.read_table(f"{folder}/corpus/part-00000.parquet")["text"].to_pylist()
    enc = AutoTokenizer.from_pretrained(model)(
        texts, truncation=True, max_length=512, stride=128, return_overflowing_tokens=True
    )
    return [np.asarray(ids) for ids in enc["input_ids"]]


def tokens_per_second(engine, windows: list, budget: int) -> float:
    """The bare model step over all windows, in length buckets of at most `budget` padded tokens."""
    import numpy as np

    from nlpbatch.annotate.predictors import length_buckets

    t0 = time.perf_counter()
    for group in length_buckets([len(w) for w in windows], budget):
        width = len(windows[group[0]])
        ids = np.zeros((len(group), width), np.int64)
        mask = np.zeros_like(ids)
        for row, i in enumerate(group):
            ids[row, : len(windows[i])] = windows[i]
            mask[row, : len(windows[i])] = 1
        engine(ids, mask, np.zeros_like(ids))
    return sum(len(w) for w in windows) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a fine-tuned NER model dir (copied, then exported)")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--batch-tokens", default="512,1024,2048,4096,16384")
    parser.add_argument("--backends", default="torch,onnx-fp32,onnx-int8")
    parser.add_argument("--out", default="benchmarks/results/engine_batch_cpu.json")
    args = parser.parse_args()

    from nlpbatch.engines import export_onnx, load_engine

    result: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        model = f"{tmp}/model"
        shutil.copytree(args.model, model, ignore=shutil.ignore_patterns("onnx", "ray_runs"))
        export_onnx(model, "int8")
        windows = corpus_windows(args.data_dir, args.rows, model, tmp)
        tokens = sum(len(w) for w in windows)
        result["windows"], result["tokens"] = len(windows), tokens
        for backend in args.backends.split(","):
            engine = load_engine("ner", model, backend, threads=1)
            result[backend] = {}
            for budget in [int(b) for b in args.batch_tokens.split(",")]:
                result[backend][str(budget)] = tokens_per_second(engine, windows, budget)
                print(backend, budget, round(result[backend][str(budget)]), "tokens/s", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
