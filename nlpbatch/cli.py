"""Command line: `nlpbatch train|evaluate ner|qa ...`. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import types
import typing
from pathlib import Path

from nlpbatch.calibration import METHODS as CALIBRATION_METHODS
from nlpbatch.config import (
    DATA_FORMATS,
    READER_KEYS,
    WORD_UNITS,
    AnnotateConfig,
    ConfigError,
    TrainConfig,
    load_annotate_config,
    load_train_config,
)
from nlpbatch.data import DataError
from nlpbatch.data.exports import OUTPUT_FORMATS
from nlpbatch.data.tools import OVERLAPS, POLICIES
from nlpbatch.engines import BACKENDS
from nlpbatch.engines.openvino_engine import CALIBRATION_EXAMPLES
from nlpbatch.errors import RunFailed, Stopped, handle_sigterm
from nlpbatch.model_card import ModelCardError
from nlpbatch.nightly import MODEL_CHANGES
from nlpbatch.review import FORMATS as REVIEW_FORMATS
from nlpbatch.review import STRATEGIES as REVIEW_STRATEGIES
from nlpbatch.storage import StorageError
from nlpbatch.tasks import is_task, task_names

DATA_ENV = "NLPBATCH_DATA_DIR"
PREDICTION_HELP = {  # how predictions are read, for evaluation during training and for annotate alike
    "n_best": "QA: start/end candidates per window",
    "max_answer_length": "QA: longest answer in tokens",
    "window_reduce": "classify: a text longer than one window gets the label of its windows' mean, first or max "
    "probabilities",
    "label_thresholds": "classify, multi-label: a label is given at or over its threshold: 0.4 for all, or "
    "'toxic=0.3,spam=0.6' (others 0.5); default: the thresholds training tuned on the validation set (model card)",
    "null_threshold": 'QA (SQuAD v2.0): answer "no answer" when the null score beats the best span by more than '
    "this (default: the best threshold training found on the validation set, stored in the model)",
}
TRAIN_HELP = {
    "output": "dir for the exported model, metrics.json and (by default) the checkpoints",
    "train": "training file(s) of your own (a path or a glob): for NER a column file (word ... TAG per line, any "
    "entity types; e.g. WNUT-17), JSONL or Parquet with tokens + tags, spans as spaCy/Prodigy, doccano or Label "
    "Studio export them, or a hub dataset (name or downloaded folder); SQuAD JSON, or JSONL / Parquet rows of id, "
    "context, question, answers for QA; TSV / CSV / JSONL for classify; overrides --data-dir's train split",
    "validation": "validation file of your own (same formats); overrides --data-dir's validation split",
    "labels": "NER label list: comma list of tags or types (PER,ORG means O, B-PER, I-PER, B-ORG, I-ORG) or a file, "
    "to fix the order or add types the data lacks (default: from the training data)",
    "tag_scheme": "NER tags of the --train/--validation files: iob2, iob1, bioes (BILOU too), io (bare types); "
    "auto detects and says what it found; all are converted to IOB2",
    "span_alignment": "NER span files (spaCy/Prodigy, doccano, Label Studio): a span boundary inside a word is "
    "counted and reported, then expand (the whole word), contract (the words inside) or strict (an error)",
    "data_format": "NER file format, when the extension and content do not tell: conll (columns), tokens (JSONL / "
    "Parquet token and tag lists), label-studio (JSON export), label-studio-min (JSON-MIN), doccano (with or "
    "without relations), spacy (span JSONL), spacy-doc (Doc.to_json()), docbin (.spacy), prodigy (db-out)",
    "annotations": "NER span files, a task several people annotated: auto (its ground_truth annotation, else the "
    "most recent), all (one example per annotation), agreed (only the spans every annotator marked); their "
    "agreement is reported",
    "overlaps": "NER span files: overlapping or nested spans (one word has one tag): longest (keep the longest), "
    "first (keep the earliest), error; each one resolved is counted and named",
    "text_key": "NER span files: the field holding the text (Label Studio's $name; default: text, or the task's "
    "one text field)",
    "tokens_column": "NER token records and hub datasets: the column with the tokens (default tokens)",
    "tags_column": "NER token records and hub datasets: the column with the tags (default ner_tags, else tags)",
    "tag_column": "NER column files: the tag's column, 1-based (default: the last)",
    "multi_label": "classify: several labels per example, from a comma list in a TSV/CSV label cell (a list in "
    "JSONL / Parquet / a hub Sequence is multi-label anyway); sigmoid per label, thresholds tuned on validation",
    "text_column": "classify: column with the text (default text, else sentence)",
    "text_pair_column": "classify: column with the second text of a sentence pair",
    "label_column": "classify: column with the label",
    "data_dir": (
        "a data root holding the task's default folder (DIR/conll2003/*.txt for NER, DIR/squad/*.json for QA) or a "
        f"dataset's own folder (DIR/train.txt|json|tsv; classify has no default folder); default ${DATA_ENV}, else "
        "the HF hub"
    ),
    "model": "base model: HF model id or local dir (default: the bundled all-MiniLM-L6-v2)",
    "epochs": "passes over the training data; evaluation and a checkpoint after each",
    "learning_rate": "peak AdamW learning rate (linear warm-up, then linear decay)",
    "batch_size": "global batch size, split exactly across workers",
    "batch_tokens": "token-budget steps: each global batch is as many length-grouped examples as fit this many "
    "padded tokens (short sentences, big batches); unset: --batch-size examples a step",
    "eval_batch_size": "evaluation batch per worker",
    "weight_decay": "AdamW weight decay (not on biases and LayerNorm)",
    "warmup_ratio": "share of the steps spent warming the learning rate up",
    "max_grad_norm": "gradient-norm clip",
    "subtoken_labels": "NER: 'all' trains a word's continuation subtokens on its I- tag, 'first' only its first "
    "subtoken (scoring always reads the first)",
    "max_length": "window length in tokens (default 512 NER, 384 QA)",
    "doc_stride": "tokens shared by neighbouring windows: QA training contexts, and every task's evaluation windows of "
    "long texts",
    **PREDICTION_HELP,
    "group_by_length": "batch examples of similar length (less padding)",
    "max_train_examples": "use only the first N training examples (quick runs)",
    "max_eval_examples": "use only the first N validation examples",
    "max_steps": "stop after this many optimizer steps (smoke tests)",
    "num_workers": "data-parallel Ray Train workers",
    "runner": "local: train in this process, one worker, no cluster (seconds to start); ray: Ray Train; auto: local "
    "for one worker when no cluster is named (no RAY_ADDRESS) and checkpoints stay on a local disk, else ray",
    "min_workers": "elastic: start with any number of workers between this and --num-workers",
    "cpus_per_worker": "CPUs each worker reserves (torch threads)",
    "use_gpu": "one GPU per worker, bf16 autocast",
    "seed": "seed for the head's initialisation, sampling and dropout",
    "resume": "continue this output's run from its latest checkpoint",
    "overwrite": "discard an earlier run of this output",
    "skip_invalid": "QA: skip invalid questions (counted, scored 0) instead of failing",
    "storage_path": "checkpoint storage: local dir, shared FS or s3:// (default OUTPUT/ray_runs)",
    "max_failures": "worker failures to recover from (resume from the last checkpoint)",
    "calibrate": "NER: fit the exported model's score calibrator on the validation split, so an entity's score is "
    "the probability that it is exactly right (default on; `nlpbatch calibrate` refits it)",
    "keep_checkpoints": "epoch checkpoints (model + optimizer, for --resume) kept in the run's storage; 0: deleted "
    "once the final model is exported",
    "log_every_steps": "record the running loss every N steps (metrics.json loss_curve)",
    "quiet": "no progress lines (a bar on a terminal, a line every 20 s otherwise), only the summaries",
    "mlflow_tracking_uri": "log params, per-epoch metrics, training.png and the model to this MLflow tracking URI "
    "(http(s)://, databricks, or a local folder); needs pip install 'nlpbatch[mlflow]'",
    "mlflow_experiment": "MLflow experiment name",
    "run_name": "the run's folder under the storage path (default: task, output name and a hash of its path)",
}
ANNOTATE_HELP = {
    "model": "fine-tuned model dir (or HF model id)",
    "input": "local path, glob or s3://bucket/prefix of .parquet / .jsonl / .jsonl.gz / .csv / .tsv files",
    "output": "local dir or s3:// prefix: data/, rejects/ and a _SUCCESS.json manifest",
    "input_format": "parquet, jsonl or csv (.tsv: tab-separated; default: from the file extensions)",
    "follow_symlinks": "enter symlinked folders and files of the input (each real file is read once); by default "
    "they are skipped",
    "output_format": "parquet or jsonl; delta (OUTPUT is a Delta Lake table, one commit per run, rejects in "
    "OUTPUT/_rejects: Spark, Trino, DuckDB read it atomically; pip install 'nlpbatch[delta]'); NER also spacy "
    "(spaCy/Prodigy span JSONL) or label-studio (tasks with predictions, to review in Label Studio): both train "
    "again with --train",
    "id_column": "input column with the document id",
    "text_column": "input column with the text",
    "keep_columns": "input columns copied into every output row, comma-separated (default: the text column; '' for "
    "none); strings as they are, other values as JSON text",
    "question_column": "QA: input column with each row's question",
    "questions": "QA: file with one question per line, asked of every document",
    "text_pair_column": "classify: input column with the second text of a sentence pair (default: the column the "
    "model was trained with; a pair model needs its pairs)",
    "word_unit": "NER: the words entities are made of, as the model was trained (default: its card's): whitespace "
    "(the data's tokens, so 'AL-AIN' and 'U.S.' stay whole; CJK characters apart) or pretokenized (punctuation "
    "apart, for models trained on span exports)",
    "aggregation": "NER: first | max (whole words, a word's label from its first / most confident sub-token) | simple "
    "(sub-word tokens, can cut words), as the transformers pipeline",
    "max_length": "window length in tokens (default 512 NER, 384 QA)",
    "stride": "tokens shared by neighbouring windows",
    "max_chars": "longer texts are rejected, not truncated",
    "batch_tokens": "tokens per forward pass: packed windows, or padded length buckets (default 65536 with "
    "--num-gpus, else one window: small batches are faster on CPUs)",
    "packing": "on: a forward pass is its windows packed into one sequence, nothing padded (varlen attention on "
    "CUDA, BERT-type models); off: padded length buckets; auto: on for GPU actors when torch has varlen attention",
    "batch_rows": "documents per inference call (default: up to 256 on CPU / 2048 with --num-gpus, at least 8 "
    "calls per actor)",
    **PREDICTION_HELP,
    "min_actors": "inference actors kept running; below --max-actors the pool grows with the backlog (default: the "
    "pool's full size from the start)",
    "max_actors": "inference actors at most (the pool grows with the backlog); default: the cluster's CPUs less "
    "one for reads (or its GPUs / --num-gpus); the local runner's threads (default: one per core)",
    "layout": "fused: parse, tokenize, predict, decode inside each inference actor; split: CPU tasks around the "
    "actors; auto: fused on CPU, split with --num-gpus",
    "runner": "ray: stream through a Ray cluster (joined or started); local: in this process, one engine thread "
    "per core (--max-actors threads), no cluster; auto: local on CPU when no cluster is named (no RAY_ADDRESS) on a "
    "machine of up to 16 cores (any input) or for up to 1,000 rows, else ray",
    "num_gpus": "GPUs per inference actor (> 0: bf16 on GPU)",
    "cpus_per_actor": "CPUs per inference actor (its engine threads)",
    "backend": "inference engine: torch, onnx (int8 if exported, else fp32), onnx-fp32, onnx-int8, openvino-int8; "
    "auto: on CPU the fastest file `nlpbatch export` wrote (openvino-int8, onnx-int8, onnx-fp32), else torch",
    "s3_endpoint": "S3-compatible endpoint URL, e.g. http://127.0.0.1:9000 (default $AWS_ENDPOINT_URL)",
    "run_id": "run id for file names and provenance (default: UTC time + random suffix)",
    "rows_per_file": "rows per output file (few large files suit object stores)",
    "lease_ttl_seconds": "a crashed run's lease on OUTPUT expires after this many seconds",
    "break_lease": "take over OUTPUT although another run's lease looks alive (that run must be dead)",
    "overwrite": "replace a published output of another task or input (or one whose manifest cannot be followed)",
    "retention_hours": "files of a replaced output stay this long for readers of its manifest, then the next run "
    "that publishes removes them (0: at once)",
    "csv_max_value_lines": "CSV: a quoted value spanning more lines is a reject naming its first line (an unclosed "
    "quote would fold the rest of the file into one row)",
    "quiet": "no progress (a bar on a terminal, a line every 30 s otherwise), only the summary line",
    "max_reject_rate": "fail the run (exit 1, after publishing the rejects with their reasons) when more than this "
    "share of the rows is rejected; 1: never",
    "allow_empty": "an input without rows (or nightly: a folder without dt= partitions) is fine, not an error",
}
ALIASES = {"stride": ("--doc-stride",), "doc_stride": ("--stride",)}  # one window overlap, two names in the wild
CHOICES = {
    "input_format": ["parquet", "jsonl", "csv"],
    "output_format": list(OUTPUT_FORMATS),
    "aggregation": ["simple", "first", "max"],
    "layout": ["auto", "fused", "split"],
    "runner": ["auto", "ray", "local"],
    "packing": ["auto", "on", "off"],
    "backend": list(BACKENDS),
    "subtoken_labels": ["all", "first"],
    "tag_scheme": ["auto", "iob2", "iob1", "bioes", "io"],
    "data_format": list(DATA_FORMATS),
    "span_alignment": ["expand", "contract", "strict"],
    "word_unit": list(WORD_UNITS),
    "annotations": list(POLICIES),
    "overlaps": list(OVERLAPS),
    "window_reduce": ["mean", "first", "max"],
}


def _other_task(help_text: str, task: str | None) -> bool:
    """Whether a flag belongs to another built-in task than `task` (its help starts with that task's name: "NER:",
    "QA (...)", "classify:"): `train ner --help` lists what NER uses."""
    first = re.split(r"[\s:,(]", help_text, maxsplit=1)[0].lower()
    names = task_names()
    return task in names and first in names and first != task


def _add_config_flags(parser: argparse.ArgumentParser, cls: type = TrainConfig, task: str | None = None) -> None:
    """One flag per config field, so YAML keys and flags never drift apart; every flag documented with its
    default, choices and whether it is required; with `task`, another task's flags are accepted but not listed."""
    helps = TRAIN_HELP if cls is TrainConfig else ANNOTATE_HELP
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name == "task":
            continue
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        kind = (
            next(a for a in typing.get_args(hint) if a is not type(None)) if isinstance(hint, types.UnionType) else hint
        )
        if field.default is dataclasses.MISSING:
            suffix = " (required, here or in --config)"
        elif field.default is None or kind is bool:
            suffix = ""
        else:
            suffix = f" (default {field.default})"
        help_text = helps[field.name] + suffix
        if _other_task(help_text, task):
            help_text = argparse.SUPPRESS
        flags = [flag, *ALIASES.get(field.name, ())]
        if kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            choices = CHOICES.get(field.name)
            parser.add_argument(*flags, type=kind, default=None, help=help_text, choices=choices, metavar=None)


