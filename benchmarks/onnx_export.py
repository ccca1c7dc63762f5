"""What `nlpbatch export` writes, measured: the earlier export (the model's SDPA attention traced as-is, ~50
unfused ops; int8 on the MatMuls only) against the current one (eager attention traced, fused by ONNX Runtime's
BERT optimizer into one Attention op per layer; int8 on the MatMuls and the attention's QKV projection). For each
file: the bare model step (1 thread, corpus windows, the CPU default of 512 tokens a forward pass) and the
validation score through `nlpbatch evaluate --backend` (CoNLL F1, or SQuAD EM/F1 for a QA model), against torch
fp32, in one run.

    python benchmarks/onnx_export.py --model runs/ner --out benchmarks/results/onnx_export_cpu.json
    python benchmarks/onnx_export.py --task qa --model runs/qa --out benchmarks/results/onnx_export_qa_cpu.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

from engine_batch import corpus_windows, tokens_per_second


def op_counts(path: str) -> dict[str, int]:
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    counts = collections.Counter(node.op_type for node in graph.node)
    return {op: counts[op] for op in ("Attention", "QAttention", "MatMul", "MatMulInteger", "Softmax") if counts[op]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["ner", "qa"], default="ner")
    parser.add_argument("--model", required=True, help="a fine-tuned model dir (copied, then exported)")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results/onnx_export_cpu.json")
    args = parser.parse_args()

    from nlpbatch.engines import export_onnx, load_engine
    from nlpbatch.evaluation import eval_config, evaluate_model

    result: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "threads": 1,
        "batch_tokens": 512,
        "task": args.task,
        "eval": "CoNLL-2003 validation, every word scored" if args.task == "ner" else "SQuAD v1.1 validation",
    }
    score = {"ner": ["overall_f1"], "qa": ["exact_match", "f1"]}[args.task]
    with tempfile.TemporaryDirectory() as tmp:
        windows = corpus_windows(args.data_dir, args.rows, args.model, tmp)
        result["windows"], result["tokens"] = len(windows), sum(len(w) for w in windows)
        reference, _ = evaluate_model(eval_config(args.task, args.model), args.data_dir, backend="torch")
        engine = load_engine(args.task, args.model, "torch", threads=1)
        result["torch-fp32"] = {
            "tokens_per_second": tokens_per_second(engine, windows, 512),
            **{k: reference[k] for k in score},
        }
        print("torch-fp32", result["torch-fp32"], flush=True)
        for name, fuse in (("sdpa_matmul_int8", False), ("fused_attention_int8", True)):
            model = f"{tmp}/{name}"
            shutil.copytree(args.model, model, ignore=shutil.ignore_patterns("onnx", "ray_runs"))
            files = export_onnx(model, "int8", fuse_attention=fuse)
            result[name] = {}
            for kind in ("fp32", "int8"):
                backend = f"onnx-{kind}"
                metrics, _ = evaluate_model(eval_config(args.task, model), args.data_dir, backend=backend)
                engine = load_engine(args.task, model, backend, threads=1)
                result[name][kind] = {
                    "tokens_per_second": tokens_per_second(engine, windows, 512),
                    **{k: metrics[k] for k in score},
                    **{f"{k}_minus_torch": metrics[k] - reference[k] for k in score},
                    "ops": op_counts(files[kind]),
                }
                print(name, kind, result[name][kind], flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
