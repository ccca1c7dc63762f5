"""Job configuration: frozen dataclasses from YAML plus CLI overrides, validated before any work starts."""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlpbatch.data.exports import OUTPUT_FORMATS
from nlpbatch.data.tools import OVERLAPS, POLICIES, SHAPES
from nlpbatch.engines import BACKENDS
from nlpbatch.tasks import get_task, is_task, task_names

# `--runner auto` with no cluster named: Ray would start a cluster of this machine alone, and this process, one
# engine thread per core, beat it at every input size measured on 2 cores (6 to 10,000 documents,
# benchmarks/results/annotate_local_cpu.json). Up to LOCAL_CORES cores: the stages that hold the GIL (parse, decode,
# Arrow glue: about 3% of the model step, measured) stay under half a core; past it, and for any input above
# LOCAL_ROWS, the processes of a Ray cluster. Up to LOCAL_ROWS rows, start-up dominates on any machine.
LOCAL_ROWS = 1000
LOCAL_CORES = 16
# how the NER readers read a file (TrainConfig fields, evaluate's flags)
READER_KEYS = ("data_format", "tag_scheme", "span_alignment", "annotations", "overlaps", "text_key")
READER_KEYS += ("tokens_column", "tags_column", "tag_column")
DATA_FORMATS = ("auto", "conll", "tokens", *SHAPES)  # NER training files
WORD_UNITS = ("whitespace", "pretokenized")  # NER: the words annotate groups tokens into (AnnotateConfig.word_unit)


