"""`nlpbatch annotate classify` with each inference engine (torch fp32, ONNX Runtime fp32 and int8) against the
transformers text-classification pipeline (at its best batch size), same corpus, model and machine, one run; and
each engine's validation accuracy (the project's own evaluate), so the int8 default's accuracy cost is measured.

    python benchmarks/annotate_classify.py --model runs/trainer-compare-sst2 \\
        --out benchmarks/results/annotate_classify_cpu.json

The corpus is `nlpbatch corpus` (CoNLL-2003 news documents, as for NER). Tokens are counted once per document (no
special tokens, no window overlap), so both sides are divided by the same number. The pipeline truncates a document
at 512 tokens; ours classifies a longer one from all its windows (more work, counted the same).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from annotate_ner import machine_info, model_and_corpora, pipeline_at_best_batch, run_ours  # noqa: E402


def run_pipeline(texts: list[str], model: str, batch_size: int, threads: int) -> float:
    import torch
    from transformers import pipeline

    torch.set_num_threads(threads)
    classifier = pipeline("text-classification", model=model, device=-1, truncation=True, max_length=512)
    t0 = time.perf_counter()
    for _ in classifier(texts, batch_size=batch_size):
        pass
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a fine-tuned classify model dir (copied; the copy is exported)")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--validation", help="scored per engine (default: DATA_DIR/sst2/validation.tsv)")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--sweep-rows", type=int, default=500)
    parser.add_argument("--pipeline-batch-sizes", default="1,8,32")
    parser.add_argument("--backends", default="torch,onnx-fp32,onnx-int8,openvino-int8")
    parser.add_argument("--out", default="benchmarks/results/annotate_classify_cpu.json")
    args = parser.parse_args()

    import ray

    from nlpbatch.evaluation import eval_config, evaluate_model

    threads = os.cpu_count() or 1
    validation = args.validation or str(Path(args.data_dir) / "sst2" / "validation.tsv")
    result = {
        "benchmark": "classify annotation by engine vs the transformers text-classification pipeline; accuracy per "
        "engine",
        "machine": machine_info(),
        "model": args.model,
        "validation": validation,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        Path(args.out).write_text(json.dumps(result, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        model, corpus, texts, tokens, sweep_texts, sweep_tokens = model_and_corpora(args, tmp, result)

        result["pipeline"] = pipeline_at_best_batch(
            run_pipeline, model, texts, tokens, sweep_texts, sweep_tokens, args.pipeline_batch_sizes, threads
        )
        seconds = result["pipeline"]["seconds"]
        save()

        result["ours"] = {}
        for backend in args.backends.split(","):
            ours = run_ours(corpus, model, f"{tmp}/out-{backend}", tokens, backend, task="classify")
            ours["ratio_vs_pipeline"] = ours["tokens_per_second"] / result["pipeline"]["tokens_per_second"]
            ours["ratio_whole_command_vs_pipeline"] = seconds / ours["wall_seconds"]
            ray.shutdown()  # a fresh cluster for each engine
            metrics, _ = evaluate_model(
                eval_config("classify", model, text_column=args.text_column), validation, backend=backend
            )
            ours["validation"] = {k: metrics[k] for k in ("accuracy", "f1", "macro_f1") if k in metrics}
            result["ours"][backend] = ours
            print("ours", backend, {k: ours[k] for k in ("tokens_per_second", "ratio_vs_pipeline", "validation")})
            save()
        torch_accuracy = result["ours"].get("torch", {}).get("validation", {}).get("accuracy")
        if torch_accuracy is not None:
            result["accuracy_delta_vs_torch"] = {
                b: r["validation"]["accuracy"] - torch_accuracy for b, r in result["ours"].items()
            }
        save()


if __name__ == "__main__":
    main()
