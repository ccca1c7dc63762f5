"""`nlpbatch annotate qa` against a plain loop over the model (batch 1: tokenize one question's windows, one
forward pass per window, torch fp32 with every core), on the same SQuAD questions, model and machine, in one run.

    python benchmarks/annotate_qa.py --out benchmarks/results/annotate_qa_cpu.json

The model is the bundled all-MiniLM-L6-v2 with a QA head (its weights do not change the speed). Ours runs with its
defaults after `nlpbatch export` (ONNX Runtime int8 on CPU) and with --backend torch for the same engine as the loop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def plain_loop(pairs: list[tuple[str, str]], model_path: str, max_length: int = 384, stride: int = 128) -> float:
    """Seconds for the obvious implementation: per question, its windows one forward pass each, best span."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForQuestionAnswering.from_pretrained(model_path).eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for question, context in pairs:
            enc = tokenizer(
                question,
                context,
                truncation="only_second",
                max_length=max_length,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
            best = (-1e9, 0, 0)
            for w in range(len(enc["input_ids"])):
                inputs = {k: torch.tensor([enc[k][w]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
                out = model(**inputs)
                start, end = int(out.start_logits[0].argmax()), int(out.end_logits[0].argmax())
                score = float(out.start_logits[0, start] + out.end_logits[0, end])
                if end >= start and score > best[0]:
                    best = (score, *enc["offset_mapping"][w][start])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results/annotate_qa_cpu.json")
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from transformers import AutoTokenizer

    from nlpbatch.annotate.pipeline import run_annotation
    from nlpbatch.config import load_annotate_config
    from nlpbatch.engines import export_onnx
    from nlpbatch.models import resolve_model
    from nlpbatch.tasks.qa import build_model, load_split

    raw = load_split(args.data_dir, "validation", args.questions)
    pairs = [(r["question"], r["context"]) for r in raw]
    result = {
        "benchmark": "QA annotation, questions/s: nlpbatch annotate qa vs a plain batch-1 loop over the model",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "questions": len(pairs),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model = f"{tmp}/qa"
        build_model(resolve_model(None)).save_pretrained(model)
        AutoTokenizer.from_pretrained(resolve_model(None)).save_pretrained(model)
        seconds = plain_loop(pairs, model)
        result["plain_loop"] = {"questions_per_second": len(pairs) / seconds, "seconds": seconds}
        print("plain loop", result["plain_loop"], flush=True)
        table = pa.table(
            {"id": [r["id"] for r in raw], "text": [c for _, c in pairs], "question": [q for q, _ in pairs]}
        )
        pq.write_table(table, f"{tmp}/qa.parquet")
        export_onnx(model, "int8")
        result["ours"] = {}
        for backend in ("auto", "torch"):
            cfg = load_annotate_config(
                task="qa", model=model, input=f"{tmp}/qa.parquet", output=f"{tmp}/out-{backend}", backend=backend
            )
            manifest = run_annotation(cfg)
            ray.shutdown()
            stream = manifest["timings"]["stream_seconds"]
            run = {
                "engine": "onnx-int8" if backend == "auto" else "torch",
                "questions_per_second": manifest["rows_out"] / stream,
                "stream_seconds": stream,
                "rows_out": manifest["rows_out"],
                "rows_rejected": manifest["rows_rejected"],
                "stage_task_seconds": manifest["timings"]["stage_task_seconds"],
            }
            run["ratio_vs_plain_loop"] = run["questions_per_second"] / result["plain_loop"]["questions_per_second"]
            result["ours"][run["engine"]] = run
            print("ours", backend, run, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