class ConfigError(ValueError):
    """Invalid configuration; the message lists every offending key."""


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings. Defaults are the recipe tuned for the bundled all-MiniLM-L6-v2 (see README):
    small models want a larger learning rate than bert-base's 2e-5."""

    task: str
    output: str
    data_dir: str | None = None  # None: the Hugging Face hub dataset
    train: str | None = None  # a training file of one's own (beside or instead of data_dir's layout)
    validation: str | None = None  # its validation file
    labels: str | None = None  # NER: the label list (comma list of tags or types, or a file); None: from the data
    tag_scheme: str = "auto"  # NER column files: auto | iob2 | iob1 | bioes | io, converted to IOB2 on load
    span_alignment: str = "expand"  # NER span files: a span boundary inside a word: expand | contract | strict
    annotations: str = "auto"  # NER span files, a task with several annotations: auto (ground truth, else the
    # most recent) | all (one example each) | agreed (the spans every annotator marked)
    overlaps: str = "longest"  # NER span files: overlapping or nested spans: longest | first | error
    text_key: str | None = None  # NER span files: the field with the text (default: text, or the one string field)
    data_format: str = "auto"  # NER files: auto (from extension and content) | conll | tokens | a tool's shape
    tokens_column: str | None = None  # NER token records / hub datasets: the tokens (default tokens)
    tags_column: str | None = None  # NER: the tags (default ner_tags, else tags)
    tag_column: int | None = None  # NER column files: the tag's column, 1-based (default: the last)
    text_column: str | None = None  # classify: the text (default: text, else sentence)
    text_pair_column: str | None = None  # classify: the second text of a pair (MRPC: "#2 String")
    label_column: str = "label"  # classify: the label
    model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    epochs: int = 5
    learning_rate: float = 2e-4
    # global: split exactly across workers, so the recipe does not change with the worker count; None: 16, or 8 for
    # a run that would take under 1,000 steps at 16 (`short_run_batch_size`)
    batch_size: int | None = None
    batch_tokens: int | None = None  # set: a step is as many length-grouped examples as fit this many padded tokens
    eval_batch_size: int = 64  # per worker
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    subtoken_labels: str = "first"  # NER: only a word's first subtoken is trained; "all": the rest on its I- tag
    max_length: int | None = None  # None: 512 for NER, 384 for QA (resolved on construction)
    doc_stride: int = 128  # QA only
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float | None = None  # QA: "no answer" when the null score beats the best span by more than this
    window_reduce: str = "mean"  # classify: a long text's label from its windows' mean | first | max probabilities
    multi_label: bool = False  # classify: a TSV/CSV label cell is a comma list (label lists in JSONL/Parquet: always)
    label_thresholds: str | None = None  # classify multi-label: "0.4" or "a=0.3,b=0.6"; None: tuned on validation
    group_by_length: bool = True
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs); None: full epochs
    num_workers: int = 1
    min_workers: int | None = None  # set: elastic, start with what the cluster gives between min and num_workers
    runner: str = "auto"  # ray | local (this process, one worker, no cluster) | auto: local_training() decides
    cpus_per_worker: int = 1
    use_gpu: bool = False
    seed: int = 42
    resume: bool = False
    overwrite: bool = False
    skip_invalid: bool = False
    storage_path: str | None = None  # None: OUTPUT/ray_runs; use s3:// or a shared FS on multi-node clusters
    max_failures: int = 0
    keep_checkpoints: int = 1  # epoch checkpoints kept under storage_path; 0: none once the model is exported
    calibrate: bool = True  # fit the exported model's score calibrator on validation (tasks that have one: NER)
    log_every_steps: int = 50
    run_name: str | None = None  # None: derived from the task and the output (see trainer.run_identity)
    quiet: bool = False  # no progress lines, only each stage's summary (cron)
    mlflow_tracking_uri: str | None = None  # set: log the run to MLflow (needs the [mlflow] extra)
    mlflow_experiment: str = "nlpbatch"

    def __post_init__(self) -> None:
        # The effective window is part of the recipe: store it, so configs, checkpoints and JSON all say it.
        if self.max_length is None:
            object.__setattr__(self, "max_length", _default_window(self.task))

    def data_options(self) -> dict:
        """How the task's reader reads a file (formats and column names), for training and evaluation alike."""
        keys = READER_KEYS + ("text_column", "text_pair_column", "label_column", "multi_label")
        return {k: getattr(self, k) for k in keys}

    def local_training(self) -> bool:
        """Train in this process, without Ray? `auto`: one worker, no cluster in use (none joined by this process,
        no RAY_ADDRESS), checkpoints on a local disk. Ray's start-up is most of a short run on a small machine
        (benchmarks/results/train_local_cpu.json); the loop, its checkpoints and --resume are the same."""
        if self.runner != "auto":
            return self.runner == "local"
        remote = (self.storage_path or "").startswith(("s3://", "gs://", "gcs://", "hdfs://", "abfs://"))
        if self.num_workers != 1 or self.min_workers or remote or os.environ.get("RAY_ADDRESS"):
            return False
        import ray

        return not ray.is_initialized()

    @property
    def seq_length(self) -> int:
        return self.max_length

    def validate(self) -> None:
        errors = _shared_errors(self)
        if is_task(self.task):
            errors += get_task(self.task).check_train(self)
        for key in (
            "epochs",
            "eval_batch_size",
            "num_workers",
            "cpus_per_worker",
            "n_best",
            "max_answer_length",
            "log_every_steps",
        ):
            if getattr(self, key) < 1:
                errors.append(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.batch_size is not None and self.batch_size < 1:
            errors.append(f"batch_size: must be >= 1, got {self.batch_size}")
        for key in ("max_train_examples", "max_eval_examples", "max_steps", "max_length"):
            value = getattr(self, key)
            if value is not None and value < 1:
                errors.append(f"{key}: must be >= 1 when set, got {value}")
        if self.learning_rate <= 0:
            errors.append(f"learning_rate: must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            errors.append(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm <= 0:
            errors.append(f"max_grad_norm: must be > 0, got {self.max_grad_norm}")
        if self.keep_checkpoints < 0:
            errors.append(f"keep_checkpoints: must be >= 0, got {self.keep_checkpoints}")
        if self.max_failures < 0:
            errors.append(f"max_failures: must be >= 0, got {self.max_failures}")
        if not 0 <= self.warmup_ratio < 1:
            errors.append(f"warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.batch_tokens is not None:
            if self.batch_tokens < self.seq_length * self.num_workers:
                errors.append(
                    f"batch_tokens: {self.batch_tokens} must hold one longest example per worker "
                    f"(>= max_length {self.seq_length} x {self.num_workers} workers)"
                )
            if not self.group_by_length:
                errors.append(
                    "batch_tokens: token-budget batches are cut from length-grouped order; drop --no-group-by-length"
                )
        if self.subtoken_labels not in ("all", "first"):
            errors.append(f"subtoken_labels: {self.subtoken_labels!r} is not 'all' or 'first'")
        if self.runner not in ("auto", "ray", "local"):
            errors.append(f"runner: {self.runner!r} is not auto, ray or local")
        elif self.runner == "local" and (self.num_workers != 1 or self.min_workers):
            errors.append("runner: local trains one worker in this process; drop num_workers/min_workers or use ray")
        elif self.runner == "local" and "://" in (self.storage_path or ""):
            errors.append("runner: local keeps checkpoints on a local disk; use --runner ray for remote storage_path")
        if self.min_workers is not None and not 1 <= self.min_workers <= self.num_workers:
            errors.append(f"min_workers: need 1 <= {self.min_workers} <= num_workers {self.num_workers}")
        if (self.batch_size or BATCH_SIZE) < self.num_workers:
            errors.append(
                f"batch_size: global batch {self.batch_size or BATCH_SIZE} is under num_workers {self.num_workers}"
            )
        if self.tag_scheme not in ("auto", "iob2", "iob1", "bioes", "io"):
            errors.append(f"tag_scheme: {self.tag_scheme!r} is not auto, iob2, iob1, bioes or io")
        if self.data_format not in DATA_FORMATS:
            errors.append(f"data_format: {self.data_format!r} is not one of {', '.join(DATA_FORMATS)}")
        if self.tag_column is not None and self.tag_column < 2:
            errors.append(f"tag_column: {self.tag_column} (1-based; column 1 holds the word)")
        if self.span_alignment not in ("expand", "contract", "strict"):
            errors.append(f"span_alignment: {self.span_alignment!r} is not expand, contract or strict")
        if self.annotations not in POLICIES:
            errors.append(f"annotations: {self.annotations!r} is not auto, all or agreed")
        if self.overlaps not in OVERLAPS:
            errors.append(f"overlaps: {self.overlaps!r} is not longest, first or error")
        if (self.train is None) != (self.validation is None) and self.data_dir is None:
            errors.append("train and validation: give both files (or --data-dir for the other split)")
        if self.resume and self.overwrite:
            errors.append("resume and overwrite: choose one")
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


# columns nlpbatch writes into each output row (a kept input column must not shadow one), beside each task's own
RESERVED_COLUMNS = {"id", "source", "line", "run_id"} | {
    "model",
    "model_uri",
    "model_sha256",
    "model_version",
    "nlpbatch_version",
}


BATCH_SIZE, SHORT_RUN_BATCH_SIZE, SHORT_RUN_STEPS = 16, 8, 1000


def short_run_batch_size(examples: int, epochs: int, num_workers: int = 1) -> int:
    """The global batch when none is given: 16, or 8 when 16 would make a run of under SHORT_RUN_STEPS optimizer
    steps (a small set of one's own labels): on 1,000 WNUT-17 sentences, 5 epochs, batch 8 reached validation F1
    0.505 where 16 reached 0.483 and the Hugging Face Trainer's recipe 0.495 (benchmarks/results/
    wnut17_1000_vs_trainer_cpu.json); from 1,000 steps on (all of WNUT-17, CoNLL) 16 is as good and faster."""
    if examples * epochs / BATCH_SIZE >= SHORT_RUN_STEPS:
        return BATCH_SIZE
    return max(SHORT_RUN_BATCH_SIZE, num_workers)


def _default_window(task: str) -> int:
    return get_task(task).default_window if is_task(task) else 512  # an unknown task is reported by validate


@dataclass(frozen=True)
class AnnotateConfig:
    """Corpus annotation settings (`nlpbatch annotate ner|qa`)."""

    task: str
    model: str
    input: str
    output: str
    input_format: str | None = None  # parquet | jsonl; None: from the file extension
    follow_symlinks: bool = False  # enter symlinked folders and files of the input (each real file read once)
    # parquet | jsonl | spacy | label-studio (spans for review in labelling tools) | delta (a Delta Lake table)
    output_format: str = "parquet"
    id_column: str = "id"
    text_column: str = "text"
    keep_columns: str | None = None  # input columns copied to each output row, comma-separated; None: the text
    question_column: str = "question"  # QA: one question per row ...
    questions: str | None = None  # ... or a file with one question per line, asked of every document
    text_pair_column: str | None = None  # classify: the second text of a sentence pair (default: as trained)
    # NER: the words tokens are grouped into, as the model was trained: whitespace (the data's tokens: CoNLL, token
    # lists, hub datasets; CJK ideographs apart) | pretokenized (the tokenizer's words, punctuation apart: models
    # trained on span exports); None: the model card's, else whitespace
    word_unit: str | None = None
    aggregation: str = "first"  # NER: first | max | simple (measured: benchmarks/results/ner_aggregation_cpu.json)
    max_length: int | None = None  # window length in tokens; None: 512 NER, 384 QA
    stride: int = 128  # tokens shared by neighbouring windows
    max_chars: int = 1_000_000  # longer texts are rejected, not truncated
    batch_tokens: int | None = None  # tokens per forward pass; None: 65536 on GPU, one window on CPU
    packing: str = "auto"  # on | off | auto: on for GPU actors (padding-free varlen attention), off on CPU
    batch_rows: int | None = None  # documents per inference call; None: rows_per_batch() decides
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float | None = None  # QA: "no answer" when the null score beats the best span by more than this
    window_reduce: str = "mean"  # classify: a long text's label from its windows' mean | first | max probabilities
    label_thresholds: str | None = None  # classify multi-label: "0.4" or "a=0.3,b=0.6"; None: the model card's
    min_actors: int | None = None  # None: the pool's full size from the start (measured: an autoscaling pool
    # from 1 actor stayed small and ran at 60% of a fixed pool of 2 on 2 cores, benchmarks/results/annotate_ner_cpu)
    max_actors: int | None = None  # None: what the cluster holds (its CPUs less one for reads, or its GPUs)
    layout: str = "auto"  # fused | split; auto: fused for CPU actors, split (CPU tasks feed the GPU) with num_gpus
    runner: str = "auto"  # ray | local (this process, no cluster) | auto: local when no cluster is named (local())
    num_gpus: float = 0.0  # per inference actor; > 0 runs bf16 on GPU
    cpus_per_actor: float = 1.0
    backend: str = "auto"  # torch | onnx | onnx-fp32 | onnx-int8 | openvino-int8; auto: the fastest exported file
    s3_endpoint: str | None = None
    run_id: str | None = None
    rows_per_file: int = 100_000  # rows per output file (tens of MB): object stores want few large files
    lease_ttl_seconds: float = 600.0  # a crashed run's lease expires after this long (renewed every ttl/3)
    break_lease: bool = False  # take over the output even though another run's lease looks alive
    overwrite: bool = False  # replace a published output of another task or input
    retention_hours: float = 24.0  # a replaced output's files stay this long for readers still on the old manifest
    csv_max_value_lines: int = 100  # CSV: a quoted value over more lines is a reject (an unclosed quote, likely)
    quiet: bool = False  # no progress bar or lines, only the summary (cron)
    max_reject_rate: float = 0.5  # more rejected rows than this share fails the run (after publishing the rejects)
    allow_empty: bool = False  # an input without rows publishes an empty output instead of failing

    @property
    def window(self) -> int:
        return self.max_length or _default_window(self.task)

    @property
    def kept(self) -> list[str]:
        """Input columns every output row carries (so spans can be read without a join back to the input)."""
        if self.keep_columns is None:  # the text, and a sentence pair's second text (rows show the whole pair)
            return list(dict.fromkeys([self.text_column, *([self.text_pair_column] if self.text_pair_column else [])]))
        return list(dict.fromkeys(c.strip() for c in self.keep_columns.split(",") if c.strip()))

    @property
    def words(self) -> str:
        """How tokenize groups tokens into words: the model's word unit for a task that groups words (NER),
        else the tokenizer's own word ids (nothing recomputed)."""
        if not get_task(self.task).groups_words:
            return "pretokenized"
        return self.word_unit or "whitespace"

    @property
    def fused(self) -> bool:
        """Parse, tokenize, predict and decode inside the inference actor (CPU: no process hand-offs, the
        actors get every core) or in CPU tasks around it (GPU: the tasks keep the GPU fed)."""
        return self.layout == "fused" or (self.layout == "auto" and self.num_gpus == 0)

    def actors(self, cluster_cpus: float, cluster_gpus: float) -> int:
        """The actor pool's upper size: max_actors, else what the cluster holds. CPU actors leave one CPU for
        the read and write tasks: a pool that takes every CPU starves them and the job stalls."""
        if self.max_actors is not None:
            return self.max_actors
        if self.num_gpus > 0:
            return max(1, int(cluster_gpus // self.num_gpus))
        return max(1, int((cluster_cpus - 1) // self.cpus_per_actor))

    def local(self, rows_in: int, cores: int | None = None) -> bool:
        """Run in this process, without Ray? `auto`: on CPU when no cluster is in use (none joined by this
        process, no RAY_ADDRESS), for a machine of up to LOCAL_CORES cores or an input of up to LOCAL_ROWS rows."""
        if self.runner != "auto":
            return self.runner == "local"
        if self.num_gpus > 0 or os.environ.get("RAY_ADDRESS"):
            return False
        if rows_in > LOCAL_ROWS and (cores or os.cpu_count() or 1) > LOCAL_CORES:
            return False
        import ray

        return not ray.is_initialized()

    def rows_per_batch(self, rows_in: int, actors: int) -> int:
        """batch_rows, else up to 256 documents a call, but at least 8 calls per actor. Measured on 2 cores, 2
        actors: the per-call framework cost dominates small calls of a small model (tiny model, 20k documents: 64
        rows a call 23.6 s, 128: 20.1 s, 256: 15.9 s), MiniLM int8 on 5k documents is no worse at 256 (64: 78 s,
        128: 71 s, 256: 74 s), but a small job in few large calls leaves an actor idle at the end (1,000 QA
        questions: 50.6 questions/s at 64 rows a call, 44.3 at 256)."""
        if self.batch_rows is not None:
            return self.batch_rows
        most = 2048 if self.num_gpus > 0 else 256  # a GPU call should fill several 64k-token forward passes
        return max(16, min(most, rows_in // (8 * max(1, actors))))

    @property
    def tokens_per_batch(self) -> int:
        """Measured on this CPU (benchmarks/results/engine_batch_cpu.json): small batches run much faster than
        large ones (cache-bound), so a CPU forward pass holds about one window. A GPU is launch-bound below about
        4k tokens a pass and near its ceiling from 256k (../shared/device anchors): 64k tokens a pass."""
        if self.batch_tokens is not None:
            return self.batch_tokens
        return 65536 if self.num_gpus > 0 else max(512, self.window)

    def validate(self) -> None:
        errors = _shared_errors(self)
        if self.input_format not in (None, "parquet", "jsonl", "csv"):
            errors.append(f"input_format: {self.input_format!r} is not parquet, jsonl or csv")
        if self.output_format not in OUTPUT_FORMATS:
            errors.append(f"output_format: {self.output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        elif self.output_format == "delta":
            from nlpbatch.annotate.delta import available

            if not available():
                errors.append("output_format: delta needs delta-rs: pip install 'nlpbatch[delta]'")
        elif self.output_format in ("spacy", "label-studio"):
            if is_task(self.task) and not get_task(self.task).span_formats:
                errors.append(f"output_format: {self.output_format} writes entity spans, which {self.task} has not")
            if self.text_column not in self.kept:
                errors.append(f"output_format: {self.output_format} needs the text: keep {self.text_column!r}")
        if self.backend not in BACKENDS:
            errors.append(f"backend: {self.backend!r} is not {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}")
        if not 0.0 <= self.max_reject_rate <= 1.0:
            errors.append(f"max_reject_rate: {self.max_reject_rate} is not between 0 and 1 (1: never fail on rejects)")
        if self.aggregation not in ("simple", "first", "max"):
            errors.append(f"aggregation: {self.aggregation!r} is not simple, first or max")
        if self.max_length is not None and self.max_length < 8:
            errors.append(f"max_length: must be >= 8 tokens when set, got {self.max_length}")
        if self.num_gpus < 0:
            errors.append(f"num_gpus: must be >= 0, got {self.num_gpus}")
        if self.cpus_per_actor <= 0:
            errors.append(f"cpus_per_actor: must be > 0, got {self.cpus_per_actor}")
        if not 0 <= self.stride < self.window // 2:
            errors.append(f"stride: {self.stride} must be under half the window ({self.window})")
        if self.min_actors is not None and self.min_actors < 1:
            errors.append(f"min_actors: must be >= 1, got {self.min_actors}")
        if self.max_actors is not None and self.max_actors < max(1, self.min_actors or 1):
            errors.append(f"max_actors: must be >= 1 and >= min_actors ({self.min_actors or 1}), got {self.max_actors}")
        written = RESERVED_COLUMNS | (set(get_task(self.task).output_columns) if is_task(self.task) else set())
        clash = sorted(set(self.kept) & written)
        if clash:
            errors.append(f"keep_columns: {', '.join(clash)} would clash with an output column; keep others")
        if self.packing not in ("auto", "on", "off"):
            errors.append(f"packing: {self.packing!r} is not auto, on or off")
        elif self.packing == "on" and self.backend not in ("auto", "torch"):
            errors.append(f"packing: 'on' runs the torch engine; with backend {self.backend!r} use packing off")
        if self.layout not in ("auto", "fused", "split"):
            errors.append(f"layout: {self.layout!r} is not auto, fused or split")
        if self.word_unit not in (None, *WORD_UNITS):
            errors.append(f"word_unit: {self.word_unit!r} is not whitespace or pretokenized")
        if self.runner not in ("auto", "ray", "local"):
            errors.append(f"runner: {self.runner!r} is not auto, ray or local")
        elif self.runner == "local" and self.num_gpus > 0:
            errors.append("runner: local runs on this process's CPUs; drop num_gpus or use --runner ray")
        if self.run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", self.run_id):
            errors.append(f"run_id: {self.run_id!r} must be letters, digits, '.', '_' or '-' (it names files)")
        if self.lease_ttl_seconds < 1:
            errors.append(f"lease_ttl_seconds: must be >= 1, got {self.lease_ttl_seconds}")
        if self.retention_hours < 0:
            errors.append(f"retention_hours: must be >= 0, got {self.retention_hours}")
        if self.csv_max_value_lines < 1:
            errors.append(f"csv_max_value_lines: must be >= 1, got {self.csv_max_value_lines}")
        for key in ("max_chars", "batch_rows", "n_best", "max_answer_length", "rows_per_file"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                errors.append(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.batch_tokens is not None and self.batch_tokens < self.window:
            errors.append(f"batch_tokens: {self.batch_tokens} is smaller than one window ({self.window})")
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def _shared_errors(cfg) -> list[str]:
    """Checks of the settings both configs have: the task, and how predictions are read."""
    errors = []
    if cfg.window_reduce not in ("mean", "first", "max"):
        errors.append(f"window_reduce: {cfg.window_reduce!r} is not mean, first or max")
    if not is_task(cfg.task):
        errors.append(f"task: {cfg.task!r} is not one of {', '.join(task_names())} (or a module defining TASK)")
    return errors


def _check_type(cls: type, name: str, value: Any) -> str | None:
    hint = typing.get_type_hints(cls)[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind in (str, bool) and isinstance(value, kind):
            return None
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    names = " or ".join(words.get(k, getattr(k, "__name__", str(k))) for k in allowed if k is not type(None))
    return f"{name}: expected {names}, got {value!r}"


def load_train_config(yaml_path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    return load_config(TrainConfig, yaml_path, **overrides)


def load_annotate_config(yaml_path: str | Path | None = None, **overrides: Any) -> AnnotateConfig:
    return load_config(AnnotateConfig, yaml_path, **overrides)


def _yaml_mapping(path: Path) -> tuple[dict, dict[str, int]]:
    """The YAML file's mapping and the line of each top-level key; syntax errors name the file and line."""
    import yaml

    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from err
    try:
        node = yaml.compose(text)
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    lines = {}
    if isinstance(node, yaml.MappingNode):
        lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    return loaded, lines


def load_config(cls: type, yaml_path: str | Path | None = None, **overrides: Any):
    """YAML keys first, then non-None CLI overrides; unknown keys, wrong types and bad values are all reported
    together, each naming its key (and its YAML line)."""
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    source = "overrides"
    if yaml_path is not None:
        source = str(yaml_path)
        loaded, lines = _yaml_mapping(Path(yaml_path))
        if "task" in loaded and overrides.get("task") not in (None, loaded["task"]):
            raise ConfigError(
                f"task: {yaml_path}:{lines.get('task', '?')} says {loaded['task']!r} but the command says "
                f"{overrides['task']!r}; run `{loaded['task']}` or fix the config"
            )
        values.update(loaded)
    set_by_flag = {k for k, v in overrides.items() if v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if cls is TrainConfig and isinstance(values.get("task"), str) and is_task(values["task"]):
        for key, value in get_task(values["task"]).recipe.items():  # the task's measured defaults
            if key == "group_by_length" and values.get("batch_tokens"):
                continue  # token budgets are cut from length-grouped batches: asking for them keeps grouping on
            values.setdefault(key, value)

    def where(key: str) -> str:
        if key in set_by_flag:
            return " (command line)"
        return f" ({source}:{lines[key]})" if key in lines else ""

    fields = {f.name: f for f in dataclasses.fields(cls)}
    errors = [f"{k}: unknown key{where(k)}{_did_you_mean(k, fields)}" for k in values if k not in fields]
    typed = {k: _check_type(cls, k, v) for k, v in values.items() if k in fields}
    errors += [err + where(k) for k, err in typed.items() if err is not None]
    missing = [k for k, f in fields.items() if f.default is dataclasses.MISSING and k not in values]
    hints = {
        "task": "the task argument, or task: in --config",
        "output": "--output DIR: where the model, metrics.json and checkpoints go"
        if cls is TrainConfig
        else "--output PATH or s3://...: where the annotated output is published",
        "input": "--input PATH, glob or s3://...: the corpus",
        "model": "--model DIR or hub id: the fine-tuned model",
    }
    errors += [f"{k}: required ({hints.get(k, '--' + k.replace('_', '-'))})" for k in missing]
    cfg = None
    if not missing and not any(typed[k] for k, f in fields.items() if f.default is dataclasses.MISSING):
        # the value checks run on the well-typed keys too, so one run reports every problem
        cfg = cls(**{k: v for k, v in values.items() if k in fields and typed[k] is None})
        try:
            cfg.validate()
        except ConfigError as err:
            errors += [e.strip() + where(e.strip().split(":")[0]) for e in str(err).splitlines()[1:]]
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(e.strip() for e in errors))
    return cfg


def _did_you_mean(key: str, fields) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(fields)})"


def config_from_argv(loader, argv: list[str]):
    """`CONFIG.yaml [key=value ...]` (the jobs/ entrypoints' arguments) -> a validated config."""
    if not argv:
        raise ConfigError("usage: python jobs/<job>.py CONFIG.yaml [key=value ...]")
    import yaml

    bad = [arg for arg in argv[1:] if "=" not in arg]
    if bad:
        raise ConfigError(f"argument {bad[0]!r} is not key=value (e.g. num_workers=4)")
    overrides = dict(arg.split("=", 1) for arg in argv[1:])
    try:
        parsed = {k: yaml.safe_load(v) for k, v in overrides.items()}
    except yaml.YAMLError as err:
        raise ConfigError(f"a key=value argument is not valid YAML: {err}") from err
    return loader(argv[0], **parsed)
