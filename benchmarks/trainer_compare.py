"""Validation quality of nlpbatch's default recipe beside a plain Hugging Face Trainer run, same model, same data,
same machine, one run: WNUT-17 NER from its own column files, GLUE MRPC and SST-2 classification from their TSVs.

    python benchmarks/trainer_compare.py wnut17 --trainer-lr 5e-5,2e-4 \\
        --out benchmarks/results/wnut17_vs_trainer_cpu.json
    python benchmarks/trainer_compare.py mrpc --trainer-lr 5e-5,2e-4 --out benchmarks/results/mrpc_vs_trainer_cpu.json
    python benchmarks/trainer_compare.py sst2 --train-examples 8000 --out benchmarks/results/sst2_vs_trainer_cpu.json
    python benchmarks/trainer_compare.py wnut17 --train-examples 1000 --trainer-lr 5e-5 \
        --out benchmarks/results/wnut17_1000_vs_trainer_cpu.json    # a small set of one's own labels

The Trainer needs `accelerate`: `pip install -e '.[bench]'`.
Ours is `nlpbatch train` with its defaults (one worker, every core). The Trainer is the textbook recipe (tokenize
with `datasets.map`, the task's data collator, `Trainer.train`), at each `--trainer-lr`; both are scored by the same
function (seqeval entity F1 for NER; accuracy and positive-class F1 for classification), so only training differs.
The JSON is rewritten after each run, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))
from ner_epoch import ner_encoder  # noqa: E402  (the textbook NER preprocessing, one copy)

DATASETS = {
    # name: (task, train file, validation file, load_split options, the Trainer's recipe epochs)
    "wnut17": ("ner", "wnut17/train.conll", "wnut17/validation.conll", {}, None),
    "mrpc": (
        "classify",
        "mrpc/train.tsv",
        "mrpc/validation.tsv",
        {"text_column": "#1 String", "text_pair_column": "#2 String", "label_column": "Quality"},
        3,
    ),
    "sst2": ("classify", "sst2/train.tsv", "sst2/validation.tsv", {"text_column": "sentence"}, 3),
}


def trainer_run(task: str, raw_train, raw_eval, model_path: str, lr: float, epochs: int, args) -> dict:
    """The plain recipe: datasets.map tokenization, the task's collator, Trainer.train; scored as ours is."""
    import numpy as np
    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from nlpbatch.tasks import get_task

    spec = get_task(task)
    torch.set_num_threads(os.cpu_count() or 1)
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if task == "ner":
        from nlpbatch.tasks.ner import continuation_ids, label_names

        encode = ner_encoder(tokenizer, continuation_ids(label_names(raw_train)))

        collator = DataCollatorForTokenClassification(tokenizer)
    else:

        def encode(batch, first_only: bool):
            pair = batch["text_pair"] if "text_pair" in batch else None
            enc = tokenizer(batch["text"], pair, truncation=True)
            enc["labels"] = batch["label"]
            return enc

        collator = DataCollatorWithPadding(tokenizer)
    cols = raw_train.column_names
    train = raw_train.map(encode, batched=True, remove_columns=cols, fn_kwargs={"first_only": False})
    evals = raw_eval.map(encode, batched=True, remove_columns=cols, fn_kwargs={"first_only": True})
    model = spec.build_model(model_path, raw_train)
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=args.trainer_batch_size,
            per_device_eval_batch_size=64,
            learning_rate=lr,
            num_train_epochs=epochs,
            use_cpu=True,
            eval_strategy="no",
            save_strategy="no",
            report_to=[],
            seed=args.seed,
            logging_steps=100,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collator)
        t0 = time.perf_counter()
        out = trainer.train()
        seconds = time.perf_counter() - t0
        pred = trainer.predict(evals)
    cfg = SimpleNamespace(max_length=512, doc_stride=128, window_reduce="mean")
    feats = spec.eval_features(raw_eval, tokenizer, cfg)
    if task == "ner":
        gathered = {"pred": np.argmax(pred.predictions, axis=-1)}
    else:  # one window per example here (nothing is longer than 512 tokens): probabilities in example order
        logits = pred.predictions
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        gathered = {"probs": probs / probs.sum(-1, keepdims=True)}
        assert len(feats) == len(raw_eval), "a validation text longer than one window"
    metrics = spec.score(gathered, feats, raw_eval, model.config, cfg)[0]
    return {
        "recipe": {"learning_rate": lr, "epochs": epochs, "batch_size": args.trainer_batch_size, "seed": args.seed},
        "train_seconds": seconds,
        "steps": out.global_step,
        "eval": headline_metrics(task, metrics),
    }


