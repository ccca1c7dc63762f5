"""Annotation on one GPU, side by side in one run: the bare forward pass of the model (the ceiling), our inference
step alone (packed windows vs padded length buckets, no Ray, and how far their NER labels and QA logits are apart),
the whole `nlpbatch annotate ner` job (read, tokenize, infer, decode, write: Parquet on local disk in and out) with
the GPU's utilisation sampled, the transformers token-classification pipeline ("simple") on a sample of the same
corpus, `annotate qa` on SQuAD's validation questions and `annotate classify` on the NER corpus.

    python benchmarks/gpu.py --model .device/model --data-dir .device/data --out $OUT/annotate_gpu.json
    python benchmarks/gpu.py --table benchmarks/results/*_gpu.json   # the README table from a run's JSON files

On the lent device machine (../shared/device/README.md): `benchmarks/device_run.py` runs this script's parts and
the training recipes in one call, each part under its own time budget (its docstring has the calls):
  0. here, once:  bash benchmarks/device_prepare.sh      (.device/: Ray, the fp16 model, the data, datasets 4.x)
  1. carry [".device/ray"]:
     mkdir -p /tmp/site && tar xJf .device/ray/ray-*.tar.xz -C /tmp/site && python3 -m pip install -q --no-index
     --no-deps --no-compile --target /tmp/site .device/ray/*.whl && PYTHONPATH=/tmp/site python3 -c "import ray"
  2. at once, carry [".device/model", ".device/data"]:
     export PYTHONPATH=$PWD:/tmp/site PATH=/tmp/site/bin:$PATH HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1;
     python3 -c 'import ray' || exit 3; python3 benchmarks/device_run.py --model .device/model --data-dir .device/data
  `device_run.py --dry-run` runs every part here on the CPU at small sizes; the CUDA-only parts (varlen attention,
  bf16, nvidia-smi) have only run in their CPU fallbacks.

It runs on CPU too (small sizes: `--rows 300 --forward-shapes 4x128 --pipeline-rows 50`), so CI-side changes can
be checked without a GPU. The model's weights do not change the speed: a base model gets a random 9-label head.
Tokens are counted once per document (the model's tokenizer, no special tokens, no window overlap) for every side;
the forward ceiling counts the tokens of full windows. The anchors are the H100 figures in ../shared/device/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from annotate_ner import corpus_tokens  # benchmarks/ is on sys.path when a script in it runs

ANCHORS = {"bare_forward_512x512": 9.4e6, "bare_forward_2048x128": 10.8e6, "pipeline": 17e3, "tokenizer_core": 290e3}
TARGET, STRETCH = 1_000_000, 2_000_000
TRAIN_TARGETS = {"ner": (0.915, 20.0), "qa": (63.0, 10.0)}  # validation F1 within this many seconds of loop
PACKING_AGREEMENT = 0.999  # share of labels (NER) / best tokens (QA) packed and padded must agree on
NIGHTLY_TOKENS, NIGHTLY_SECONDS = 250e9, 8 * 3600  # issue #12: a nightly 1 TB text corpus in 8 hours


class GpuSampler:
    """GPU utilisation (%) every 0.2 s from nvidia-smi while the block runs; empty where there is none."""

    def __init__(self):
        self.samples: list[float] = []
        self._proc = None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self):
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.samples.append(float(line))

    def __exit__(self, *exc):
        if self._proc:
            self._proc.terminate()
            self._proc.wait()

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        busy = sorted(self.samples)
        return {"mean_percent": sum(busy) / len(busy), "median_percent": busy[len(busy) // 2], "samples": len(busy)}


def ner_model(base: str, folder: str) -> str:
    """The model dir as is if it is a token-classification model, else the base with a random CoNLL head."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from nlpbatch.data.conll import NER_LABELS
    from nlpbatch.tasks import task_of_model

    if task_of_model(base) == "ner":
        return base
    labels = dict(enumerate(NER_LABELS))
    model = AutoModelForTokenClassification.from_pretrained(
        base, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def head_model(base: str, folder: str, task: str) -> str:
    """`base` with a random head for `task` (qa; classify: two labels), saved in `folder`: the weights do not change
    the speed, and the packed / padded comparison needs only one model for both sides."""
    from datasets import ClassLabel, Dataset, Features, Value
    from transformers import AutoTokenizer

    from nlpbatch.tasks import get_task

    two = Dataset.from_dict(
        {"text": ["a", "b"], "label": [0, 1]}, Features(text=Value("string"), label=ClassLabel(names=["0", "1"]))
    )
    get_task(task).build_model(base, two).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def bare_forward(model_path: str, shapes: list[tuple[int, int]], seconds: float) -> dict:
    """Tokens/s of the model's forward pass alone (bf16 on GPU, fp32 on CPU), full windows of random ids."""
    import torch
    from transformers import AutoModelForTokenClassification

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    model = AutoModelForTokenClassification.from_pretrained(model_path, dtype=dtype).to(device).eval()
    out = {}
    for rows, width in shapes:
        ids = torch.randint(1000, 20000, (rows, width), device=device)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            for _ in range(3):
                model(input_ids=ids, attention_mask=mask)
            torch.cuda.synchronize() if cuda else None
            calls, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
                calls += 1
            torch.cuda.synchronize() if cuda else None
            elapsed = time.perf_counter() - t0
        out[f"{rows}x{width}"] = {"tokens_per_second": calls * rows * width / elapsed, "calls": calls}
        print("bare forward", rows, width, out[f"{rows}x{width}"], flush=True)
    return out


def inference_step(
    model: str,
    texts: list[str],
    tokens: int,
    batch_tokens: int,
    use_gpu: bool,
    task: str = "ner",
    questions: list[str] | None = None,
) -> dict:
    """Our predictor alone on the tokenized corpus (as the GPU actor runs it), packed vs padded length buckets; and
    how far the packed outputs are from the padded ones on the same windows (bf16 on a GPU: equal up to rounding,
    not bit for bit). QA: (question, text) pairs, the start / end logits compared."""
    import numpy as np
    import pyarrow as pa

    from nlpbatch.annotate import stages
    from nlpbatch.annotate.predictors import Predictor
    from nlpbatch.tasks import get_task

    rows = [{"id": str(i), "text": t, **({"question": questions[i]} if questions else {})} for i, t in enumerate(texts)]
    raw = pa.table({"raw": pa.array([json.dumps(r).encode() for r in rows])})
    second = "question" if questions else None
    table = stages.parse_rows(raw, "jsonl", "id", "text", second, None, 10_000_000).drop_columns(["_sec_parse"])
    table = stages.tokenize(table, task, model, 512, 128)
    window_tokens = len(table.column("_input_ids").combine_chunks().flatten().flatten())
    out = {"task": task, "window_tokens": window_tokens}
    predicted = {}
    for packing in ("on", "off"):
        predictor = Predictor(task, model, batch_tokens, use_gpu, "torch", packing=packing)
        predictor(table.slice(0, 64))  # warm-up: CUDA context, kernels
        t0 = time.perf_counter()
        predicted[packing] = predictor(table)
        seconds = time.perf_counter() - t0
        out[f"packing_{packing}"] = {
            "engine": predictor.engine.name,
            "tokens_per_second": tokens / seconds,
            "window_tokens_per_second": window_tokens / seconds,
            "seconds": seconds,
        }
        print("inference step", task, packing, out[f"packing_{packing}"], flush=True)
    compared = {}
    columns = get_task(task).token_columns
    logits_only = not any(dtype.startswith("int") for _, dtype in columns)  # QA: start / end logits
    for column, dtype in columns:
        on, off = (_flat(predicted[k], column) for k in ("on", "off"))
        if dtype.startswith("int"):
            compared[f"{column[1:]}_agreement"] = float((on == off).mean())
            continue
        compared[f"{column[1:]}_max_difference"] = float(np.abs(on - off).max())
        if logits_only:  # the token each window would pick (its best start / end), packed vs padded
            bounds = _window_offsets(predicted["off"], column)
            picks = [[np.argmax(v[a:b]) for a, b in zip(bounds[:-1], bounds[1:])] for v in (on, off)]
            compared[f"{column[1:]}_window_argmax_agreement"] = float(np.mean(np.equal(*picks)))
    # within bf16 rounding: the same labels (NER) / best tokens (QA) but for near ties
    compared["packing_holds"] = all(v >= PACKING_AGREEMENT for k, v in compared.items() if k.endswith("agreement"))
    compared["rule"] = f"packing stays the GPU default while every agreement above is >= {PACKING_AGREEMENT}"
    out["packed_vs_padded"] = compared
    print("packed vs padded", task, compared, flush=True)
    return out


def _window_offsets(table, column: str):
    """Where each window's tokens start (and the last ends) in the flat column (rows -> windows -> tokens)."""
    import numpy as np

    offsets = np.asarray(table.column(column).combine_chunks().flatten().offsets)
    return offsets - offsets[0]


def _flat(table, column: str):
    return table.column(column).combine_chunks().flatten().flatten().to_numpy(zero_copy_only=False)


def pipeline_reference(model: str, texts: list[str], batch_sizes: list[int]) -> dict:
    import torch
    from transformers import pipeline

    device = 0 if torch.cuda.is_available() else -1
    tokens = corpus_tokens(texts, model)
    out = {"rows": len(texts)}
    for batch_size in batch_sizes:
        tagger = pipeline("token-classification", model=model, aggregation_strategy="simple", stride=128, device=device)
        t0 = time.perf_counter()
        for _ in tagger(texts, batch_size=batch_size):
            pass
        out[str(batch_size)] = {"tokens_per_second": tokens / (time.perf_counter() - t0)}
        print("pipeline", batch_size, out[str(batch_size)], flush=True)
    out["tokens_per_second"] = max(out[str(b)]["tokens_per_second"] for b in batch_sizes)
    return out


def annotate_job(model: str, corpus: str, output: str, tokens: int, settings: dict, task: str = "ner") -> dict:
    import ray

    from nlpbatch.annotate.pipeline import run_annotation
    from nlpbatch.config import load_annotate_config

    cfg = load_annotate_config(task=task, model=model, input=corpus, output=output, quiet=True, **settings)
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        manifest = run_annotation(cfg)
        wall = time.perf_counter() - t0
    ray.shutdown()
    stream = manifest["timings"]["stream_seconds"]
    out = {
        "settings": settings,
        "tokens_per_second": tokens / stream,
        "tokens_per_second_wall": tokens / wall,
        "stream_seconds": stream,
        "wall_seconds": wall,
        "rows_out": manifest["rows_out"],
        "stage_task_seconds": manifest["timings"]["stage_task_seconds"],
        "gpu_utilisation": gpu.summary(),
    }
    out["stage_busy_share"], out["bound_by"] = bounding_stage(out["stage_task_seconds"], stream, settings)
    print("annotate", task, {k: out[k] for k in ("tokens_per_second", "wall_seconds", "gpu_utilisation")}, flush=True)
    return out


def bounding_stage(stage_seconds: dict, stream_seconds: float, settings: dict) -> tuple[dict, str | None]:
    """How busy each stage kept the workers it can run on over the streaming time (predict: the GPUs, one actor
    each; parse / tokenize / decode: every CPU), and the busiest: the stage that bounds the job. Writing is not
    timed per stage; a job whose busiest share is well under 1 is bound by it or by scheduling."""
    import torch

    gpus = torch.cuda.device_count() if settings.get("num_gpus") else 0
    share = {
        stage: seconds / stream_seconds / (gpus if stage == "predict" and gpus else (os.cpu_count() or 1))
        for stage, seconds in stage_seconds.items()
    }
    return share, max(share, key=share.get) if share else None


def qa_job(model_base: str, data_dir: str, folder: str, repeat: int, ceiling: float | None, use_gpu: bool) -> dict:
    """`nlpbatch annotate qa` on the SQuAD validation questions (repeated with new ids for a long enough run)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from transformers import AutoTokenizer

    from nlpbatch.annotate.pipeline import run_annotation
    from nlpbatch.config import load_annotate_config
    from nlpbatch.tasks.qa import load_split

    raw = load_split(data_dir, "validation")
    model = head_model(model_base, f"{folder}/qa", "qa")
    rows = [(f"{k}-{r['id']}", r["context"], r["question"]) for k in range(repeat) for r in raw]
    ids, texts, questions = (list(c) for c in zip(*rows))
    pq.write_table(pa.table({"id": ids, "text": texts, "question": questions}), f"{folder}/qa.parquet")
    tokens = sum(
        map(len, AutoTokenizer.from_pretrained(model)(questions, texts, add_special_tokens=False)["input_ids"])
    )
    settings = {"num_gpus": 1.0} if use_gpu else {}
    cfg = load_annotate_config(
        task="qa", model=model, input=f"{folder}/qa.parquet", output=f"{folder}/qa-out", quiet=True, **settings
    )
    with GpuSampler() as gpu:
        manifest = run_annotation(cfg)
    ray.shutdown()
    stream = manifest["timings"]["stream_seconds"]
    out = {
        "questions": len(rows),
        "questions_per_second": manifest["rows_out"] / stream,
        "tokens_per_second": tokens / stream,  # question + context tokens, once per question
        "share_of_bare_forward": tokens / stream / ceiling if ceiling else None,
        "rows_out": manifest["rows_out"],
        "stream_seconds": stream,
        "gpu_utilisation": gpu.summary(),
    }
    print("annotate qa", out, flush=True)
    return out


def tokenizer_per_core(model: str, texts: list[str]) -> float:
    """Tokens/s of the fast tokenizer on one core (its Rust thread pool held to one thread), with offsets."""
    script = (
        "import sys, json, time\n"
        "from transformers import AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "texts = json.load(sys.stdin)\n"
        "t0 = time.perf_counter()\n"
        "enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)\n"
        "print(sum(map(len, enc['input_ids'])) / (time.perf_counter() - t0))\n"
    )
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(
        ["python3", "-c", script, model], input=json.dumps(texts), capture_output=True, text=True, env=env, check=True
    )
    return float(run.stdout.strip().splitlines()[-1])


def scale_out(tokens_per_second_per_machine: float, tokenizer_core: float, cpus: int) -> dict:
    """Machines like this one, and tokenizer cores, for a nightly 1 TB corpus (about 250 billion tokens) in 8 h."""
    need = NIGHTLY_TOKENS / NIGHTLY_SECONDS
    return {
        "corpus_tokens": NIGHTLY_TOKENS,
        "hours": NIGHTLY_SECONDS / 3600,
        "tokens_per_second_needed": need,
        "machines": math.ceil(need / tokens_per_second_per_machine),
        "gpus": math.ceil(need / tokens_per_second_per_machine),  # one GPU a machine here
        "machine_cpus": cpus,
        "tokenizer_cores_needed": math.ceil(need / tokenizer_core),
    }


def merged(results: list[dict]) -> dict:
    """The JSON files of one device run (device_run.py writes one a part) as one result: a key two files share and
    hold dicts in (the annotate jobs) is merged, any other is the later file's."""
    out: dict = {}
    for result in results:
        for key, value in result.items():
            both = isinstance(value, dict) and isinstance(out.get(key), dict)
            out[key] = {**out[key], **value} if both else value
    return out


def table(result: dict, training: list[dict] = ()) -> str:
    """The README table: machine, figure, ours, anchor, ratio (training: against the issue's targets)."""
    gpu = result["machine"]["gpu"]
    machine = gpu or f"CPU ({result['machine']['cpus']} cores)"
    anchor = ANCHORS if gpu else {}  # the anchors are H100 figures: no ratio against them on other machines
    rows = []
    forward = result.get("bare_forward", {})
    for shape, run in forward.items():
        rows.append(
            (
                f"bare forward {shape.replace('x', ' x ')}",
                run["tokens_per_second"],
                anchor.get(f"bare_forward_{shape}"),
                "tokens/s",
            )
        )
    ceiling = max((run["tokens_per_second"] for run in forward.values()), default=None)
    step = result.get("inference_step", {})
    for packing in ("on", "off"):
        if f"packing_{packing}" in step:
            name = f"inference step, packing {packing} (no Ray)"
            rows.append((name, step[f"packing_{packing}"]["tokens_per_second"], ceiling, "tokens/s, ratio to ceiling"))
    for name, check in (("NER", step), ("QA", result.get("qa_step", {}))):
        for key, value in check.get("packed_vs_padded", {}).items():
            if key.endswith("agreement"):
                rows.append((f"packed vs padded, {name}: {key.replace('_', ' ')}", value, 1.0, "share"))
    pipe = result.get("pipeline", {}).get("tokens_per_second")
    if pipe:
        rows.append(("transformers pipeline (simple)", pipe, anchor.get("pipeline"), "tokens/s"))
    for name, job in result.get("annotate", {}).items():
        util = job.get("gpu_utilisation") or {}
        busy = f"; GPU busy {util['mean_percent']:.0f}%" if util else ""
        busy += f"; bound by {job['bound_by']}" if job.get("bound_by") else ""
        label = f"`annotate ner` end to end ({name}{busy})"
        rows.append((label, job["tokens_per_second"], TARGET if gpu else None, "tokens/s, ratio to the 1M target"))
        if ceiling:
            rows.append(
                (f"`annotate ner` ({name}), share of the bare forward", job["tokens_per_second"], ceiling, "ratio")
            )
        if pipe:
            rows.append((f"`annotate ner` ({name}) vs pipeline", job["tokens_per_second"], pipe, "speed-up"))
    classify = result.get("annotate_classify")
    if classify:
        rows.append(("`annotate classify` end to end", classify["tokens_per_second"], None, "tokens/s"))
        if ceiling:
            rows.append(
                ("`annotate classify`, share of the bare forward", classify["tokens_per_second"], ceiling, "ratio")
            )
    qa = result.get("annotate_qa")
    if qa:
        rows.append(("`annotate qa` end to end", qa["questions_per_second"], None, "questions/s"))
        if ceiling:
            rows.append(("`annotate qa`, share of the bare forward", qa["tokens_per_second"], ceiling, "ratio"))
    core = result.get("tokenizer_per_core")
    if core:
        rows.append(("fast tokenizer, one core, with offsets", core, anchor.get("tokenizer_core"), "tokens/s"))
    plan = result.get("scale_out")
    if plan:
        rows.append(("nightly 250 B tokens in 8 h: machines like this", plan["machines"], None, "count"))
        rows.append(("nightly 250 B tokens in 8 h: tokenizer cores", plan["tokenizer_cores_needed"], None, "count"))
    for run in training:
        task, final = run["task"], run["final"]
        f1 = final.get("overall_f1", final.get("f1"))
        target_f1, target_seconds = TRAIN_TARGETS[task] if gpu else (None, None)  # GPU targets
        epochs = len(run["per_epoch"])
        rows.append(
            (
                f"`train {task}` default recipe, {epochs} epoch{'s' * (epochs > 1)}: validation F1",
                f1,
                target_f1,
                "F1, ratio to target",
            )
        )
        seconds = run["train_loop_seconds"]
        rows.append(
            (f"`train {task}`: loop seconds (Ray start-up apart)", seconds, target_seconds, "s, ratio to target")
        )
    lines = ["| machine | figure | ours | anchor | ratio |", "| --- | --- | ---: | ---: | ---: |"]
    for name, ours, anchor, unit in rows:
        ratio = f"{ours / anchor:.2f}" if anchor else ""
        anchor_text = (f"{anchor:.4g}" if anchor < 10 else f"{anchor:,.0f}") if anchor else ""
        ours_text = f"{ours:.4f}" if unit == "share" or ours < 10 else f"{ours:,.0f}"
        lines.append(f"| {machine} | {name} ({unit}) | {ours_text} | {anchor_text} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a NER model dir, or a base model (a random head is added)")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--rows", type=int, default=200_000, help="documents in the annotate corpus")
    parser.add_argument(
        "--corpus", help="the corpus folder: written here once, reused by later calls (default: a temp dir)"
    )
    parser.add_argument("--step-rows", type=int, default=20_000, help="documents for the inference-step timing")
    parser.add_argument("--pipeline-rows", type=int, default=2_000)
    parser.add_argument("--pipeline-batch-sizes", default="1,32")
    parser.add_argument("--forward-shapes", default="512x512,2048x128")
    parser.add_argument("--forward-seconds", type=float, default=5.0)
    parser.add_argument("--batch-tokens", type=int, default=65536, help="tokens a forward pass in the step timing")
    parser.add_argument(
        "--jobs",
        default="defaults;packing=off;batch_tokens=262144",
        help="annotate runs, ';'-separated: 'defaults' or key=value,key=value settings on top of --num-gpus 1",
    )
    parser.add_argument("--parts", default="forward,step,qa_step,pipeline,annotate,qa,classify,scale")
    parser.add_argument("--qa-repeat", type=int, default=20, help="the SQuAD validation questions, this many times")
    parser.add_argument("--out", default="benchmarks/results/annotate_gpu.json")
    parser.add_argument("--table", metavar="JSON", nargs="+", help="print the README table of these result files, exit")
    args = parser.parse_args()
    if args.table:
        results = [json.loads(Path(path).read_text()) for path in args.table]
        training = [r for r in results if "per_epoch" in r]  # benchmarks/quality.py's files
        print(table(merged([r for r in results if "per_epoch" not in r]), training))
        return

    import pyarrow.parquet as pq
    import torch
    import transformers

    from nlpbatch.corpus import write_corpus

    cuda = torch.cuda.is_available()
    parts = set(args.parts.split(","))
    result = {
        "benchmark": "NER annotation on one GPU: bare forward, inference step, annotate job, transformers pipeline",
        "machine": {
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "anchors_h100": ANCHORS,
    }

    def save() -> None:  # partial results survive a failure further on
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        model = ner_model(args.model, f"{tmp}/model")
        result["model"] = args.model
        if "forward" in parts:
            shapes = [tuple(int(x) for x in s.split("x")) for s in args.forward_shapes.split(",")]
            result["bare_forward"] = bare_forward(model, shapes, args.forward_seconds)
            save()
        corpus = args.corpus or f"{tmp}/corpus"
        if not Path(corpus, "part-00000.parquet").is_file():  # a --corpus written by an earlier call is reused
            write_corpus(args.data_dir, args.rows, corpus)
        texts = pq.read_table(f"{corpus}/part-00000.parquet")["text"].to_pylist()
        tokens = corpus_tokens(texts, model)
        result["corpus"] = {"rows": len(texts), "tokens": tokens, "tokens_per_row": tokens / len(texts)}
        print("corpus", result["corpus"], flush=True)
        if "step" in parts:
            step = texts[: args.step_rows]
            result["inference_step"] = inference_step(model, step, corpus_tokens(step, model), args.batch_tokens, cuda)
            save()
        if "qa_step" in parts:
            from nlpbatch.tasks.qa import load_split

            squad = load_split(args.data_dir, "validation").select(range(args.step_rows // 4))
            qa = head_model(args.model, f"{tmp}/qa-step", "qa")
            contexts, questions = squad["context"], squad["question"]
            qa_tokens = corpus_tokens([f"{q} {c}" for q, c in zip(questions, contexts)], qa)
            result["qa_step"] = inference_step(qa, contexts, qa_tokens, args.batch_tokens, cuda, "qa", questions)
            save()
        if "pipeline" in parts:
            sample = texts[: args.pipeline_rows]
            result["pipeline"] = pipeline_reference(
                model, sample, [int(b) for b in args.pipeline_batch_sizes.split(",")]
            )
            save()
        if "annotate" in parts:
            result["annotate"] = {}
            for spec in filter(None, args.jobs.split(";")):
                settings = {"num_gpus": 1.0} if cuda else {}
                if spec != "defaults":
                    settings.update(_settings(spec))
                result["annotate"][spec] = annotate_job(
                    model, corpus, f"{tmp}/out-{len(result['annotate'])}", tokens, settings
                )
                save()
        ceiling = max((r["tokens_per_second"] for r in result.get("bare_forward", {}).values()), default=None)
        if "qa" in parts:
            result["annotate_qa"] = qa_job(args.model, args.data_dir, tmp, args.qa_repeat, ceiling, cuda)
            save()
        if "classify" in parts:  # a document label a row: one output a window, reduced on the device
            settings = {"num_gpus": 1.0} if cuda else {}
            classifier = head_model(args.model, f"{tmp}/classify", "classify")
            result["annotate_classify"] = annotate_job(
                classifier, corpus, f"{tmp}/out-classify", tokens, settings, "classify"
            )
            save()
        if "scale" in parts:
            result["tokenizer_per_core"] = tokenizer_per_core(model, texts[: args.step_rows])
            jobs = result.get("annotate", {})
            if jobs:
                best = max(job["tokens_per_second"] for job in jobs.values())
                result["scale_out"] = scale_out(best, result["tokenizer_per_core"], os.cpu_count() or 1)
            print("scale", result.get("tokenizer_per_core"), result.get("scale_out"), flush=True)
            save()
    print(table(result))


def _settings(spec: str) -> dict:
    """'packing=off,batch_tokens=262144' -> {'packing': 'off', 'batch_tokens': 262144}."""
    out = {}
    for item in spec.split(","):
        key, value = item.split("=", 1)
        out[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return out


if __name__ == "__main__":
    main()