def _task(name: str) -> str:
    """A built-in task or the module of one's own (`my_pkg.my_task`, which defines TASK)."""
    if not is_task(name):
        import difflib

        close = difflib.get_close_matches(name, task_names(), n=1)
        hint = f": did you mean {close[0]}?" if close else ""
        raise argparse.ArgumentTypeError(
            f"{name!r} is not one of {', '.join(task_names())}, nor a module defining TASK{hint}"
        )
    return name


TASK_ARG = {
    "type": _task,
    "metavar": "{" + ",".join(task_names()) + "}|MODULE",
    "help": "the task: " + ", ".join(task_names()) + ", or the module of a task of your own",
}
# commands with --config: the task may come from the YAML file's `task:` instead
OPTIONAL_TASK_ARG = {**TASK_ARG, "nargs": "?", "help": TASK_ARG["help"] + " (default: --config's task:)"}


class Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for mistyped flags (abbreviations are refused: `--epoch` is not `--epochs`)."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            parsers = list(_all_parsers(self))
            command = next((a for a in getattr(self, "argv", sys.argv[1:]) if not a.startswith("-")), None)
            mine = [p for p in parsers if p.prog.split()[-1:] == [command]] or parsers  # the command's own flags
            known = {o for p in mine for o in p._option_string_actions}
            hints = []
            for arg in message.split(":", 1)[1].split():
                close = _closest(arg.split("=")[0], known) if arg.startswith("--") else []
                if close:
                    hints.append(f"{arg}: did you mean {' or '.join(close)}?")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        # one line and where the full usage is, not the 40 lines of usage argparse prints
        self.exit(2, f"{self.prog}: error: {message}\n({self.prog} --help lists the options)\n")


