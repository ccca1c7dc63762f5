"""`nlpbatch annotate ner` throughput of two versions of the code, side by side in one run: an earlier commit
(checked out into a temporary git worktree) and the working tree, alternating runs on the same corpus, model and
machine, each through the CLI with its defaults (ONNX Runtime int8 after `nlpbatch export`). Used to check that a
refactor did not slow annotation down.

    python benchmarks/annotate_before_after.py --before ef93218 --out benchmarks/results/annotate_before_after_cpu.json

The model is the bundled MiniLM with a fresh NER head (throughput does not depend on the weights' quality).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def annotate(code: Path, model: str, corpus: str, out: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "nlpbatch", "annotate", "ner", "--model", model, "--input", corpus, "--output", out]
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, env=env, cwd=code)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{code}: annotate failed:\n{proc.stderr[-3000:]}")
    manifest = json.loads((Path(out) / "_SUCCESS.json").read_text())
    return {
        "wall_seconds": wall,
        "stream_seconds": manifest["timings"]["stream_seconds"],
        "tokens_per_second": manifest["timings"]["tokens_per_second"],
        "rows_out": manifest["rows_out"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/annotate_before_after_cpu.json")
    args = parser.parse_args()

    from nlpbatch.corpus import write_corpus
    from nlpbatch.data.conll import NER_LABELS
    from nlpbatch.engines import export_onnx
    from nlpbatch.models import load_quietly, resolve_model

    commit = subprocess.run(["git", "rev-parse", args.before], capture_output=True, text=True, cwd=ROOT, check=True)
    after = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=True)
    result = {
        "benchmark": "annotate ner tokens/s: an earlier commit vs the working tree, alternating runs, CLI defaults",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "before": commit.stdout.strip(),
        "after": f"working tree on {after.stdout.strip()}",
        "runs": {"before": [], "after": []},
    }
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        model = f"{tmp}/model"
        head = load_quietly(
            AutoModelForTokenClassification,
            resolve_model(None),
            num_labels=len(NER_LABELS),
            id2label=dict(enumerate(NER_LABELS)),
            label2id={n: i for i, n in enumerate(NER_LABELS)},
        )
        head.save_pretrained(model)
        AutoTokenizer.from_pretrained(resolve_model(None)).save_pretrained(model)
        export_onnx(model, "int8")
        corpus = f"{tmp}/corpus"
        write_corpus(args.data_dir, args.rows, corpus)
        worktree = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.before], cwd=ROOT, check=True)
        try:
            for i in range(args.repeats):
                for name, code in (("before", worktree), ("after", ROOT)):
                    run = annotate(code, model, corpus, f"{tmp}/out-{name}-{i}")
                    result["runs"][name].append(run)
                    print(name, run, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    for name, runs in result["runs"].items():
        result[name + "_median_tokens_per_second"] = statistics.median(r["tokens_per_second"] for r in runs)
    result["ratio_after_before"] = result["after_median_tokens_per_second"] / result["before_median_tokens_per_second"]
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
