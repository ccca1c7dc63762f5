"""Peak memory of one node during `nlpbatch train`, with 1 and with 2 workers, side by side in one run.

    python benchmarks/train_memory.py --data-dir ../shared/data --out benchmarks/results/train_memory_cpu.json

Each run is `nlpbatch train ner` in its own process with its own local Ray cluster (driver, GCS, raylet, Train
controller and workers are all descendants of that process). Every 0.5 s the proportional set size (PSS: shared
pages split between the processes that share them, so the sum is what the node really holds) of the whole process
tree is summed; the JSON records the peak. The run is short (--max-steps) but tokenizes and ships the full data,
which is what differs between worker counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def tree_pss_mb(psutil, root) -> float:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total / 2**20


def measure(args, workers: int, workdir: Path) -> dict:
    import importlib

    importlib.import_module("ray")  # puts Ray's bundled psutil on sys.path
    psutil = importlib.import_module("psutil")

    command = [
        sys.executable, "-m", "nlpbatch", "train", "ner", "--output", str(workdir / f"w{workers}"),
        "--data-dir", args.data_dir, "--num-workers", str(workers), "--cpus-per-worker", "1",
        "--epochs", "1", "--max-steps", str(args.max_steps), "--max-eval-examples", "200",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak, samples, stop = 0.0, 0, threading.Event()

    def sample():
        nonlocal peak, samples
        while not stop.is_set():
            peak = max(peak, tree_pss_mb(psutil, root))
            samples += 1
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"train with {workers} worker(s) failed:\n{stderr[-3000:]}")
    return {
        "workers": workers,
        "peak_pss_mb": round(peak, 1),
        "samples": samples,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [measure(args, workers, Path(tmp)) for workers in (1, 2)]
    result = {
        "benchmark": "peak PSS of the node (whole process tree) during nlpbatch train ner, full CoNLL train set",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "max_steps": args.max_steps,
        "runs": runs,
        "ratio_2_vs_1": round(runs[1]["peak_pss_mb"] / runs[0]["peak_pss_mb"], 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
