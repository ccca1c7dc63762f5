"""What an entity's score means, before and after calibration, on held-out sentences: a NER model (default: the
README quick start's recipe, trained here: 2,000 CoNLL sentences, 2 epochs) annotates CoNLL validation as text; each
entity is right or not (exact start, end and type). The calibrator is fitted on the first half of the sentences
and measured on the second: expected calibration error (10 equal-width bins) raw, isotonic and Platt, and the
threshold for 90% precision picked on the first half, with the precision and recall it gives on the second.

    python benchmarks/calibration.py --out benchmarks/results/calibration_cpu.json [--model runs/quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotate_ner import machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--model", help="a trained NER model dir (default: train the quick start's model here)")
    parser.add_argument("--target-precision", type=float, default=0.9)
    parser.add_argument("--out", default="benchmarks/results/calibration_cpu.json")
    args = parser.parse_args()

    from nlpbatch import calibration
    from nlpbatch.annotate.local_runner import annotate_texts
    from nlpbatch.config import load_annotate_config, load_train_config
    from nlpbatch.tasks.ner import load_split, score_outcomes
    from nlpbatch.train.trainer import run_training

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = os.path.join(tmp, "model")
            cfg = load_train_config(
                task="ner", output=model, data_dir=args.data_dir, max_train_examples=2000, epochs=2, quiet=True
            )
            run_training(cfg)
        raw = load_split(os.path.join(args.data_dir, "conll2003", "validation.txt"), "validation")
        half = len(raw) // 2
        settings = load_annotate_config(task="ner", model=model, input="-", output="-", quiet=True)

        def annotate(texts):
            return annotate_texts(settings, texts, raw_scores=True)

        fit_scores, fit_right = score_outcomes(raw.select(range(half)), annotate)
        test_scores, test_right = score_outcomes(raw.select(range(half, len(raw))), annotate)
    result = {
        "machine": machine_info(),
        "model": args.model or "trained here: 2,000 CoNLL sentences, 2 epochs, defaults",
        "data": "CoNLL-2003 validation as text: calibrator fitted on the first half, measured on the second",
        "fit": {"sentences": half, "entities": len(fit_scores), "right": int(fit_right.sum())},
        "held_out": {"sentences": len(raw) - half, "entities": len(test_scores), "right": int(test_right.sum())},
        "raw": {
            "ece": calibration.ece(test_scores, test_right),
            "reliability": calibration.reliability(test_scores, test_right),
        },
    }
    for method in calibration.METHODS:
        fitted = calibration.fit(fit_scores, fit_right, method)
        calibrated = calibration.apply(fitted, test_scores)
        chosen = calibration.threshold_for_precision(
            calibration.apply(fitted, fit_scores), fit_right, args.target_precision
        )
        kept = calibrated >= chosen["threshold"]
        result[method] = {
            "ece": calibration.ece(calibrated, test_right),
            "reliability": calibration.reliability(calibrated, test_right),
            "threshold_for_target_precision": {
                "target": args.target_precision,
                "threshold_picked_on_fit_half": chosen["threshold"],
                "precision_held_out": float(test_right[kept].mean()),
                "recall_of_right_held_out": float(test_right[kept].sum() / test_right.sum()),
                "kept_held_out": int(kept.sum()),
            },
        }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v.get("ece") if isinstance(v, dict) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
