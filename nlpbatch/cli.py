"""Command line: `nlpbatch train|evaluate ner|qa ...`. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path

from nlpbatch.config import AnnotateConfig, ConfigError, TrainConfig, load_annotate_config, load_train_config
from nlpbatch.data import DataError
from nlpbatch.storage import StorageError

DATA_ENV = "NLPBATCH_DATA_DIR"
TRAIN_HELP = {
    "data_dir": f"data root (DIR/conll2003/*.txt, DIR/squad/*.json); default ${DATA_ENV}, else the HF hub",
    "model": "HF model id or local dir (default: the bundled all-MiniLM-L6-v2)",
    "batch_size": "global batch size, split across workers",
    "num_workers": "data-parallel Ray Train workers",
    "resume": "continue the run in OUTPUT from its latest checkpoint",
    "overwrite": "train: discard an earlier run in OUTPUT; annotate: replace a published output of another task/input",
    "max_steps": "stop after this many optimizer steps (smoke tests)",
    "skip_invalid": "skip invalid QA examples (counted in metrics.json) instead of failing",
    "input": "local path, glob or s3://bucket/prefix of .parquet / .jsonl / .jsonl.gz files",
    "output": "local dir or s3:// prefix: data/, rejects/ and a _SUCCESS.json manifest",
    "questions": "QA: file with one question per line, asked of every document",
    "aggregation": "NER: simple | first | max (as the transformers pipeline)",
    "s3_endpoint": "S3-compatible endpoint URL (default $AWS_ENDPOINT_URL)",
    "num_gpus": "GPUs per inference actor (> 0: bf16 on GPU)",
    "backend": "inference engine: torch, onnx (int8 if exported, else fp32), onnx-fp32, onnx-int8; auto: onnx on CPU "
    "when `nlpbatch export` has run, else torch",
    "rows_per_file": "rows per output file (few large files suit object stores)",
    "lease_ttl_seconds": "a crashed run's lease on OUTPUT expires after this many seconds",
    "break_lease": "take over OUTPUT although another run's lease looks alive (that run must be dead)",
}


def _add_config_flags(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """One flag per config field, so YAML keys and flags never drift apart."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name == "task":
            continue
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        kind = (
            next(a for a in typing.get_args(hint) if a is not type(None)) if isinstance(hint, types.UnionType) else hint
        )
        help_text = TRAIN_HELP.get(field.name, "") + (
            f" (default {field.default})" if field.default is not None else ""
        )
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=None, help=help_text, required=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlpbatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune with Ray Train (data-parallel, DDP)")
    train.add_argument("task", choices=["ner", "qa"])
    train.add_argument("--config", help="YAML file with the same keys as the flags (flags win)")
    _add_config_flags(train)

    ann = sub.add_parser("annotate", help="stream a corpus through a model with Ray Data; spans to storage")
    ann.add_argument("task", choices=["ner", "qa"])
    ann.add_argument("--config", help="YAML file with the same keys as the flags (flags win)")
    _add_config_flags(ann, AnnotateConfig)

    night = sub.add_parser("nightly", help="annotate the dt=YYYY-MM-DD partitions that have no _SUCCESS.json yet")
    night.add_argument("task", choices=["ner", "qa"])
    night.add_argument("--config", help="YAML file with the annotate keys (flags win)")
    night.add_argument("--date", help="only this partition (YYYY-MM-DD)")
    night.add_argument("--since", help="backfill: partitions on or after this date")
    night.add_argument("--until", help="backfill: partitions on or before this date")
    night.add_argument(
        "--require-input-marker",
        action="store_true",
        help="take a partition only once its input folder holds a _SUCCESS file (written by the upstream job)",
    )
    night.add_argument(
        "--settle-hours",
        type=float,
        default=0.0,
        help="without --require-input-marker: take dt=D once day D (UTC) ended this many hours ago (default 0)",
    )
    _add_config_flags(night, AnnotateConfig)

    corpus = sub.add_parser("corpus", help="build a benchmark corpus from the shared CoNLL/SQuAD data")
    corpus.add_argument("--rows", type=int, required=True)
    corpus.add_argument("--output", required=True, help="local dir or s3:// prefix")
    corpus.add_argument("--data-dir", help=f"default ${DATA_ENV}")
    corpus.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    corpus.add_argument("--files", type=int, default=1)
    corpus.add_argument("--seed", type=int, default=0)
    corpus.add_argument("--s3-endpoint")

    ev = sub.add_parser("evaluate", help="score a saved model on a CoNLL/SQuAD file, data dir or hub dataset")
    ev.add_argument("task", choices=["ner", "qa"])
    ev.add_argument("--model", required=True, help="fine-tuned model dir (or hub id)")
    ev.add_argument("--data", help=f"file, data dir or hub dataset name (default ${DATA_ENV}, else the hub)")
    ev.add_argument("--split", default="validation", help="split to read from a data dir or hub dataset")
    ev.add_argument("--num-workers", type=int, default=0, help="0: this process; N: N Ray Train workers")
    ev.add_argument("--max-examples", type=int)
    ev.add_argument("--max-length", type=int)
    ev.add_argument("--doc-stride", type=int)
    ev.add_argument("--eval-batch-size", type=int)
    ev.add_argument("--use-gpu", action="store_true", default=None)
    ev.add_argument("--skip-invalid", action="store_true")
    ev.add_argument(
        "--backend",
        choices=["torch", "onnx", "onnx-fp32", "onnx-int8"],
        default="torch",
        help="inference engine to score with (onnx*: the files `nlpbatch export` wrote)",
    )

    exp = sub.add_parser("export", help="write ONNX Runtime files (fp32, optionally int8) beside a fine-tuned model")
    exp.add_argument("--model", required=True, help="fine-tuned model dir")
    exp.add_argument(
        "--quantize",
        choices=["int8", "none"],
        default="int8",
        help="also write a dynamically quantized int8 model (default int8; annotate then uses it on CPU)",
    )
    ev.add_argument(
        "--predictions",
        help="write predictions here: NER as CoNLL lines `word gold pred` (conlleval's input), QA as {id: answer}",
    )
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from nlpbatch.train.trainer import run_training

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig) if f.name != "task"}
    if overrides["data_dir"] is None and os.environ.get(DATA_ENV):
        overrides["data_dir"] = os.environ[DATA_ENV]
    cfg = load_train_config(args.config, task=args.task, **overrides)
    metrics = run_training(cfg)
    print(json.dumps({"output": str(Path(cfg.output).resolve()), "final": metrics["final"]}, indent=2))
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from nlpbatch.annotate.pipeline import run_annotation

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(AnnotateConfig) if f.name != "task"}
    manifest = run_annotation(load_annotate_config(args.config, task=args.task, **overrides))
    summary = {k: manifest[k] for k in ("run_id", "rows_in", "rows_out", "rows_rejected", "tokens")}
    print(json.dumps({**summary, "timings": manifest["timings"]}, indent=2))
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from nlpbatch.nightly import run_nightly

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(AnnotateConfig) if f.name != "task"}
    base = load_annotate_config(args.config, task=args.task, **overrides)
    summary = run_nightly(base, args.date, args.since, args.until, args.require_input_marker, args.settle_hours)
    print(json.dumps(summary, indent=2))
    if summary["failed"]:
        print(
            f"nlpbatch: error: {len(summary['failed'])} partition(s) failed: {', '.join(summary['failed'])}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_corpus(args: argparse.Namespace) -> int:
    from nlpbatch.corpus import write_corpus

    data_dir = args.data_dir or os.environ.get(DATA_ENV)
    if not data_dir:
        raise ConfigError(f"corpus needs --data-dir or ${DATA_ENV}")
    paths = write_corpus(data_dir, args.rows, args.output, args.seed, args.format, args.files, args.s3_endpoint)
    print(json.dumps({"rows": args.rows, "files": paths}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nlpbatch.evaluation import eval_config, evaluate_model

    cfg = eval_config(
        args.task,
        args.model,
        max_length=args.max_length,
        doc_stride=args.doc_stride,
        eval_batch_size=args.eval_batch_size,
        use_gpu=args.use_gpu,
    )
    data = args.data or os.environ.get(DATA_ENV)
    metrics, predictions = evaluate_model(
        cfg, data, args.split, args.num_workers, args.max_examples, args.skip_invalid, args.backend
    )
    if args.predictions:
        if args.task == "ner":
            from nlpbatch.tasks.ner import conll_lines

            Path(args.predictions).write_text(conll_lines(predictions), encoding="utf-8")
        else:
            Path(args.predictions).write_text(json.dumps(predictions, indent=1, ensure_ascii=False))
    print(json.dumps(metrics, indent=2))
    return 0


USER_ERRORS = (ConfigError, DataError, StorageError, FileNotFoundError)


def run_job(work) -> int:
    """Run `work()`; a problem the user can fix (config, data, storage, a refused or unreconciled run) is one
    `nlpbatch: error:` line and exit status 2, never a traceback."""
    try:
        return work()
    except USER_ERRORS as err:
        print(f"nlpbatch: error: {err}", file=sys.stderr)
        return 2


def cmd_export(args: argparse.Namespace) -> int:
    from nlpbatch.engines import export_onnx
    from nlpbatch.models import resolve_model

    path = resolve_model(args.model)
    if not Path(path).is_dir():
        raise ConfigError(f"--model {args.model}: export needs a local model dir")
    written = export_onnx(path, None if args.quantize == "none" else args.quantize)
    print(json.dumps({"model": path, "onnx": written}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "annotate": cmd_annotate,
        "corpus": cmd_corpus,
        "nightly": cmd_nightly,
        "export": cmd_export,
    }[args.command]
    return run_job(lambda: command(args))
