"""Texts longer than the window: classification from all windows (`--window-reduce mean` / `max`) against truncation
(`first`: the first window only, what a truncating pipeline or Trainer sees), on the real `evaluate` path.

    python benchmarks/classify_long.py --model runs/trainer-compare-sst2 --data ../shared/data/sst2 \\
        --out benchmarks/results/classify_long_cpu.json

No long-document classification set is in ../shared/data, so the texts are made long relative to the window
instead: SST-2's validation sentences (about 25 tokens) scored at windows of 12 / 16 / 24 / 32 tokens (a quarter
of the window overlapping), where most of them span several windows, and at 512 (every sentence one window: all
reductions equal). The model is the same for every row; only the window and the reduction change.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotate_ner import machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="a folder with validation.tsv (or a file)")
    parser.add_argument("--windows", default="12,16,24,32,512")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from nlpbatch.data import fetch_data
    from nlpbatch.evaluation import eval_config, evaluate_model
    from nlpbatch.models import resolve_model
    from nlpbatch.tasks import get_task
    from nlpbatch.tasks.classify import label_names

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    result = {
        "benchmark": "classify_long",
        "machine": machine_info(),
        "model": args.model,
        "data": args.data,
        "doc_stride": "a quarter of the window",
        "runs": [],
    }
    task = get_task("classify")
    raw = task.load_split(fetch_data(args.data), "validation", **eval_config("classify", args.model).data_options())
    gold = [label_names(raw)[g] for g in raw["label"]]
    cuts, correct = {}, {}
    for window in (int(w) for w in args.windows.split(",")):

        def config(reduce: str, window: int = window):
            return eval_config(
                "classify", args.model, max_length=window, doc_stride=window // 4, window_reduce=reduce, quiet=True
            )

        # the texts this window cuts into several windows: the same for every reduction
        per_text = Counter(f["example"] for f in task.eval_features(raw, tokenizer, config("first")))
        cut = cuts[window] = {i for i, n in per_text.items() if n > 1}
        for reduce in ("first", "mean", "max"):
            start = time.perf_counter()
            metrics, predictions = evaluate_model(config(reduce), args.data)
            seconds = time.perf_counter() - start
            correct[(window, reduce)] = {i for i, (p, g) in enumerate(zip(predictions, gold)) if p == g}
            row = {
                "window": window,
                "window_reduce": reduce,
                "accuracy": metrics["accuracy"],
                "f1": metrics.get("f1"),
                "texts": len(raw),
                "windows": metrics["windows"],
                "texts_over_one_window": len(cut),
                "accuracy_on_those": round(len(cut & correct[(window, reduce)]) / len(cut), 4) if cut else None,
                "seconds": round(seconds, 1),
            }
            result["runs"].append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    # the same texts scored whole (the largest window, where none is cut): what cutting them costs at all
    whole = correct[(max(cuts), "first")]
    for row in result["runs"]:
        cut = cuts[row["window"]]
        row["whole_text_accuracy_on_those"] = round(len(cut & whole) / len(cut), 4) if cut else None
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
