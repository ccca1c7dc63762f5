"""Job configuration: frozen dataclasses from YAML plus CLI overrides, validated before any work starts."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Invalid configuration; the message lists every offending key."""


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings. Defaults are the recipe tuned for the bundled all-MiniLM-L6-v2 (see README):
    small models want a larger learning rate than bert-base's 2e-5."""

    task: str
    output: str
    data_dir: str | None = None  # None: the Hugging Face hub dataset
    model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    epochs: int = 5
    learning_rate: float = 1e-4
    batch_size: int = 32  # global: split across workers, so the recipe does not change with the worker count
    eval_batch_size: int = 64  # per worker
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int | None = None  # None: 512 for NER, 384 for QA
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    group_by_length: bool = True
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs); None: full epochs
    num_workers: int = 1
    min_workers: int | None = None  # set: elastic, start with what the cluster gives between min and num_workers
    cpus_per_worker: int = 1
    use_gpu: bool = False
    seed: int = 42
    resume: bool = False
    overwrite: bool = False
    skip_invalid: bool = False
    storage_path: str | None = None  # None: OUTPUT/ray_runs; use s3:// or a shared FS on multi-node clusters
    max_failures: int = 0
    log_every_steps: int = 50

    @property
    def seq_length(self) -> int:
        return self.max_length or (384 if self.task == "qa" else 512)

    def validate(self) -> None:
        errors = []
        if self.task not in ("ner", "qa"):
            errors.append(f"task: {self.task!r} is not 'ner' or 'qa'")
        for key in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "num_workers",
            "cpus_per_worker",
            "n_best",
            "max_answer_length",
            "log_every_steps",
        ):
            if getattr(self, key) < 1:
                errors.append(f"{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("max_train_examples", "max_eval_examples", "max_steps", "max_length"):
            value = getattr(self, key)
            if value is not None and value < 1:
                errors.append(f"{key}: must be >= 1 when set, got {value}")
        if self.learning_rate <= 0:
            errors.append(f"learning_rate: must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            errors.append(f"warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.doc_stride >= self.seq_length // 2:
            errors.append(f"doc_stride: {self.doc_stride} must be under half of max_length {self.seq_length}")
        if self.min_workers is not None and not 1 <= self.min_workers <= self.num_workers:
            errors.append(f"min_workers: need 1 <= {self.min_workers} <= num_workers {self.num_workers}")
        if self.resume and self.overwrite:
            errors.append("resume and overwrite: choose one")
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


@dataclass(frozen=True)
class AnnotateConfig:
    """Corpus annotation settings (`nlpbatch annotate ner|qa`)."""

    task: str
    model: str
    input: str
    output: str
    input_format: str | None = None  # parquet | jsonl; None: from the file extension
    output_format: str = "parquet"  # parquet | jsonl
    id_column: str = "id"
    text_column: str = "text"
    question_column: str = "question"  # QA: one question per row ...
    questions: str | None = None  # ... or a file with one question per line, asked of every document
    aggregation: str = "simple"  # NER: simple | first | max
    max_length: int | None = None  # window length in tokens; None: 512 NER, 384 QA
    stride: int = 128  # tokens shared by neighbouring windows
    max_chars: int = 1_000_000  # longer texts are rejected, not truncated
    batch_tokens: int = 16384  # padded tokens per forward pass (length-bucketed)
    batch_rows: int = 64  # documents per inference call: small enough to keep every actor of the pool busy
    n_best: int = 20
    max_answer_length: int = 30
    min_actors: int = 1
    max_actors: int = 1
    num_gpus: float = 0.0  # per inference actor; > 0 runs bf16 on GPU
    cpus_per_actor: float = 1.0
    s3_endpoint: str | None = None
    run_id: str | None = None
    rows_per_file: int = 100_000  # rows per output file (tens of MB): object stores want few large files
    lease_ttl_seconds: float = 600.0  # a crashed run's lease expires after this long (renewed every ttl/3)
    break_lease: bool = False  # take over the output even though another run's lease looks alive
    overwrite: bool = False  # replace a published output of another task or input

    @property
    def window(self) -> int:
        return self.max_length or (384 if self.task == "qa" else 512)

    def validate(self) -> None:
        errors = []
        if self.task not in ("ner", "qa"):
            errors.append(f"task: {self.task!r} is not 'ner' or 'qa'")
        if self.input_format not in (None, "parquet", "jsonl"):
            errors.append(f"input_format: {self.input_format!r} is not parquet or jsonl")
        if self.output_format not in ("parquet", "jsonl"):
            errors.append(f"output_format: {self.output_format!r} is not parquet or jsonl")
        if self.aggregation not in ("simple", "first", "max"):
            errors.append(f"aggregation: {self.aggregation!r} is not simple, first or max")
        if not 0 <= self.stride < self.window // 2:
            errors.append(f"stride: {self.stride} must be under half the window ({self.window})")
        if not 1 <= self.min_actors <= self.max_actors:
            errors.append(f"min_actors/max_actors: need 1 <= {self.min_actors} <= {self.max_actors}")
        if self.lease_ttl_seconds < 1:
            errors.append(f"lease_ttl_seconds: must be >= 1, got {self.lease_ttl_seconds}")
        for key in ("max_chars", "batch_tokens", "batch_rows", "n_best", "max_answer_length", "rows_per_file"):
            if getattr(self, key) < 1:
                errors.append(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.batch_tokens < self.window:
            errors.append(f"batch_tokens: {self.batch_tokens} is smaller than one window ({self.window})")
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


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
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    return f"{name}: expected {names}, got {type(value).__name__} {value!r}"


def load_train_config(yaml_path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    return load_config(TrainConfig, yaml_path, **overrides)


def load_annotate_config(yaml_path: str | Path | None = None, **overrides: Any) -> AnnotateConfig:
    return load_config(AnnotateConfig, yaml_path, **overrides)


def load_config(cls: type, yaml_path: str | Path | None = None, **overrides: Any):
    """YAML keys first, then non-None CLI overrides; unknown keys and wrong types are all reported together."""
    values: dict[str, Any] = {}
    source = "overrides"
    if yaml_path is not None:
        import yaml

        source = str(yaml_path)
        loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{yaml_path}: expected a mapping of keys to values")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    errors = [f"{k}: unknown key in {source} (known: {', '.join(fields)})" for k in values if k not in fields]
    errors += [err for k, v in values.items() if k in fields and (err := _check_type(cls, k, v)) is not None]
    missing = [k for k, f in fields.items() if f.default is dataclasses.MISSING and k not in values]
    errors += [f"{k}: required" for k in missing]
    cfg = None
    if not missing:
        # the value checks run on the well-typed keys too, so one run reports every problem
        cfg = cls(**{k: v for k, v in values.items() if k in fields and _check_type(cls, k, v) is None})
        try:
            cfg.validate()
        except ConfigError as err:
            errors += str(err).splitlines()[1:]
    if errors:
        raise ConfigError(f"invalid config ({source}):\n  " + "\n  ".join(e.strip() for e in errors))
    return cfg


def config_from_argv(loader, argv: list[str]):
    """`CONFIG.yaml [key=value ...]` (the jobs/ entrypoints' arguments) -> a validated config."""
    if not argv:
        raise SystemExit("usage: python jobs/<job>.py CONFIG.yaml [key=value ...]")
    import yaml

    overrides = dict(arg.split("=", 1) for arg in argv[1:])
    return loader(argv[0], **{k: yaml.safe_load(v) for k, v in overrides.items()})
