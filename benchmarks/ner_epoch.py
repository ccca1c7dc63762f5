"""One NER training epoch, side by side on the same data, model and machine: the reference Hugging Face
Trainer (single process, random batches) against nlpbatch's Ray Train loop (length-grouped batches).

    python benchmarks/ner_epoch.py --data-dir ../shared/data --out benchmarks/results/ner_epoch_cpu.json

Writes the epoch wall times, their ratio and the validation F1 after the epoch to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def ner_encoder(tokenizer, cont: list[int]):
    """The textbook NER preprocessing for `datasets.map`: words tokenized, each word's tag on its first subtoken and
    (training) its continuation tag on the others, -100 where nothing is scored."""

    def encode(batch, first_only: bool):
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True)
        labels = []
        for i, tags in enumerate(batch["ner_tags"]):
            prev, row = None, []
            for w in enc.word_ids(i):
                row.append(-100 if w is None else tags[w] if w != prev else (-100 if first_only else cont[tags[w]]))
                prev = w
            labels.append(row)
        enc["labels"] = labels
        return enc

    return encode


def reference_trainer(args, raw_train, raw_eval, model_path: str) -> dict:
    """The standard recipe: tokenize + align labels with datasets.map, DataCollatorForTokenClassification, Trainer."""
    import numpy as np
    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from nlpbatch.tasks.ner import build_model, continuation_ids, eval_features, label_names, score

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenize_and_align = ner_encoder(tokenizer, continuation_ids(label_names(raw_train)))

    cols = raw_train.column_names
    train = raw_train.map(tokenize_and_align, batched=True, remove_columns=cols, fn_kwargs={"first_only": False})
    evals = raw_eval.map(tokenize_and_align, batched=True, remove_columns=cols, fn_kwargs={"first_only": True})
    model = build_model(model_path, raw_train)
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=64,
            learning_rate=args.lr,
            num_train_epochs=1,
            use_cpu=True,
            eval_strategy="no",
            save_strategy="no",
            report_to=[],
            seed=args.seed,
            logging_steps=50,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model, args=targs, train_dataset=train, data_collator=DataCollatorForTokenClassification(tokenizer)
        )
        t0 = time.perf_counter()
        out = trainer.train()
        epoch_seconds = time.perf_counter() - t0
        pred = trainer.predict(evals)
    from types import SimpleNamespace

    # scored exactly as ours is: every word of the data, same word positions
    feats = eval_features(raw_eval, tokenizer, SimpleNamespace(max_length=512))
    f1 = score({"pred": np.argmax(pred.predictions, axis=-1)}, feats, raw_eval, model.config)[0]["overall_f1"]
    return {
        "epoch_seconds": epoch_seconds,
        "train_runtime": out.metrics["train_runtime"],
        "eval_f1": f1,
        "steps": out.global_step,
        "threads": args.threads,
    }


def ours(args, workers: int, cpus: int) -> dict:
    from nlpbatch.config import load_train_config
    from nlpbatch.train.trainer import run_training

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_train_config(
            task="ner",
            output=tmp,
            data_dir=args.data_dir,
            epochs=1,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            num_workers=workers,
            cpus_per_worker=cpus,
            seed=args.seed,
            max_train_examples=args.train_examples,
            max_eval_examples=args.eval_examples,
        )
        metrics = run_training(cfg)
    epoch = metrics["history"][0]
    return {
        "epoch_seconds": epoch["train_seconds"],
        "eval_f1": epoch["eval"]["overall_f1"],
        "steps": epoch["step"],
        "workers": workers,
        "cpus_per_worker": cpus,
        "fit_seconds_incl_ray_startup": metrics["timings"]["fit_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="benchmarks/results/ner_epoch_cpu.json")
    args = parser.parse_args()

    import torch
    import transformers

    from nlpbatch.models import resolve_model
    from nlpbatch.tasks.ner import load_split

    model_path = resolve_model(None)
    raw_train = load_split(args.data_dir, "train", args.train_examples)
    raw_eval = load_split(args.data_dir, "validation", args.eval_examples)
    result = {
        "benchmark": "one NER epoch, all-MiniLM-L6-v2, fp32",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "data": {
            "train_sentences": len(raw_train),
            "eval_sentences": len(raw_eval),
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
        },
        "reference_trainer": reference_trainer(args, raw_train, raw_eval, model_path),
    }
    print(json.dumps(result["reference_trainer"]), flush=True)
    result["ours_1x2cpu"] = ours(args, 1, args.threads)
    print(json.dumps(result["ours_1x2cpu"]), flush=True)
    result["ours_2x1cpu"] = ours(args, 2, max(1, args.threads // 2))
    print(json.dumps(result["ours_2x1cpu"]), flush=True)
    ref = result["reference_trainer"]["epoch_seconds"]
    result["ratio_epoch_time_vs_trainer"] = {
        "1_worker_x_2_cpus": result["ours_1x2cpu"]["epoch_seconds"] / ref,
        "2_workers_x_1_cpu": result["ours_2x1cpu"]["epoch_seconds"] / ref,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["ratio_epoch_time_vs_trainer"], indent=2))


if __name__ == "__main__":
    main()
