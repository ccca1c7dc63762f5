"""`nlpbatch annotate ner` with each inference engine (torch fp32, ONNX Runtime fp32, ONNX Runtime int8) against the
transformers token-classification pipeline (aggregation "simple", its best batch size), on the same corpus, model
and machine, in one run; the CoNLL validation F1 of each engine (the project's own evaluate); and the peak memory of
the annotate job at 1x and 10x the rows (streaming: it must not grow with the corpus).

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


def machine_info() -> dict:
    """The machine and library versions a benchmark's JSON records."""
    import onnxruntime
    import torch
    import transformers

    from nlpbatch.engines.choice import cpu_signature

    return {
        "platform": platform.platform(),
        **cpu_signature(),  # the CPU and the instruction sets int8 and bf16 kernels dispatch on, as `auto` keys them
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


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


def pipeline_at_best_batch(run, model, texts, tokens, sweep_texts, sweep_tokens, batch_sizes: str, threads) -> dict:
    """The pipeline (`run(texts, model, batch_size, threads)` -> seconds) at each batch size on the sweep texts,
    then at the fastest on the whole corpus."""
    sweep = {}
    for bs in [int(b) for b in batch_sizes.split(",")]:
        seconds = run(sweep_texts, model, bs, threads)
        sweep[str(bs)] = {"rows": len(sweep_texts), "tokens_per_second": sweep_tokens / seconds}
        print("pipeline sweep", bs, sweep[str(bs)], flush=True)
    best = int(max(sweep, key=lambda k: sweep[k]["tokens_per_second"]))
    seconds = run(texts, model, best, threads)
    result = {"sweep": sweep, "best_batch_size": best, "tokens_per_second": tokens / seconds, "seconds": seconds}
    print("pipeline", result, flush=True)
    return result


def model_and_corpora(args, tmp: str, result: dict) -> tuple:
    """(model, corpus dir, its texts and tokens, the sweep's texts and tokens): `args.model` copied into `tmp` and
    exported to int8 ONNX (its seconds in `result`), `args.rows` and `args.sweep_rows` corpus documents written."""
    import shutil

    import pyarrow.parquet as pq

    from nlpbatch.api import export
    from nlpbatch.corpus import write_corpus

    model = f"{tmp}/model"
    shutil.copytree(args.model, model, ignore=shutil.ignore_patterns("onnx", "openvino", "ray_runs"))
    t0 = time.perf_counter()
    export(model)  # what `nlpbatch export` writes
    result["export_seconds"] = time.perf_counter() - t0
    corpus, sweep = f"{tmp}/corpus", f"{tmp}/sweep"
    write_corpus(args.data_dir, args.rows, corpus)
    write_corpus(args.data_dir, args.sweep_rows, sweep)
    texts = pq.read_table(f"{corpus}/part-00000.parquet")["text"].to_pylist()
    sweep_texts = pq.read_table(f"{sweep}/part-00000.parquet")["text"].to_pylist()
    tokens, sweep_tokens = corpus_tokens(texts, model), corpus_tokens(sweep_texts, model)
    result["corpus"] = {"rows": len(texts), "tokens": tokens}
    return model, corpus, texts, tokens, sweep_texts, sweep_tokens


def run_ours(
    corpus: str, model: str, out: str, tokens: int | None = None, backend: str = "auto", task: str = "ner", **settings
) -> dict:
    """The annotate job with its defaults, except `backend` and `settings` (layout, max_actors, cpus_per_actor)."""
    from nlpbatch.annotate.pipeline import run_annotation
    from nlpbatch.config import load_annotate_config

    cfg = load_annotate_config(task=task, model=model, input=corpus, output=out, backend=backend, **settings)
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
        "backend": backend,
        "settings": settings or "defaults",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a fine-tuned NER model dir (copied; the copy is exported)")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--sweep-rows", type=int, default=500, help="the pipeline's batch-size sweep runs on these")
    parser.add_argument("--memory-rows", type=int, default=1000, help="memory check at this many rows and x scale")
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--pipeline-batch-sizes", default="1,8")
    parser.add_argument("--backends", default="torch,onnx-fp32,onnx-int8")
    parser.add_argument(
        "--layouts",
        default="fused:2x1,split:2x1,fused:1x2",
        help="int8 runs with other layouts, LAYOUT:ACTORSxCPUS each (the default settings are measured anyway)",
    )
    parser.add_argument("--eval-examples", type=int, help="score F1 on the first N validation sentences (all)")
    parser.add_argument("--out", default="benchmarks/results/annotate_ner_cpu.json")
    args = parser.parse_args()

    import ray

    from nlpbatch.corpus import write_corpus
    from nlpbatch.evaluation import eval_config, evaluate_model

    threads = os.cpu_count() or 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "NER annotation by engine vs the transformers pipeline (simple), CoNLL F1 per engine",
        "machine": machine_info(),
        "model": args.model,
    }

    def save() -> None:  # partial results survive a failure further on
        Path(args.out).write_text(json.dumps(result, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        model, corpus, texts, tokens, sweep_texts, sweep_tokens = model_and_corpora(args, tmp, result)

        result["pipeline"] = pipeline_at_best_batch(
            run_pipeline, model, texts, tokens, sweep_texts, sweep_tokens, args.pipeline_batch_sizes, threads
        )
        save()

        result["ours"] = {}
        for backend in args.backends.split(","):
            ours = run_ours(corpus, model, f"{tmp}/out-{backend}", tokens, backend)
            ours["ratio_vs_pipeline"] = ours["tokens_per_second"] / result["pipeline"]["tokens_per_second"]
            ray.shutdown()  # a fresh cluster for each engine
            metrics, _ = evaluate_model(
                eval_config("ner", model), args.data_dir, max_examples=args.eval_examples, backend=backend
            )
            ours["validation_f1"] = metrics["overall_f1"]
            result["ours"][backend] = ours
            print("ours", backend, {k: ours[k] for k in ("tokens_per_second", "ratio_vs_pipeline", "validation_f1")})
            save()
        result["default_backend"] = "auto (after `nlpbatch export`: openvino-int8, else onnx-int8)"

        result["layouts"] = {}  # the CPU layout decision: fused vs split, 2 actors x 1 thread vs 1 x 2
        for spec in filter(None, args.layouts.split(",")):
            layout, shape = spec.split(":")
            actors, cpus = (int(x) for x in shape.split("x"))
            settings = {"layout": layout, "min_actors": actors, "max_actors": actors, "cpus_per_actor": cpus}
            run = run_ours(corpus, model, f"{tmp}/layout-{layout}-{shape}", tokens, "onnx-int8", **settings)
            ray.shutdown()
            run["ratio_vs_pipeline"] = run["tokens_per_second"] / result["pipeline"]["tokens_per_second"]
            result["layouts"][spec] = run
            print("layout", spec, {k: run[k] for k in ("tokens_per_second", "ratio_vs_pipeline")}, flush=True)
            save()

        small, large = f"{tmp}/m1", f"{tmp}/m10"
        write_corpus(args.data_dir, args.memory_rows, small)
        write_corpus(args.data_dir, args.memory_rows * args.scale, large, files=args.scale)
        result["memory"] = {"engine": "auto (openvino-int8 once exported)"}
        for name, path in (("1x", small), (f"{args.scale}x", large)):
            run = run_ours(path, model, f"{tmp}/mem-{name}")
            ray.shutdown()
            result["memory"][name] = {"rows": run["rows_out"], "peak_rss_mb": run["peak_rss_mb"]}
        save()
    print(json.dumps({k: result[k] for k in ("corpus", "pipeline", "memory")}, indent=2, default=str))


if __name__ == "__main__":
    main()
