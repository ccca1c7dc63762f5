"""Does `annotate` write the entities `evaluate` scores? A model trained with the defaults (2,000 CoNLL sentences, 2
epochs, unless --model names one) scores the CoNLL validation file (held out from training; the shared data has no
test split) with `evaluate`; the same sentences, their
words joined by single spaces, go through annotate's stages (in this process) and their entities are scored exactly
against the gold spans (exact start, end and type: conlleval's rule), with the model's words grouped as trained
(`word_unit whitespace`, the default now) and as the tokenizer pre-tokenizes (`pretokenized`, the behaviour before),
for each aggregation. One run, JSON out.

    python benchmarks/annotate_vs_evaluate.py --out benchmarks/results/annotate_vs_evaluate_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotate_ner import machine_info  # noqa: E402

from nlpbatch.tasks.ner import char_spans as spans  # noqa: E402  (IOB2 word tags -> character spans)


def prf(gold: list[set], pred: list[set]) -> dict:
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    n_gold, n_pred = sum(map(len, gold)), sum(map(len, pred))
    precision, recall = tp / max(1, n_pred), tp / max(1, n_gold)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "entities": n_pred}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--model", help="a trained NER model dir (default: train one with the defaults)")
    parser.add_argument("--out", default="benchmarks/results/annotate_vs_evaluate_cpu.json")
    args = parser.parse_args()
    from nlpbatch.annotate.pipeline import annotate_texts
    from nlpbatch.config import load_annotate_config, load_train_config
    from nlpbatch.data.conll import parse_conll
    from nlpbatch.evaluation import eval_config, evaluate_model
    from nlpbatch.train.trainer import run_training

    test = Path(args.data_dir) / "conll2003" / "validation.txt"
    with tempfile.TemporaryDirectory() as tmp:
        model, trained = args.model, None
        if model is None:
            model = os.path.join(tmp, "model")
            cfg = load_train_config(
                task="ner", output=model, data_dir=args.data_dir, max_train_examples=2000, epochs=2, quiet=True
            )
            trained = run_training(cfg)["final"]["eval"]["overall_f1"]
        t0 = time.perf_counter()
        metrics, predictions = evaluate_model(eval_config("ner", model), str(test))
        evaluate_seconds = time.perf_counter() - t0
        rows = parse_conll(test)
        texts = [" ".join(r["tokens"]) for r in rows]
        gold = [spans(r["tokens"], r["ner_tags"]) for r in rows]
        evaluated = [spans(p["words"], p["pred"]) for p in predictions]
        result = {
            "machine": machine_info(),
            "model": "trained here: 2,000 CoNLL sentences, 2 epochs, defaults" if trained is not None else model,
            "validation_f1_when_trained": trained,
            "sentences": len(texts),
            "evaluate_seqeval_f1": metrics["overall_f1"],
            "evaluate_exact_spans": prf(gold, evaluated),
            "evaluate_seconds": evaluate_seconds,
            "annotate": {},
        }
        for unit in ("whitespace", "pretokenized"):
            for aggregation in ("first", "max", "simple"):
                cfg = load_annotate_config(
                    task="ner", model=model, input="-", output="-", word_unit=unit, aggregation=aggregation
                )
                t0 = time.perf_counter()
                out = annotate_texts(cfg, texts)
                found = [{(e["start"], e["end"], e["label"]) for e in r["entities"] or []} for r in out]
                inside = sum(
                    1
                    for text, spans_ in zip(texts, found)
                    for s, e, _ in spans_
                    if (s > 0 and text[s - 1] != " ") or (e < len(text) and text[e] != " ")
                )
                result["annotate"][f"{unit}/{aggregation}"] = {
                    **prf(gold, found),
                    "equal_to_evaluate": sum(f == v for f, v in zip(found, evaluated)) / len(found),
                    "entities_cut_inside_a_whitespace_token": inside,
                    "seconds": time.perf_counter() - t0,
                }
                print(unit, aggregation, json.dumps(result["annotate"][f"{unit}/{aggregation}"]), file=sys.stderr)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
