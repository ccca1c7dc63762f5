"""The contract between task logic and the runtimes that train and evaluate it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAD_MULTIPLE = 8  # collators pad a batch to a multiple of this (tensor-core friendly shapes)


def no_summary(row: dict) -> str:
    return ""


@dataclass(frozen=True)
class Task:
    """Everything that differs between tasks, for the runtimes that train, evaluate, annotate and show them; every
    field is a plain function or a constant. A task module builds one and registers it in `nlpbatch.tasks.TASKS`.

    Features are lists of dicts. Eval features carry an "index" (their position), which the loop uses to gather
    predictions from all workers back into dataset order.
    """

    name: str
    # (data_dir or None, split, cfg) -> datasets.Dataset of raw examples
    load_split: Callable[..., Any]
    # (model_path, raw_train, cfg) -> model with a fresh head
    build_model: Callable[..., Any]
    # model_path -> a fine-tuned model as saved (its own head and labels)
    load_trained: Callable[..., Any]
    # (raw, tokenizer, cfg) -> list of feature dicts for training
    train_features: Callable[..., list[dict]]
    # (raw, tokenizer, cfg) -> list of feature dicts for evaluation (model inputs + "index")
    eval_features: Callable[..., list[dict]]
    # tokenizer -> collate function for a list of feature dicts
    collator: Callable[..., Callable]
    # (model output, batch) -> {name: (per-example tensor [n, L], pad value)} to gather
    outputs_to_gather: Callable[..., dict]
    # (gathered arrays in dataset order, eval features, raw, model config, TrainConfig) -> (metrics, predictions)
    score: Callable[..., tuple[dict, Any]]
    # raw training split -> the label names a run trains (its fingerprint; [] for tasks without labels)
    label_names: Callable[[Any], list[str]]
    # TrainConfig -> errors in the task's own settings; and the settings that make a checkpoint incompatible
    check_train: Callable[[Any], list[str]]
    fingerprint: Callable[[Any], dict]
    # eval metrics -> a short line for logs; eval history -> [(label, values, marker)] for training.png
    headline: Callable[[dict], str]
    plot_scores: Callable[[list[dict]], list[tuple[str, list[float], str]]]
    # (predictions from score, path) -> writes `evaluate --predictions` in the task's usual format
    write_predictions: Callable[[Any, str], None]

    # --- inference: what a forward pass returns, how it is reduced, decoded into output columns and shown
    architecture: str  # the model class suffix (config.json "architectures") that marks a model of this task
    head_outputs: tuple[str, ...]  # the model's output names, in order
    default_window: int  # tokens a window holds unless --max-length says otherwise
    pair: bool  # inputs are (question, text): only the text is windowed, only its tokens are decoded
    # columns a forward pass leaves, after `reduce_*`: ((name, numpy dtype name), ...), one value per token, then
    # (`window_columns`) one value per window (a document label's per-window scores)
    token_columns: tuple[tuple[str, str], ...]
    # the head's outputs reduced where they are: torch tensors on the device / numpy arrays (ONNX Runtime)
    reduce_torch: Callable[[list], list]
    reduce_numpy: Callable[[list], list]
    # (table after predict, **decode_options) -> table with `output_columns` (rows.passthrough keeps the rest)
    decode: Callable[..., Any]
    decode_options: Callable[[Any, Any], dict]  # (AnnotateConfig, model config) -> decode's keyword arguments
    output_columns: tuple[str, ...]
    # an output row -> [(start, end, label, score)] for `show` to highlight
    spans: Callable[[dict], list[tuple[int, int, str, float | None]]]
    window_columns: tuple[tuple[str, str], ...] = ()
    # an output row -> a short line `show` prints beside the document (a document label and its score)
    summary: Callable[[dict], str] = no_summary
    # (final eval metrics, TrainConfig, the files training read: spans.REPORTS) -> settings the model card keeps for
    # evaluate and annotate (QA: the null threshold chosen on validation; NER: the words it was trained on)
    card_settings: Callable[..., dict] = lambda metrics, cfg, data_files=(): {}
    # annotate groups tokens into the words the model was trained on (`word_unit`, from the card): NER
    groups_words: bool = False
    # output rows mark labelled spans of their text, which labelling tools review and training reads back
    # (`annotate --output-format spacy|label-studio`)
    span_formats: bool = False
    # training settings this task defaults to instead of TrainConfig's (chosen by measurement; flags and YAML win)
    recipe: dict = field(default_factory=dict)
    # (key in the eval metrics, its full scale): the one number `promote` gates on, as a share of its scale
    gate_metric: tuple[str, float] | None = None
    # (labelled raw split, texts -> annotate's output rows) -> (scores, correct) of each scored prediction: what
    # `nlpbatch calibrate` fits a calibrator to (None: the task's scores are not calibrated yet)
    score_outcomes: Callable[..., Any] | None = None


def softmax(logits):
    """Probabilities over the last axis (numpy; shifted by the row's max, so large logits do not overflow)."""
    import numpy as np

    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(feature: dict) -> dict:
    return {k: feature[k] for k in MODEL_INPUTS if k in feature}


DATA_SUFFIXES = (".txt", ".json", ".jsonl", ".conll", ".parquet", ".tsv", ".csv")


def looks_like_path(source: str) -> bool:
    """A --data value meant as a local path (so a typo gives 'not found', not a hub download attempt)."""
    return source.startswith((".", "/", "~")) or source.endswith(DATA_SUFFIXES)


def dataset_folder(path: Path) -> bool:
    """A folder laid out as a hub dataset repository (what `hf download --repo-type dataset` leaves: Parquet or
    JSON Lines files named by split, maybe under data/), which `datasets.load_dataset(folder)` reads like the hub."""
    return any(path.glob("*.parquet")) or any(path.glob("data/*.parquet")) or any(path.glob("data/*.jsonl"))


def locate_split(source: str | None, split: str, folder: str, ext: str, kind: str) -> Path | None:
    """The local file a --data/--data-dir value names for `split`, or None when it names a hub dataset.

    `source` is a file, a data dir (DIR/FOLDER/SPLIT.EXT or DIR/SPLIT.EXT), a hub name or a folder laid out as a hub
    dataset (None: `datasets.load_dataset` reads it); a path-like value that does not exist is an error rather than
    a hub lookup.
    """
    if source is None:
        return None
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / folder / f"{split}{ext}", path / f"{split}{ext}"):
            if candidate.is_file():
                return candidate
        if dataset_folder(path):
            return None
        # a data root given where the dataset's own folder was meant (classify has no default folder): name them
        inside = sorted(p.name for p in path.iterdir() if (p / f"{split}{ext}").is_file())
        hint = f"; datasets inside it: {', '.join(inside)} (e.g. --data-dir {path / inside[0]})" if inside else ""
        raise FileNotFoundError(f"{path}: no {split} split (looked for {folder}/{split}{ext} and {split}{ext}){hint}")
    if looks_like_path(source):
        raise FileNotFoundError(f"{source}: no such {kind} file or directory")
    return None


def eval_stride(cfg: Any) -> int:
    """Tokens neighbouring evaluation windows share: annotate's (`doc_stride`, 128), under half the window as annotate
    requires."""
    return max(0, min(getattr(cfg, "doc_stride", 128), cfg.max_length // 2 - 1))


def identity(outputs: list) -> list:
    return outputs


def no_labels(raw: Any) -> list[str]:
    return []


def no_errors(cfg: Any) -> list[str]:
    return []


def nothing(cfg: Any) -> dict:
    return {}
