"""Does `--backend auto`'s short probe pick the engine that is fastest over a real run? On this machine as it is, and
with oneDNN (OpenVINO's kernels) held to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`: what an AVX2-only CPU of the fleet gives
OpenVINO; ONNX Runtime's kernels are not held back by it, so this is one side of an AVX2 machine, not a whole one).
Each setting runs in a fresh process with an empty choice cache: the probe (its speeds, its seconds, its choice),
then each int8 engine over the windows of 600 mixed documents of the benchmark corpus, one thread, tokens/s.

    python benchmarks/engine_choice.py --out benchmarks/results/engine_choice_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotate_ner import machine_info  # noqa: E402

MEASURE = r"""
import json, sys, time
import numpy as np
from nlpbatch.engines import choice, int8_engines
from nlpbatch.engines import ENGINES
import importlib

model, corpus = sys.argv[1], sys.argv[2]
candidates = int8_engines(model)
t0 = time.perf_counter()
best, reason = choice.fastest("ner", model, candidates, 1)
probe_seconds = time.perf_counter() - t0
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(model)
texts = [json.loads(line)["text"] for line in open(corpus)][:600]
enc = tokenizer(texts, truncation=True, max_length=128, padding="max_length", return_tensors="np")
speeds, failed = {}, {}
for backend, (name, options) in candidates.items():
    module, cls = ENGINES[name].split(":")
    try:
        engine = getattr(importlib.import_module(module), cls)("ner", model, threads=1, **options)
    except Exception as err:
        failed[backend] = str(err).strip().splitlines()[-1][:300]
        continue
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    types = enc["token_type_ids"].astype(np.int64)
    engine(ids[:8], mask[:8], types[:8])
    start = time.perf_counter()
    for i in range(0, len(ids), 8):
        engine(ids[i:i+8], mask[i:i+8], types[i:i+8])
    speeds[backend] = float(mask.sum()) / (time.perf_counter() - start)
found = {"probe_choice": best, "probe_reason": reason, "probe_seconds": probe_seconds}
print(json.dumps({**found, "run_tokens_per_second": speeds, "failed_to_load": failed}))
"""


def prepare_model(folder: Path, data_dir: str) -> Path:
    """The bundled MiniLM with a 9-label token-classification head (its speed is the trained model's), exported."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from nlpbatch.data.conll import NER_LABELS
    from nlpbatch.models import resolve_model

    base = resolve_model(None)
    model = AutoModelForTokenClassification.from_pretrained(
        base,
        num_labels=len(NER_LABELS),
        id2label=dict(enumerate(NER_LABELS)),
        label2id={n: i for i, n in enumerate(NER_LABELS)},
    )
    path = folder / "model"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(base).save_pretrained(path)
    conll = os.path.join(data_dir, "conll2003", "validation.txt")
    command = [sys.executable, "-m", "nlpbatch", "export", "--model", str(path), "--calibration-data", conll]
    subprocess.run([*command, "--calibration-examples", "300"], check=True, capture_output=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--out", default="benchmarks/results/engine_choice_cpu.json")
    args = parser.parse_args()
    settings = {"as is": {}, "oneDNN held to AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = prepare_model(folder, args.data_dir)
        corpus = folder / "corpus"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nlpbatch",
                "corpus",
                "--rows",
                "600",
                "--output",
                str(corpus),
                "--data-dir",
                args.data_dir,
                "--kind",
                "mixed",
                "--format",
                "jsonl",
            ],
            check=True,
            capture_output=True,
        )
        (jsonl,) = sorted(corpus.glob("*.jsonl"))
        for name, env in settings.items():
            (model / ".nlpbatch-engine-choice.json").unlink(missing_ok=True)
            run_env = {**os.environ, **env, "XDG_CACHE_HOME": str(folder / f"cache-{len(results)}")}
            t0 = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", MEASURE, str(model), str(jsonl)], capture_output=True, text=True, env=run_env
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])
            found = json.loads(done.stdout.strip().splitlines()[-1])
            run = found["run_tokens_per_second"]
            found["run_fastest"] = max(run, key=run.get)
            found["probe_agrees"] = found["run_fastest"] == found["probe_choice"]
            found["seconds"] = round(time.perf_counter() - t0, 1)
            results[name] = found
            print(name, json.dumps(found), file=sys.stderr)
    out = {"machine": machine_info(), "settings": results}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
