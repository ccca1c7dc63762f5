"""What a short training run costs with and without Ray: `nlpbatch train ner` as a user runs it (a new process, no
cluster named), the whole command timed, `--runner local` (this process, one worker) against `--runner ray` (a local
cluster started for the run, one Ray Train worker), on the same 60-sentence slice of the user's own labels (WNUT-17),
one epoch, in one run. The same loop runs in both: the difference is the cluster's start-up.

    python benchmarks/train_local.py --out benchmarks/results/train_local_cpu.json
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


def run_command(data: Path, out: str, runner: str, sentences: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "nlpbatch", "train", "ner", "--output", out, "--runner", runner, "--quiet"]
    command += ["--train", str(data / "train.conll"), "--validation", str(data / "validation.conll")]
    command += ["--max-train-examples", str(sentences), "--max-eval-examples", str(sentences), "--epochs", "1"]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{runner}: exit {done.returncode}\n{done.stderr[-3000:]}")
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    return {
        "runner": runner,
        "command_seconds": round(seconds, 1),
        "fit_seconds": round(metrics["timings"]["fit_seconds"], 1),
        "train_loop_seconds": round(metrics["timings"]["train_loop_seconds"], 1),
        "f1": metrics["final"]["eval"]["overall_f1"],
        "stderr_lines": len(done.stderr.splitlines()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"), "wnut17"))
    parser.add_argument("--sentences", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results/train_local_cpu.json")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for runner in ("local", "ray"):
            runs.append(run_command(Path(args.data), os.path.join(tmp, runner), runner, args.sentences))
            print(json.dumps(runs[-1]), file=sys.stderr)
    local, ray = runs
    result = {
        "machine": machine_info(),
        "what": f"nlpbatch train ner, bundled MiniLM, {args.sentences} WNUT-17 sentences, 1 epoch, whole command",
        "runs": runs,
        "ray_over_local_command": round(ray["command_seconds"] / local["command_seconds"], 2),
        "same_f1": local["f1"] == ray["f1"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
