"""Validation quality of a training recipe, as a benchmark JSON: runs `nlpbatch train` with the given flags (or
summarises an existing run's metrics.json) and records the per-epoch scores, timings and machine.

    python benchmarks/quality.py --out benchmarks/results/ner_full_cpu.json -- ner --output runs/ner --num-workers 1
    python benchmarks/quality.py --out benchmarks/results/ner_full_cpu.json --from-metrics runs/ner/metrics.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path


def summarize(metrics: dict) -> dict:
    task = metrics["task"]
    keys = ("overall_f1", "overall_precision", "overall_recall") if task == "ner" else ("exact_match", "f1")
    v2 = ("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1", "best_f1_thresh")
    keys += tuple(k for k in v2 if k in metrics["final"]["eval"])  # SQuAD v2.0 validation data
    return {
        "task": task,
        "recipe": {
            k: metrics["config"].get(k, "all" if k == "subtoken_labels" else None)
            for k in (
                "epochs",
                "learning_rate",
                "batch_size",
                "batch_tokens",
                "warmup_ratio",
                "group_by_length",
                "subtoken_labels",
                "max_length",
                "num_workers",
                "cpus_per_worker",
                "use_gpu",
                "max_train_examples",
                "max_eval_examples",
                "seed",
            )
        },
        "train_examples": metrics["train_examples"],
        "eval_examples": metrics["eval_examples"],
        "per_epoch": [
            {
                "epoch": h["epoch"],
                "train_loss": h["train_loss"],
                "train_seconds": h["train_seconds"],
                **{k: h["eval"][k] for k in keys},
            }
            for h in metrics["history"]
        ],
        "final": {k: metrics["final"]["eval"][k] for k in keys},
        "per_type": metrics["final"]["eval"].get("per_type"),
        "train_loop_seconds": metrics["timings"]["train_loop_seconds"],
        "fit_seconds_incl_ray_startup": metrics["timings"]["fit_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--from-metrics", help="summarise this metrics.json instead of training")
    parser.add_argument("train_args", nargs="*", help="arguments for `nlpbatch train` (after --)")
    args = parser.parse_args()
    if args.from_metrics:
        metrics = json.loads(Path(args.from_metrics).read_text())
    else:
        from nlpbatch.cli import main as cli_main

        train_args = ["train", *args.train_args]
        if cli_main(train_args) != 0:
            raise SystemExit("training failed")
        output = train_args[train_args.index("--output") + 1]
        metrics = json.loads((Path(output) / "metrics.json").read_text())
    import torch

    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        **summarize(metrics),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["final"], indent=2))


if __name__ == "__main__":
    main()
