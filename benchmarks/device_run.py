"""The whole GPU run in one device call: every part in priority order, each in its own process under its own time
budget, each part's JSON in OUT as soon as that part ends, and `OUT/summary.json` (what ran, how long, what it
returned) rewritten after every part, so a call cut short still returns what it measured.

    # call 2 of ../shared/device/README.md, carry [".device/model", ".device/data"], after its export line:
    python3 benchmarks/device_run.py --model .device/model --data-dir .device/data --out $OUT
    # here, on the CPU, small sizes, to check the script before spending device time on it (about 10 minutes):
    python benchmarks/device_run.py --dry-run --budget-scale 6 --model BASE_MODEL --data-dir ../shared/data \\
        --out /tmp/device-dry

Parts, in the issue's priority order: 1. `packing`: packed vs padded inference on the same windows, NER labels and
QA start / end logits (benchmarks/gpu.py, parts step and qa_step); 2. `annotate`: the bare forward (the ceiling),
`annotate ner` with the defaults on a `nlpbatch corpus`, `annotate qa`, the tokenizer on one core and the nightly
scale-out; 3. `train_ner` and 4. `train_qa`: the default recipes on full data (benchmarks/quality.py); 5. `more`:
`annotate classify`, the transformers pipeline (the speed-up's reference) and the job with packing off. The budgets
add up to 360 s: with a machine start and the Ray install call, a second try of the parts that failed (`--parts`)
still fits in 15 minutes of device time. `--budget-scale` stretches every budget.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def plan(args: argparse.Namespace) -> list[tuple[str, float, list[str], str]]:
    """(part, budget seconds, command, the JSON it writes) in priority order."""
    gpu = [sys.executable, str(HERE / "gpu.py"), "--model", args.model, "--data-dir", args.data_dir]
    gpu += ["--corpus", f"{args.work}/corpus"]  # written by the first part, read by the next
    sizes = ["--rows", "200000", "--step-rows", "20000", "--pipeline-rows", "2000"]
    if args.dry_run:  # CPU sizes: every code path, none of the volume
        sizes = ["--rows", "300", "--step-rows", "40", "--pipeline-rows", "30", "--pipeline-batch-sizes", "8"]
        sizes += ["--forward-shapes", "4x128", "--forward-seconds", "1", "--qa-repeat", "1", "--batch-tokens", "2048"]
    first_job = "runner=ray" if args.dry_run else "defaults"  # on a CPU too, the Ray Data path a GPU job takes
    common = ["--model", args.model, "--data-dir", args.data_dir, "--quiet", "--overwrite"]
    common += ["--use-gpu"] if not args.dry_run else ["--max-train-examples", "200", "--max-eval-examples", "100"]

    out = Path(args.out)

    def train(task: str, epochs: int | None = None, *recipe: str) -> list[str]:  # `nlpbatch train` via quality.py
        out_json = str(out / f"{task}_full_gpu.json")
        epochs = 1 if args.dry_run else epochs
        flags = [
            task,
            "--output",
            f"{args.work}/{task}",
            *common,
            *(["--epochs", str(epochs)] if epochs else []),
            *recipe,
        ]
        return [sys.executable, str(HERE / "quality.py"), "--out", out_json, "--", *flags]

    def measure(gpu_parts: str, json_name: str, *jobs: str) -> list[str]:  # benchmarks/gpu.py's parts
        return [*gpu, *sizes, "--parts", gpu_parts, *jobs, "--out", str(out / json_name)]

    qa_recipe = ["--learning-rate", "1e-4", "--batch-size", "32", "--warmup-ratio", "0"]
    parts = [
        ("packing", 45, measure("step,qa_step", "packing_gpu.json")),
        ("annotate", 120, measure("forward,annotate,qa,scale", "annotate_gpu.json", "--jobs", first_job)),
        ("train_ner", 75, train("ner")),  # the default recipe (5 epochs); one epoch in a dry run
        ("train_qa", 60, train("qa", 3, *qa_recipe)),  # jobs/configs/train_qa.yaml's recipe, 3 epochs (the issue's)
        ("more", 60, measure("classify,pipeline,annotate", "annotate_more_gpu.json", "--jobs", "packing=off")),
    ]
    chosen = set(args.parts.split(",")) if args.parts else {name for name, *_ in parts}
    return [
        (name, budget * args.budget_scale, cmd, cmd[cmd.index("--out") + 1])
        for name, budget, cmd in parts
        if name in chosen
    ]


def run_part(cmd: list[str], budget: float, log) -> tuple[int | None, float]:
    """(exit status, None if it ran out of time; seconds). The part runs in its own process group, so a part past
    its budget is stopped whole (Ray's workers too): SIGINT first (its Ray shuts down), SIGKILL 10 s later."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=HERE.parent)
    try:
        return proc.wait(timeout=budget), time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return None, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the base model (a random head is added where one is needed)")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--out", default=os.environ.get("OUT", "device-out"))
    parser.add_argument("--work", default="/tmp/nlpbatch-device", help="trained models go here (not returned)")
    parser.add_argument("--parts", help="comma list of packing,annotate,train_ner,train_qa,more (default: all)")
    parser.add_argument("--budget-scale", type=float, default=1.0)
    parser.add_argument("--dry-run", action="store_true", help="CPU sizes, to check the script without a GPU")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    summary: dict = {"started": started, "dry_run": args.dry_run, "cpus": os.cpu_count(), "parts": []}
    with open(out / "log.txt", "a", buffering=1) as log:
        for name, budget, cmd, json_out in plan(args):
            print(f"== {name} (budget {budget:.0f} s)", file=log, flush=True)
            print(f"== {name} (budget {budget:.0f} s): {' '.join(cmd)}", flush=True)
            rc, seconds = run_part(cmd, budget, log)
            written = Path(json_out).is_file()
            record = {
                "part": name,
                "budget_seconds": budget,
                "seconds": round(seconds, 1),
                "exit_status": rc,
                "ran_out_of_time": rc is None,
                "json": Path(json_out).name if written else None,
            }
            summary["parts"].append(record)
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            print(json.dumps(record), flush=True)
    failed = [p["part"] for p in summary["parts"] if p["exit_status"] != 0]
    print("all parts passed" if not failed else f"not passed: {', '.join(failed)} (see {out / 'log.txt'})")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
