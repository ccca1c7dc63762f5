"""Does the review queue teach the model more than a random sample? Start from 300 labelled CoNLL training
sentences, train (the defaults), annotate a pool of unlabelled sentences with that model, then add 300 more
labelled sentences chosen by `nlpbatch review`'s strategy (the least sure documents first; the gold labels stand in
for the reviewer) or at random, retrain from the base model on the 600, and score entity F1 on CoNLL validation;
3 seeds (the start set, the pool and the random pick change with the seed).

    python benchmarks/active_learning.py --out benchmarks/results/active_learning_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotate_ner import machine_info  # noqa: E402


def write_conll(sentences: list[dict], path: Path) -> str:
    lines = []
    for s in sentences:
        lines += [f"{t} {g}" for t, g in zip(s["tokens"], s["ner_tags"])] + [""]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def train(sentences: list[dict], validation: str, folder: Path, args) -> tuple[str, float]:
    from nlpbatch.config import load_train_config
    from nlpbatch.train.trainer import run_training

    cfg = load_train_config(
        task="ner",
        output=str(folder),
        train=write_conll(sentences, folder.with_suffix(".txt")),
        validation=validation,
        max_eval_examples=args.eval_examples,
        epochs=args.epochs,
        keep_checkpoints=0,
        seed=args.seed_base,
        quiet=True,
    )
    metrics = run_training(cfg)
    return str(folder), metrics["final"]["eval"]["overall_f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--start", type=int, default=300)
    parser.add_argument("--add", type=int, default=300)
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--seed-base", type=int, default=42, help="the training seed (the same for every run)")
    parser.add_argument("--strategy", default="least-sure")
    parser.add_argument("--out", default="benchmarks/results/active_learning_cpu.json")
    args = parser.parse_args()

    from nlpbatch.annotate.local_runner import annotate_texts
    from nlpbatch.config import load_annotate_config
    from nlpbatch.data.conll import parse_conll
    from nlpbatch.review import select
    from nlpbatch.tasks.ner import spans

    train_all = parse_conll(os.path.join(args.data_dir, "conll2003", "train.txt"))
    validation = os.path.join(args.data_dir, "conll2003", "validation.txt")
    result = {"machine": machine_info(), "settings": vars(args), "runs": []}
    out = Path(args.out)
    for seed in (int(s) for s in args.seeds.split(",")):
        rng = random.Random(seed)
        order = rng.sample(range(len(train_all)), args.start + args.pool)
        start = [train_all[i] for i in order[: args.start]]
        pool = [train_all[i] for i in order[args.start :]]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            first, f1_start = train(start, validation, Path(tmp) / "start", args)
            settings = load_annotate_config(task="ner", model=first, input="-", output="-", quiet=True)
            texts = [" ".join(s["tokens"]) for s in pool]
            rows = annotate_texts(settings, texts)
            for i, row in enumerate(rows):
                row["id"], row["text"] = str(i), texts[i]
            queued = [int(r["id"]) for r in select(rows, spans, args.add, args.strategy, "text", set())]
            randomly = rng.sample(range(len(pool)), args.add)
            _, f1_queue = train(start + [pool[i] for i in queued], validation, Path(tmp) / "queue", args)
            _, f1_random = train(start + [pool[i] for i in randomly], validation, Path(tmp) / "random", args)
        run = {
            "seed": seed,
            "f1_start": f1_start,
            "f1_plus_queue": f1_queue,
            "f1_plus_random": f1_random,
            "gain_over_random": f1_queue - f1_random,
            "queued_entities_gold": sum(t.startswith("B-") for i in queued for t in pool[i]["ner_tags"]),
            "random_entities_gold": sum(t.startswith("B-") for i in randomly for t in pool[i]["ner_tags"]),
            "seconds": time.perf_counter() - t0,
        }
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
        gains = [r["gain_over_random"] for r in result["runs"]]
        mean = sum(gains) / len(gains)
        spread = (sum((g - mean) ** 2 for g in gains) / max(1, len(gains) - 1)) ** 0.5
        result["gain_over_random"] = {"mean": mean, "sd": spread, "min": min(gains), "max": max(gains)}
        out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