def _closest(flag: str, known: set[str]) -> list[str]:
    """Flags a mistyped one most likely meant: those whose words its words begin, in order (`--max-ex`:
    `--max-train-examples`, `--max-eval-examples`), else the closest spelling."""
    import difflib
    import re

    words = flag.strip("-").split("-")

    def begins(option: str) -> bool:
        pattern = r"-(?:[^-]+-)*?".join(re.escape(w) + r"[^-]*" for w in words)
        return re.fullmatch(r"--" + pattern, option) is not None

    prefixed = sorted(o for o in known if o.startswith("--") and begins(o))
    return prefixed[:3] or difflib.get_close_matches(flag, known, n=1)


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def build_parser(task: str | None = None) -> argparse.ArgumentParser:
    """The CLI; `task` (when the command line names one) keeps other tasks' flags out of `--help`."""
    parser = Parser(
        prog="nlpbatch",
        description="Fine-tune (Ray Train) and annotate corpora (Ray Data) with Hugging Face models: NER, extractive "
        "QA, text and sentence-pair classification.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", allow_abbrev=False, help="fine-tune with Ray Train (data-parallel, DDP)")
    train.add_argument("task", **OPTIONAL_TASK_ARG)
    train.add_argument("--config", help="YAML file with the same keys as the flags (flags win)")
    _add_config_flags(train, TrainConfig, task)

    ann = sub.add_parser(
        "annotate", allow_abbrev=False, help="stream a corpus through a model with Ray Data; spans to storage"
    )
    ann.add_argument("task", **OPTIONAL_TASK_ARG)
    ann.add_argument("--config", help="YAML file with the same keys as the flags (flags win)")
    ann.add_argument(
        "--text",
        action="append",
        help="annotate this text in this process (no cluster; repeatable) and print one JSON line per text; "
        "`--input -` does the same for JSONL lines on stdin",
    )
    ann.add_argument("--question", help="QA with --text: the question to ask of every text")
    ann.add_argument(
        "--text-pair",
        action="append",
        help="classify with --text, a sentence-pair model: the second text of each --text (repeat it as --text)",
    )
    _add_config_flags(ann, AnnotateConfig, task)

    night = sub.add_parser(
        "nightly",
        allow_abbrev=False,
        help="annotate complete dt=YYYY-MM-DD partitions whose output is missing or stale",
    )
    night.add_argument("task", **OPTIONAL_TASK_ARG)
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
    night.add_argument(
        "--model-change",
        choices=list(MODEL_CHANGES),
        default="redo",
        help="a partition written by other weights than --model's now (a promotion, a retrain): redo it (newest "
        "first, after the new partitions) or keep it (default redo)",
    )
    _add_config_flags(night, AnnotateConfig, task)

    corpus = sub.add_parser(
        "corpus", allow_abbrev=False, help="build a benchmark corpus from the shared CoNLL/SQuAD data"
    )
    corpus.add_argument("--rows", type=int, required=True, help="documents to write (required)")
    corpus.add_argument("--output", required=True, help="local dir or s3:// prefix (required)")
    corpus.add_argument("--data-dir", help=f"data root with conll2003/ and squad/ (default ${DATA_ENV})")
    corpus.add_argument("--format", choices=["parquet", "jsonl"], default="parquet", help="(default parquet)")
    corpus.add_argument("--files", type=int, default=1, help="split the rows over this many files (default 1)")
    corpus.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    corpus.add_argument(
        "--kind",
        choices=["default", "short", "mixed", "long"],
        default="default",
        help="length mix: default (snippets, paragraphs, some past one window), short (one sentence, ~20 tokens), "
        "mixed (mostly sentences, a few articles, ~50 tokens), long (articles of 2-6 paragraphs) (default default)",
    )
    corpus.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (default $AWS_ENDPOINT_URL)")

    ev = sub.add_parser(
        "evaluate", allow_abbrev=False, help="score a saved model on a CoNLL/SQuAD file, data dir or hub dataset"
    )
    ev.add_argument("task", **TASK_ARG)
    ev.add_argument("--model", required=True, help="fine-tuned model dir (or hub id)")
    ev.add_argument("--data", help=f"file, data dir or hub dataset name (default ${DATA_ENV}, else the hub)")
    ev.add_argument("--split", default="validation", help="split to read from a data dir or hub dataset")
    ev.add_argument("--num-workers", type=int, default=0, help="0: this process; N: N Ray Train workers")
    ev.add_argument("--max-examples", type=int, help="score only the first N examples")
    ev.add_argument("--max-length", type=int, help="window length (default: what the model was trained with)")
    ev.add_argument(
        "--doc-stride", "--stride", type=int, help="window overlap (default: what the model was trained with)"
    )
    ev.add_argument("--null-threshold", type=float, help=TRAIN_HELP["null_threshold"])
    ev.add_argument("--window-reduce", choices=CHOICES["window_reduce"], help=TRAIN_HELP["window_reduce"])
    ev.add_argument("--label-thresholds", help=TRAIN_HELP["label_thresholds"])
    ev.add_argument("--eval-batch-size", type=int, help="batch per worker (default 64)")
    ev.add_argument("--use-gpu", action="store_true", default=None, help="score on the GPU (bf16 autocast)")
    ev.add_argument("--skip-invalid", action="store_true", help="QA: skip invalid questions (scored 0)")
    for column in ("text_column", "text_pair_column", "label_column"):
        ev.add_argument("--" + column.replace("_", "-"), help=TRAIN_HELP[column] + " (default: as trained)")
    for key in READER_KEYS:
        ev.add_argument(
            "--" + key.replace("_", "-"),
            type=int if key == "tag_column" else None,
            choices=CHOICES.get(key),
            help=TRAIN_HELP[key],
        )
    ev.add_argument("--quiet", action="store_true", default=None, help="no progress bar or lines, only the scores")
    ev.add_argument(
        "--backend",
        choices=list(BACKENDS[1:]),
        default="torch",
        help="inference engine to score with (onnx*: the files `nlpbatch export` wrote)",
    )

    exp = sub.add_parser(
        "export", allow_abbrev=False, help="write ONNX Runtime files (fp32, optionally int8) beside a fine-tuned model"
    )
    exp.add_argument("--model", required=True, help="fine-tuned model dir")
    exp.add_argument(
        "--quantize",
        choices=["int8", "none"],
        default="int8",
        help="also write the int8 models (default int8; annotate then uses the fastest on CPU): ONNX Runtime dynamic "
        "int8 and, with OpenVINO installed and calibration data at hand, OpenVINO static int8",
    )
    exp.add_argument(
        "--calibration-data",
        help="labelled data (as for train) whose first examples calibrate the OpenVINO int8 model "
        "(default: the training data recorded in MODEL/metrics.json, when it is readable here)",
    )
    exp.add_argument(
        "--calibration-examples",
        type=int,
        default=CALIBRATION_EXAMPLES,
        help=f"how many examples calibrate the OpenVINO int8 model (default {CALIBRATION_EXAMPLES}; fewer: faster)",
    )
    prom = sub.add_parser(
        "promote",
        allow_abbrev=False,
        help="make a model the registry's current version if it scores no worse than the current one on gold data",
    )
    prom.add_argument("--registry", required=True, help="the registry: a local folder or s3:// prefix (created)")
    which = prom.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a candidate model dir (a train run's output), registered if it passes")
    which.add_argument("--version", type=int, help="a registered version to point back to (a rollback), gated alike")
    prom.add_argument(
        "--gold", action="append", default=[], help="labelled data both models are scored on (repeatable)"
    )
    prom.add_argument(
        "--max-drop",
        type=float,
        default=0.0,
        help="how far the candidate's headline metric (NER entity F1, QA F1, classify micro F1) may fall below the "
        "current's, as a share (0.01: one point of F1) on every gold file (default 0)",
    )
    prom.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default="auto",
        help="the engine both are scored with, as annotate runs them (default auto)",
    )
    prom.add_argument("--max-examples", type=int, help="score only the first N examples of each gold file")
    prom.add_argument("--force", action="store_true", help="skip the gate (recorded in the pointer's history)")
    prom.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (default $AWS_ENDPOINT_URL)")
    cal = sub.add_parser(
        "calibrate",
        allow_abbrev=False,
        help="fit the model's score calibrator on labelled data (NER: a score becomes P(entity exactly right))",
    )
    cal.add_argument("--model", required=True, help="a fine-tuned model dir (its card gets the calibrator)")
    cal.add_argument("--data", required=True, help="labelled validation data, as for evaluate (not training data)")
    cal.add_argument("--max-examples", type=int, help="use only the first N examples")
    cal.add_argument(
        "--method", choices=list(CALIBRATION_METHODS), default="platt", help="(default platt: measured best held out)"
    )
    cal.add_argument(
        "--target-precision",
        type=float,
        help="also pick the lowest calibrated score whose entities reach this precision on the data (e.g. 0.9); "
        "annotate then writes only entities at or above it",
    )
    rev = sub.add_parser(
        "review",
        allow_abbrev=False,
        help="write the documents most worth a reviewer's minute as labelling-tool tasks, predictions pre-filled",
    )
    rev.add_argument(
        "--input", action="append", required=True, help="an annotate output (repeatable: nightly dt= ones)"
    )
    rev.add_argument("--n", type=int, default=200, help="documents to queue (default 200)")
    rev.add_argument("--output", required=True, help="the queue file (.json for Label Studio, .jsonl for spaCy)")
    rev.add_argument(
        "--strategy",
        choices=list(REVIEW_STRATEGIES),
        default="least-sure",
        help="least-sure: lowest entity score first; expected-errors: most expected wrong entities per 100 words "
        "(default least-sure)",
    )
    rev.add_argument(
        "--format", choices=list(REVIEW_FORMATS), help="(default: spacy for a .jsonl --output, else label-studio)"
    )
    rev.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (default $AWS_ENDPOINT_URL)")
    mods = sub.add_parser("models", allow_abbrev=False, help="list a registry's versions, or show one")
    mods.add_argument("action", choices=["list", "show"])
    mods.add_argument("registry", help="REGISTRY (list) or REGISTRY[@N] (show: default the current version)")
    mods.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (default $AWS_ENDPOINT_URL)")
    show = sub.add_parser(
        "show", allow_abbrev=False, help="print annotated rows with their spans highlighted; --html for a browser"
    )
    show.add_argument("output", help="an annotate output (local dir or s3:// prefix with a _SUCCESS.json)")
    show.add_argument("--n", type=int, default=10, help="rows to show (default 10)")
    show.add_argument("--html", help="also write a self-contained HTML page (displaCy style) to this file")
    show.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (default $AWS_ENDPOINT_URL)")
    ev.add_argument(
        "--predictions",
        help="write predictions here: NER as CoNLL lines `word gold pred` (conlleval's input), QA as {id: answer}",
    )
    for command in sub.choices.values():
        command.add_argument(
            "--verbose", action="store_true", help="print Ray's own log lines too (default: its session logs only)"
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
    if args.text is not None or overrides["input"] == "-":
        return annotate_here(args, overrides)
    manifest = run_annotation(load_annotate_config(args.config, task=args.task, **overrides))
    summary = {k: manifest[k] for k in ("run_id", "rows_in", "rows_out", "rows_rejected", "tokens")}
    print(json.dumps({**summary, "timings": manifest["timings"]}, indent=2))
    return 0


def annotate_here(args: argparse.Namespace, overrides: dict) -> int:
    """`--text` / `--input -`: the annotate stages in this process, no cluster (seconds plus the model's load), one
    JSON line per text or input line on stdout, in order; a row that cannot be annotated carries `reject`."""
    from nlpbatch.api import Model
    from nlpbatch.models import local_model_path

    if overrides["output"] not in (None, "-"):
        raise ConfigError(
            "--text / --input - print their rows: drop --output, or annotate a file or folder (--input PATH) to "
            "publish an output"
        )
    if args.text is not None and overrides["input"] not in (None, "-"):
        raise ConfigError("--text and --input: choose one")
    cfg = load_annotate_config(args.config, task=args.task, **{**overrides, "input": "-", "output": "-"})
    model = Model(cfg, local_model_path(cfg.model, cfg.s3_endpoint), own_columns=args.text is None, command="annotate")
    if args.text is not None:
        if model.task.pair and args.question is None and cfg.questions is None:
            raise ConfigError(f"{args.task} with --text needs --question (or --questions FILE)")
        if model.pair_column and not args.text_pair:
            raise ConfigError(
                f"{cfg.model} classifies sentence pairs: give each --text its --text-pair (or --input - with "
                f"{model.pair_column!r} in each line)"
            )
        if args.text_pair and len(args.text_pair) != len(args.text):
            raise ConfigError(f"{len(args.text)} --text but {len(args.text_pair)} --text-pair: one each")
        questions = [args.question] * len(args.text) if args.question is not None else args.text_pair
        rows = model.annotate(args.text, questions)
    else:
        rows = model.annotate_lines([line for line in sys.stdin.buffer.read().split(b"\n") if line.strip()])
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from nlpbatch.nightly import run_nightly

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(AnnotateConfig) if f.name != "task"}
    base = load_annotate_config(args.config, task=args.task, **overrides)
    summary = run_nightly(
        base, args.date, args.since, args.until, args.require_input_marker, args.settle_hours, None, args.model_change
    )
    print(json.dumps(summary, indent=2))
    if not summary["dates"] and not base.allow_empty and not args.date:
        print(
            f"nlpbatch: error: {base.input}: no dt=YYYY-MM-DD partitions (or none in --since/--until); check --input, "
            "or pass --allow-empty if that is fine",
            file=sys.stderr,
        )
        return 1
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
    paths = write_corpus(
        data_dir, args.rows, args.output, args.seed, args.format, args.files, args.s3_endpoint, args.kind
    )
    print(json.dumps({"rows": args.rows, "files": paths}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nlpbatch.evaluation import eval_config, evaluate_model

    cfg = eval_config(
        args.task,
        args.model,
        max_length=args.max_length,
        doc_stride=args.doc_stride,
        null_threshold=args.null_threshold,
        window_reduce=args.window_reduce,
        label_thresholds=args.label_thresholds,
        eval_batch_size=args.eval_batch_size,
        use_gpu=args.use_gpu,
        quiet=args.quiet,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
        **{k: getattr(args, k) for k in READER_KEYS},
    )
    data = args.data or os.environ.get(DATA_ENV)
    metrics, predictions = evaluate_model(
        cfg, data, args.split, args.num_workers, args.max_examples, args.skip_invalid, args.backend
    )
    if args.predictions:
        from nlpbatch.tasks import get_task

        get_task(args.task).write_predictions(predictions, args.predictions)
    print(json.dumps(metrics, indent=2))
    return 0


USER_ERRORS = (ConfigError, DataError, StorageError, FileNotFoundError, ModelCardError)


STOPPED = {
    "annotate": "nothing of this run was published; the output is as it was",
    "nightly": "the partition being annotated keeps its previous output; the next run redoes it",
    "train": "the checkpoints of finished epochs are kept: run the same command with --resume to continue",
}


def run_job(work, command: str = "") -> int:
    """Run `work()`; a problem the user can fix (config, data, storage, a refused or unreconciled run) is one
    `nlpbatch: error:` line and exit status 2, never a traceback; a failed run (RunFailed) exits 1; Ctrl-C and
    SIGTERM stop it with one line saying what was kept (exit 130 / 143)."""
    import signal

    handle_sigterm()
    try:
        return work()
    except RunFailed as err:
        print(f"nlpbatch: error: {err}", file=sys.stderr)
        return 1
    except USER_ERRORS as err:
        print(f"nlpbatch: error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit) as err:
        # Ray's own SIGTERM handler (live while ray.init runs) exits with the signal's number
        if isinstance(err, SystemExit) and err.code != signal.SIGTERM:
            raise
        term = not isinstance(err, KeyboardInterrupt) or isinstance(err, Stopped)
        # an annotation run says what it left published (commit.Commit.outcome); else what the command keeps
        kept = getattr(err, "outcome", None) or STOPPED.get(command, "nothing was left half-written")
        print(f"nlpbatch: stopped by {'SIGTERM' if term else 'Ctrl-C'}: {kept}", file=sys.stderr)
        return 143 if term else 130


def cmd_export(args: argparse.Namespace) -> int:
    from nlpbatch.api import export
    from nlpbatch.models import resolve_model

    path = resolve_model(args.model)
    if not Path(path).is_dir():
        raise ConfigError(f"--model {args.model}: export needs a local model dir")
    if args.calibration_examples < 1:
        raise ConfigError(f"--calibration-examples must be >= 1, got {args.calibration_examples}")
    quantize = None if args.quantize == "none" else args.quantize
    written = export(path, quantize, args.calibration_data, args.calibration_examples)
    print(json.dumps({"model": path, "files": written}, indent=2))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from nlpbatch.registry import promote, version_name

    result = promote(
        args.registry,
        args.model,
        args.version,
        args.gold,
        args.max_drop,
        args.backend,
        args.force,
        args.max_examples,
        args.s3_endpoint,
    )
    for path, rows in result["table"].items():
        gate = result["gate"][path]
        print(f"[nlpbatch] promote: {path}", file=sys.stderr)
        print(f"  {'metric':<32} {'current':>10} {'candidate':>10}", file=sys.stderr)
        for name, (current, candidate) in rows.items():
            mark = " <- gate" if name == gate["metric"] else ""
            shown = "-" if candidate is None else f"{candidate:.4f}"
            print(f"  {name:<32} {current:>10.4f} {shown:>10}{mark}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    previous = version_name(result["previous"]) if result["previous"] is not None else "none"
    if not result["promoted"]:
        failed = "; ".join(
            f"{path}: {g['metric']} {g['candidate']:.4f} vs {g['current']:.4f}"
            for path, g in result["gate"].items()
            if not g["passed"]
        )
        print(
            f"nlpbatch: error: not promoted: the candidate scores below the current version ({previous}) by more than "
            f"--max-drop {args.max_drop} ({failed}); the registry is unchanged",
            file=sys.stderr,
        )
        return 1
    forced = " (forced: no gate)" if args.force else ""
    print(f"[nlpbatch] promote: {version_name(result['version'])} is current (was {previous}){forced}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from nlpbatch.evaluation import calibrate_model

    if args.target_precision is not None and not 0 < args.target_precision < 1:
        raise ConfigError(f"--target-precision must be between 0 and 1, got {args.target_precision}")
    report = calibrate_model(
        args.model,
        args.data,
        max_examples=args.max_examples,
        method=args.method,
        target_precision=args.target_precision,
    )
    print(json.dumps(report, indent=2))
    if report.get("target_precision", {"threshold": 0})["threshold"] is None:
        print(
            f"[nlpbatch] calibrate: no score threshold reaches precision {args.target_precision} on this data; "
            "annotate keeps every entity (a better model, or a lower target)",
            file=sys.stderr,
        )
    print(
        f"[nlpbatch] calibrate: {report['predictions']} predictions, expected calibration error "
        f"{report['ece_before']:.3f} -> {report['ece_cross_fitted']:.3f} (cross-fitted); kept in {report['card']}",
        file=sys.stderr,
    )
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from nlpbatch.review import build_review_queue

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    fmt = args.format or ("spacy" if args.output.endswith(".jsonl") else "label-studio")
    summary = build_review_queue(args.input, args.n, args.output, args.strategy, fmt, args.s3_endpoint)
    print(json.dumps(summary, indent=2))
    print(
        f"[nlpbatch] review: {summary['queued']} of {summary['candidates']} documents queued in {args.output} "
        f"({summary['skipped_before']} queued before, skipped); import it into your labelling tool, then train on "
        "its export (--train FILE)",
        file=sys.stderr,
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from nlpbatch.registry import Registry, split_ref, version_name

    root, number = split_ref(args.registry)
    reg = Registry(root, args.s3_endpoint)
    pointer = reg.pointer().body or {}
    if args.action == "list":
        versions = reg.versions()
        for n, record in versions.items():
            mark = "*" if n == pointer.get("version") else " "
            print(f"{mark} {version_name(n)}  {record['registered_at']}  {record.get('task')}  {record['source']}")
        if not versions:
            print(f"{root}: no versions yet (nlpbatch promote --registry {root} --model RUN_DIR)", file=sys.stderr)
        return 0
    number = pointer.get("version") if number is None else number
    record = reg.versions().get(number) if number is not None else None
    if record is None:
        raise ConfigError(f"{args.registry}: no such version (nlpbatch models list {root})")
    print(json.dumps({**record, "current": number == pointer.get("version"), "pointer": pointer}, indent=2))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from nlpbatch.show import html_page, print_rows, read_rows

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    manifest, rows = read_rows(args.output, args.n, args.s3_endpoint)
    print_rows(manifest, rows)
    labels = manifest.get("labels") or {}
    if labels:  # what the run predicted, per label, and (a nightly partition) how that moved against the nights before
        shown = ", ".join(
            f"{k} {v['count']} ({v['share']:.1%}, mean score {v['mean_score']:.2f})" for k, v in labels.items()
        )
        print(f"[nlpbatch] predicted: {shown}", file=sys.stderr)
    night = re.search(r"^(.*)/dt=(\d{4}-\d{2}-\d{2})/?$", args.output)
    if night and labels:
        from nlpbatch.nightly import describe, night_drift

        flags = night_drift(night.group(1), night.group(2), args.s3_endpoint, manifest)
        for flag in flags:
            print(f"[nlpbatch] drift: {describe(flag)}", file=sys.stderr)
        if not flags:
            print("[nlpbatch] drift: none against the nights before (or no nights before)", file=sys.stderr)
    if args.html:
        Path(args.html).write_text(html_page(manifest, rows), encoding="utf-8")
        print(f"[nlpbatch] wrote {args.html}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    named = argv[1] if len(argv) > 1 and argv[1] in task_names() and {"-h", "--help"} & set(argv) else None
    parser = build_parser(named)
    parser.argv = argv  # for the error's "did you mean": the command's own flags
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ["NLPBATCH_VERBOSE"] = "1"  # read where Ray starts (raycluster.ensure_ray)
    command = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "annotate": cmd_annotate,
        "corpus": cmd_corpus,
        "nightly": cmd_nightly,
        "export": cmd_export,
        "promote": cmd_promote,
        "models": cmd_models,
        "calibrate": cmd_calibrate,
        "review": cmd_review,
        "show": cmd_show,
    }[args.command]
    return run_job(lambda: command(args), args.command)
