"""CPU annotation on three length mixes (`nlpbatch corpus --kind short|mixed|long`), in one run, same model and
machine: `nlpbatch annotate ner` with its defaults as a user runs it (a new process, no cluster named: the whole
command timed, and the streaming seconds from its manifest), and with `--runner ray` (a local cluster of this
machine started by the command), against the transformers
token-classification pipeline at its best batch size; and the job's model step against the bare engine (one
thread, no Ray, the same windows sorted into length buckets, as benchmarks/engine_batch.py runs it).

    python benchmarks/annotate_corpora.py --model runs/ner --out benchmarks/results/annotate_corpora_cpu.json

Tokens are counted once per document (the model tokenizer, no special tokens, no window overlap), so both sides
are divided by the same number. The pipeline runs on the corpus's first --pipeline-rows documents (its rate does
not change with the corpus size: no start-up to spread); ours on the whole corpus.
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

sys.path.insert(0, str(Path(__file__).parent))
from annotate_ner import corpus_tokens, machine_info, pipeline_at_best_batch, run_pipeline  # noqa: E402


def whole_command(model: str, corpus: str, out: str, runner: str = "ray") -> dict:
    """`nlpbatch annotate ner` in a new process with the defaults: wall seconds and its manifest's timings."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "nlpbatch", "annotate", "ner", "--model", model, "--input", corpus]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*command, "--output", out, "--runner", runner, "--quiet"], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    with open(f"{out}/_SUCCESS.json") as fh:
        manifest = json.load(fh)
    return {
        "wall_seconds": wall,
        "runner": manifest["runner"],
        "engine": manifest["engine"],
        "rows_out": manifest["rows_out"],
        **manifest["timings"],
    }


def job_windows(model: str, texts: list[str]) -> list:
    """The windows annotate cuts from these texts (the job's own tokenize stage), as int64 arrays."""
    import numpy as np
    import pyarrow as pa

    from nlpbatch.annotate import stages
    from nlpbatch.config import load_annotate_config

    cfg = load_annotate_config(task="ner", model=model, input="-", output="-")
    lines = pa.array([json.dumps({"id": str(i), "text": t}).encode() for i, t in enumerate(texts)], pa.binary())
    parsed = stages.parse_rows(pa.table({"raw": lines}), "jsonl", "id", "text", None, None, cfg.max_chars)
    table = stages.tokenize_slice(parsed, "ner", model, cfg.window, cfg.stride)
    return [np.asarray(w, np.int64) for w in table.column("_input_ids").combine_chunks().flatten().to_pylist()]


def bare_engine(model: str, windows: list, batch_tokens: int) -> float:
    """Window tokens a second of the default engine on one thread (an actor's), in length buckets."""
    from engine_batch import tokens_per_second

    from nlpbatch.engines import load_engine

    engine = load_engine("ner", model, "auto", threads=1, reduce=True)
    tokens_per_second(engine, windows[:50], batch_tokens)  # warm-up
    return tokens_per_second(engine, windows, batch_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a fine-tuned NER model dir (copied; the copy is exported)")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--corpora", default="short:10000,mixed:10000,long:1000", help="KIND:ROWS, comma list")
    parser.add_argument("--pipeline-rows", type=int, default=1500, help="documents of each corpus the pipeline runs")
    parser.add_argument("--sweep-rows", type=int, default=300, help="the pipeline's batch-size sweep runs on these")
    parser.add_argument("--pipeline-batch-sizes", default="1,8,32")
    parser.add_argument("--bare-rows", type=int, default=1500, help="documents whose windows the bare engine runs")
    parser.add_argument("--runners", default="auto,ray", help="ours with each --runner (auto: the default)")
    parser.add_argument("--out", default="benchmarks/results/annotate_corpora_cpu.json")
    args = parser.parse_args()

    import shutil

    import pyarrow.parquet as pq

    from nlpbatch.api import export
    from nlpbatch.config import load_annotate_config
    from nlpbatch.corpus import write_corpus

    threads = os.cpu_count() or 1
    result = {
        "benchmark": "annotate ner (defaults, whole command and streaming) vs the transformers pipeline (simple) on "
        "three length mixes; the job's model step vs the bare engine",
        "machine": machine_info(),
        "model": args.model,
        "corpora": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        model = f"{tmp}/model"
        shutil.copytree(args.model, model, ignore=shutil.ignore_patterns("onnx", "openvino", "ray_runs"))
        export(model)  # what `nlpbatch export` writes
        batch_tokens = load_annotate_config(task="ner", model=model, input="-", output="-").tokens_per_batch
        for spec in args.corpora.split(","):
            kind, rows = spec.split(":")
            corpus = f"{tmp}/{kind}"
            write_corpus(args.data_dir, int(rows), corpus, kind=kind)
            texts = pq.read_table(f"{corpus}/part-00000.parquet")["text"].to_pylist()
            tokens = corpus_tokens(texts, model)
            entry = {"rows": len(texts), "tokens": tokens, "tokens_per_document": tokens / len(texts)}
            result["corpora"][kind] = entry
            head = texts[: args.pipeline_rows]
            sweep = texts[: args.sweep_rows]
            pipeline = pipeline_at_best_batch(
                run_pipeline,
                model,
                head,
                corpus_tokens(head, model),
                sweep,
                corpus_tokens(sweep, model),
                args.pipeline_batch_sizes,
                threads,
            )
            entry["pipeline"] = {**pipeline, "rows": len(head)}
            rate = pipeline["tokens_per_second"]
            windows = job_windows(model, texts[: args.bare_rows])
            all_windows = job_windows(model, texts) if args.bare_rows < len(texts) else windows
            window_tokens = sum(len(w) for w in all_windows)  # what the job's model step ran
            bare = bare_engine(model, windows, batch_tokens)
            entry["bare_engine"] = {
                "window_tokens_per_second": bare,
                "windows_of_rows": min(args.bare_rows, len(texts)),
                "window_tokens": sum(len(w) for w in windows),
            }
            for runner in args.runners.split(","):
                ours = whole_command(model, corpus, f"{tmp}/out-{kind}", runner)
                shutil.rmtree(f"{tmp}/out-{kind}")
                ours["tokens_per_second_streaming"] = tokens / ours["stream_seconds"]
                ours["tokens_per_second_whole_command"] = tokens / ours["wall_seconds"]
                # the pipeline's whole command on this corpus is its rate plus its model load (about 1 s)
                ours["ratio_streaming"] = ours["tokens_per_second_streaming"] / rate
                ours["ratio_whole_command"] = ours["tokens_per_second_whole_command"] / rate
                step = window_tokens / ours["stage_task_seconds"]["predict"]  # per engine thread-second
                ours["model_step"] = {
                    "window_tokens": window_tokens,
                    "window_tokens_per_engine_second": step,
                    "share_of_bare": step / bare,
                }
                entry[f"ours_{runner}"] = ours
                print(kind, runner, {k: round(v, 2) for k, v in ours.items() if k.startswith("ratio")}, flush=True)
                Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # a run cut short keeps its figures


if __name__ == "__main__":
    main()
