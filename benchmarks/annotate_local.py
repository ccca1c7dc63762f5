"""Where the local runner pays: `nlpbatch annotate ner` as a user runs it (a new process, no cluster named), the
whole command timed, with `--runner local` (this process) and `--runner ray` (a local cluster started for the run),
on the same JSONL files of a `nlpbatch corpus` at several sizes, in one run. It sets LOCAL_ROWS (config.py): the
largest input `--runner auto` keeps out of Ray.

    python benchmarks/annotate_local.py --model runs/ner --out benchmarks/results/annotate_local_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_command(model: str, corpus: str, out: str, runner: str) -> dict:
    """One `nlpbatch annotate` subprocess: its wall seconds, the seconds until its progress first counted an
    annotated row (progress lines every second), the manifest's timings, and how many lines it printed."""
    import re

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["NLPBATCH_PROGRESS_SECONDS"] = "1"
    command = [sys.executable, "-m", "nlpbatch", "annotate", "ner", "--model", model, "--input", corpus]
    command += ["--output", out, "--runner", runner]
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first_row, lines = None, []
    for line in proc.stderr:  # live: the first progress line with rows done
        lines.append(line)
        done = re.search(r"annotate ner: ([\d,]+)/", line)
        if first_row is None and done and int(done.group(1).replace(",", "")) > 0:
            first_row = time.perf_counter() - t0
    stdout = proc.stdout.read()
    proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError("".join(lines)[-3000:])
    summary = json.loads(stdout)
    shutil.rmtree(out)
    return {
        "wall_seconds": wall,
        "first_row_seconds": first_row,  # from the command's start; the line comes at most 1 s after the row
        **summary["timings"],
        "rows_out": summary["rows_out"],
        "tokens": summary["tokens"],
        "stderr_lines": len(lines),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a fine-tuned NER model dir (copied; the copy is exported)")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--rows", default="6,100,1000,3000,10000")
    parser.add_argument("--kind", default="default", help="the corpus length mix (nlpbatch corpus --kind)")
    parser.add_argument("--out", default="benchmarks/results/annotate_local_cpu.json")
    args = parser.parse_args()

    from nlpbatch.api import export
    from nlpbatch.corpus import write_corpus

    result = {
        "benchmark": "annotate ner, whole command: --runner local vs --runner ray (a local cluster started per run)",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "corpus_kind": args.kind,
        "sizes": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        model = f"{tmp}/model"
        shutil.copytree(args.model, model, ignore=shutil.ignore_patterns("onnx", "openvino", "ray_runs"))
        export(model)  # what `nlpbatch export` writes
        for rows in [int(r) for r in args.rows.split(",")]:
            corpus = write_corpus(args.data_dir, rows, f"{tmp}/corpus-{rows}", fmt="jsonl", kind=args.kind)[0]
            entry = {"rows": rows}
            for runner in ("local", "ray"):
                entry[runner] = run_command(model, corpus, f"{tmp}/out", runner)
                print(rows, runner, entry[runner], flush=True)
            entry["ray_over_local"] = entry["ray"]["wall_seconds"] / entry["local"]["wall_seconds"]
            result["sizes"].append(entry)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # a run cut short keeps what it measured


if __name__ == "__main__":
    main()