def headline_metrics(task: str, metrics: dict) -> dict:
    keys = ("overall_f1", "overall_precision", "overall_recall") if task == "ner" else ("accuracy", "f1", "macro_f1")
    found = {k: metrics[k] for k in keys if k in metrics}
    if task == "ner":
        found["per_type_f1"] = {t: v["f1"] for t, v in metrics["per_type"].items()}
    return found


def ours(task: str, train: str, validation: str, options: dict, args) -> dict:
    from nlpbatch.config import load_train_config
    from nlpbatch.train.trainer import run_training

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_train_config(
            task=task,
            output=args.keep_model or tmp,
            overwrite=True,
            train=train,
            validation=validation,
            cpus_per_worker=os.cpu_count() or 1,
            seed=args.seed,
            max_train_examples=args.train_examples,
            max_eval_examples=args.eval_examples,
            quiet=True,
            **options,
            **args.overrides,
        )
        metrics = run_training(cfg)
    return {
        # as the run resolved them (batch_size None: 16, or 8 for a short run)
        "recipe": {k: metrics["config"][k] for k in ("epochs", "learning_rate", "batch_size", "max_length", "seed")},
        "train_seconds": metrics["timings"]["train_loop_seconds"],
        "fit_seconds_incl_ray_startup": metrics["timings"]["fit_seconds"],
        "per_epoch": [headline_metrics(task, h["eval"]) for h in metrics["history"]],
        "eval": headline_metrics(task, metrics["final"]["eval"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--train-examples", type=int, default=None)
    parser.add_argument("--eval-examples", type=int, default=None)
    parser.add_argument("--trainer-lr", default="5e-5", help="comma list: one Trainer run per learning rate")
    parser.add_argument("--trainer-epochs", type=int, help="default: the dataset's textbook recipe, else ours")
    parser.add_argument("--trainer-batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE: a recipe setting of ours to try")
    parser.add_argument("--keep-model", help="keep our model here (default runs/trainer-compare-DATASET; '' deletes)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch
    import transformers
    import yaml

    from nlpbatch.config import TrainConfig
    from nlpbatch.models import resolve_model
    from nlpbatch.tasks import get_task

    task, train_file, validation_file, options, textbook_epochs = DATASETS[args.dataset]
    args.overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.keep_model is None:
        args.keep_model = f"runs/trainer-compare-{args.dataset}"
    train, validation = (str(Path(args.data_dir) / f) for f in (train_file, validation_file))
    spec = get_task(task)
    raw_train = spec.load_split(train, "train", args.train_examples, **options)
    raw_eval = spec.load_split(validation, "validation", args.eval_examples, **options)
    epochs = args.trainer_epochs or textbook_epochs or TrainConfig(task=task, output="-").epochs
    result = {
        "benchmark": f"{args.dataset}: nlpbatch train defaults vs the Hugging Face Trainer, all-MiniLM-L6-v2, fp32",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "data": {
            "train": train_file,
            "validation": validation_file,
            "train_examples": len(raw_train),
            "eval_examples": len(raw_eval),
        },
        "trainer": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(result, indent=2))

    if not args.skip_ours:
        result["ours"] = ours(task, train, validation, options, args)
        print("ours", json.dumps(result["ours"]["eval"]), flush=True)
        save()
    for lr in (float(v) for v in args.trainer_lr.split(",") if v):
        run = trainer_run(task, raw_train, raw_eval, resolve_model(None), lr, epochs, args)
        result["trainer"].append(run)
        print("trainer", lr, json.dumps(run["eval"]), flush=True)
        save()


if __name__ == "__main__":
    main()
