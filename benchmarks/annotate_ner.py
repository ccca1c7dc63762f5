"""`nlpbatch annotate ner` against the transformers token-classification pipeline (aggregation "simple", its best
batch size), on the same corpus, model and machine, in one run; plus the peak memory of the annotate job at 1x and
10x the rows (streaming: it must not grow with the corpus).

    python benchmarks/annotate_ner.py --model runs/ner --out benchmarks/results/annotate_ner_cpu.json

Tokens are counted once per document (the model tokenizer, no special tokens, no window overlap), so both sides
are divided by the same number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path


class PeakRss:
    """Peak summed RSS of this process and every Ray process on the machine, sampled every 0.2 s."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        me = os.getpid()
        while not self._stop.is_set():
            total = 0
            for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if proc.info["pid"] == me or "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd:
                    total += proc.info["memory_info"].rss if proc.info["memory_info"] else 0
            self.peak = max(self.peak, total)
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def corpus_tokens(texts: list[str], model: str) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    return sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])


def run_pipeline(texts: list[str], model: str, batch_size: int, threads: int) -> float:
    import torch
    from transformers import pipeline

    torch.set_num_threads(threads)
    tagger = pipeline("token-classification", model=model, aggregation_strategy="simple", stride=128, device=-1)
    t0 = time.perf_counter()
    for _ in tagger(texts, batch_size=batch_size):
        pass
    return time.perf_counter() - t0


def run_ours(corpus: str, model: str, out: str, actors: int, tokens: int | None = None) -> dict:
    from nlpbatch.annotate.pipeline import run_annotation
    from nlpbatch.config import load_annotate_config

    cfg = load_annotate_config(task="ner", model=model, input=corpus, output=out, min_actors=actors, max_actors=actors)
    with PeakRss() as mem:
        t0 = time.perf_counter()
        manifest = run_annotation(cfg)
        wall = time.perf_counter() - t0
    stream = manifest["timings"]["stream_seconds"]
    return {
        **({"tokens_per_second": tokens / stream} if tokens else {}),
        "wall_seconds": wall,
        "stream_seconds": stream,
        "rows_out": manifest["rows_out"],
        "peak_rss_mb": mem.peak / 2**20,
        "stage_task_seconds": manifest["timings"]["stage_task_seconds"],
        "actors": actors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a fine-tuned NER model dir")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--scale", type=int, default=10, help="memory check at rows x scale")
    parser.add_argument("--pipeline-batch-sizes", default="1,8,32")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/annotate_ner_cpu.json")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import ray
    import torch
    import transformers

    from nlpbatch.corpus import write_corpus

    threads = os.cpu_count() or 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "NER annotation, ours vs transformers pipeline (simple)",
        "machine": {
            "platform": platform.platform(),
            "cpus": threads,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "model": args.model,
    }
    with tempfile.TemporaryDirectory() as tmp:
        small, large = f"{tmp}/c1", f"{tmp}/c10"
        write_corpus(args.data_dir, args.rows, small)
        write_corpus(args.data_dir, args.rows * args.scale, large, files=args.scale)
        texts = pq.read_table(f"{small}/part-00000.parquet")["text"].to_pylist()
        tokens = corpus_tokens(texts, args.model)
        large_texts = [t for p in sorted(Path(large).glob("*.parquet")) for t in pq.read_table(p)["text"].to_pylist()]
        large_tokens = corpus_tokens(large_texts, args.model)
        result["corpus"] = {"rows": len(texts), "tokens": tokens}

        pipe = {}
        for bs in [int(b) for b in args.pipeline_batch_sizes.split(",")]:
            seconds = run_pipeline(texts, args.model, bs, threads)
            pipe[str(bs)] = {"seconds": seconds, "tokens_per_second": tokens / seconds}
            print("pipeline", bs, pipe[str(bs)], flush=True)
        best = max(pipe.values(), key=lambda v: v["tokens_per_second"])
        result["pipeline"] = {"by_batch_size": pipe, "best_tokens_per_second": best["tokens_per_second"]}

        ours = run_ours(small, args.model, f"{tmp}/o1", args.actors, tokens)
        ours["tokens_per_second_incl_startup"] = tokens / ours["wall_seconds"]
        print("ours", ours, flush=True)
        result["ours_1x"] = ours
        result["ratio_vs_pipeline"] = ours["tokens_per_second"] / best["tokens_per_second"]
        Path(args.out).write_text(json.dumps(result, indent=2))  # partial results survive a failure below
        ray.shutdown()  # a fresh cluster for the memory comparison
        result["ours_10x"] = run_ours(large, args.model, f"{tmp}/o10", args.actors, large_tokens)
        result["ratio_vs_pipeline_10x_rows"] = result["ours_10x"]["tokens_per_second"] / best["tokens_per_second"]
        ray.shutdown()
        result["peak_rss_mb"] = {"1x": ours["peak_rss_mb"], f"{args.scale}x": result["ours_10x"]["peak_rss_mb"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("corpus", "ratio_vs_pipeline", "peak_rss_mb")}, indent=2))


if __name__ == "__main__":
    main()
