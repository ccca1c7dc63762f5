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
        if self.resume and self.overwrite:
            errors.append("resume and overwrite: choose one")
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def _check_type(name: str, value: Any, annotation: Any) -> str | None:
    hint = typing.get_type_hints(TrainConfig)[name] if isinstance(annotation, str) else annotation
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
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    errors = [f"{k}: unknown key in {source} (known: {', '.join(fields)})" for k in values if k not in fields]
    errors += [err for k, v in values.items() if k in fields and (err := _check_type(k, v, fields[k].type)) is not None]
    errors += [f"{k}: required" for k, f in fields.items() if f.default is dataclasses.MISSING and k not in values]
    if errors:
        raise ConfigError(f"invalid config ({source}):\n  " + "\n  ".join(errors))
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg
