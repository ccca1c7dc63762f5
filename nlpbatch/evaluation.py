"""Score a saved model on any CoNLL / SQuAD file or hub dataset, in this process or on N Ray workers.
Both paths run the same `run_eval`, so their results must be identical."""

from __future__ import annotations

import dataclasses
from typing import Any

from nlpbatch.config import ConfigError, TrainConfig
from nlpbatch.data.squad import SkipReport
from nlpbatch.model_card import CARD_DEFAULTS
from nlpbatch.tasks import get_task


def trained_settings(model: str) -> dict:
    """How a model exported by `nlpbatch train` was trained (its model card), {} for any other model."""
    from nlpbatch.model_card import read_card
    from nlpbatch.models import resolve_model

    return read_card(resolve_model(model))


def eval_config(task: str, model: str, **kwargs: Any) -> TrainConfig:
    """Scoring settings: what the command line gives, else the windows the model was trained with (so `evaluate`
    scores what training reported), else the defaults. A model trained for the other task is refused."""
    trained = trained_settings(model)
    if trained.get("task", task) != task:
        raise ConfigError(f"{model} is a {trained['task']} model: use `nlpbatch evaluate {trained['task']}`")
    settings = ("max_length", "doc_stride", "text_column", "text_pair_column", "label_column", "multi_label")
    settings += CARD_DEFAULTS
    known = {f.name for f in dataclasses.fields(TrainConfig)}  # annotate-only card keys (word_unit) are not scoring's
    defaults = {k: trained[k] for k in settings if trained.get(k) is not None and k in known}
    given = {k: v for k, v in kwargs.items() if v is not None}
    cfg = TrainConfig(task=task, output="", model=model, **{**defaults, **given})
    cfg.validate()
    return cfg


def _score_in_process(
    cfg: TrainConfig, raw, rank: int = 0, world: int = 1, device=None, backend: str = "torch", progress: str = "lines"
):
    import torch
    from transformers import AutoTokenizer

    from nlpbatch.models import resolve_model
    from nlpbatch.train.loop import run_eval

    task = get_task(cfg.task)
    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if backend == "torch":
        model = task.load_trained(path)
    else:  # the predictor annotate runs, on the model's raw outputs
        from nlpbatch.annotate.predictors import Predictor, PredictorModel

        model = PredictorModel(Predictor(cfg.task, path, max(512, cfg.max_length), backend=backend, reduce=False))
    device = device or torch.device("cuda" if cfg.use_gpu else "cpu")
    model.to(device)
    feats = task.eval_features(raw, tokenizer, cfg)
    return run_eval(model, task, feats, raw, cfg, task.collator(tokenizer), device, rank, world, progress)


def _eval_loop_per_worker(config: dict):
    import ray
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    cfg = TrainConfig(**config["cfg"])
    raw = ray.get(config["raw"])
    return _score_in_process(cfg, raw, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())


def evaluate_model(
    cfg: TrainConfig,
    data: str | None,
    split: str = "validation",
    num_workers: int = 0,
    max_examples: int | None = None,
    skip_invalid: bool = False,
    backend: str = "torch",
) -> tuple[dict, Any]:
    """(metrics, predictions). num_workers=0 scores in this process; N >= 1 shards the data over N Ray Train
    workers and gathers, which must give the same predictions."""
    if backend != "torch" and (num_workers or cfg.use_gpu):
        raise ConfigError(f"--backend {backend} scores in this process on the CPU: drop --num-workers / --use-gpu")
    if cfg.use_gpu and num_workers == 0:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--use-gpu: no GPU is visible to this process")
    task = get_task(cfg.task)
    skips = SkipReport()
    from nlpbatch.data import fetch_data

    raw = task.load_split(
        fetch_data(data), split, max_examples, skip_invalid=skip_invalid, skips=skips, **cfg.data_options()
    )
    if num_workers == 0:
        from nlpbatch.progress import progress_mode

        metrics, predictions = _score_in_process(cfg, raw, backend=backend, progress=progress_mode(cfg.quiet))
    else:
        from dataclasses import asdict

        import ray
        from ray.train import ScalingConfig
        from ray.train.torch import TorchTrainer

        from nlpbatch.models import worker_model
        from nlpbatch.raycluster import ensure_ray

        ensure_ray(num_workers * cfg.cpus_per_worker)
        trainer = TorchTrainer(
            _eval_loop_per_worker,
            train_loop_config={"cfg": {**asdict(cfg), "model": worker_model(cfg.model)}, "raw": ray.put(raw)},
            scaling_config=ScalingConfig(
                num_workers=num_workers,
                use_gpu=cfg.use_gpu,
                resources_per_worker={"CPU": cfg.cpus_per_worker},
            ),
        )
        metrics, predictions = trainer.fit().return_value
    if skips.count:
        from nlpbatch.metrics import with_skipped_questions

        metrics = with_skipped_questions(metrics, skips.count)
        metrics["skipped"] = {"count": skips.count, "examples": skips.skipped}
    return metrics, predictions


def calibration_inputs(model: str, data: str | None = None, n: int = 300) -> tuple[list[dict], str] | None:
    """Model inputs (one example each, int64 [1, length] arrays) of the first `n` training examples of `data`, else
    of the training data recorded in MODEL/metrics.json, for static int8 calibration; with where they came from.
    None when no data is given and the recorded data is not readable here."""
    import json
    from pathlib import Path

    import numpy as np
    from transformers import AutoTokenizer

    from nlpbatch.data import fetch_data
    from nlpbatch.models import resolve_model
    from nlpbatch.progress import say
    from nlpbatch.tasks import task_of_model
    from nlpbatch.tasks.base import MODEL_INPUTS

    path = resolve_model(model)
    metrics = Path(path) / "metrics.json"
    recorded = json.loads(metrics.read_text()).get("config", {}) if metrics.is_file() else {}
    source = data or recorded.get("train") or recorded.get("data_dir")
    if not source:
        return None
    task_name = task_of_model(path)
    options = {k: recorded.get(k) for k in TrainConfig(task=task_name, output="").data_options() if k in recorded}
    cfg = eval_config(task_name, path, **options)
    try:
        raw = get_task(task_name).load_split(fetch_data(source), "train", n, **cfg.data_options())
    except (OSError, ValueError) as err:
        if data:
            raise
        say(f"export: the training data recorded in {metrics} is not readable here ({err})")
        return None
    feats = get_task(task_name).eval_features(raw, AutoTokenizer.from_pretrained(path), cfg)[:n]
    return [{k: np.asarray(f[k], np.int64)[None] for k in MODEL_INPUTS if k in f} for f in feats], str(source)


MIN_OUTCOMES = 5  # right and wrong predictions each, at the least, for a calibrator to fit


def calibrate_model(
    model: str,
    data: str | None = None,
    raw=None,
    max_examples: int | None = None,
    method: str = "platt",
    target_precision: float | None = None,
) -> dict:
    """Fit a score calibrator on labelled data (`data`, or an already loaded `raw` split: training's validation)
    and keep it in the model card, so annotate writes calibrated scores from then on. Returns what was measured:
    the expected calibration error before, after (on the fitting data) and cross-fitted (each half calibrated by
    the other half's fit: what to expect on new data), the reliability tables, and, with `target_precision`, the
    lowest calibrated score whose predictions reach it (stored too: annotate then keeps only entities above it)."""
    from nlpbatch import calibration
    from nlpbatch.annotate.local_runner import annotate_texts
    from nlpbatch.config import load_annotate_config
    from nlpbatch.model_card import read_card, write_card
    from nlpbatch.models import local_model_path
    from nlpbatch.tasks import task_of_model

    path = local_model_path(model)
    task_name = task_of_model(path)
    task = get_task(task_name)
    if task.score_outcomes is None:
        raise ConfigError(f"calibrate: the {task_name} task's scores cannot be calibrated yet (only NER entities)")
    if raw is None:
        from nlpbatch.data import fetch_data

        if data is None:
            raise ConfigError("calibrate: give --data (labelled validation data, as for evaluate)")
        cfg = eval_config(task_name, path)
        raw = task.load_split(fetch_data(data), "validation", max_examples, **cfg.data_options())
    settings = load_annotate_config(task=task_name, model=path, input="-", output="-", quiet=True)
    scores, correct = task.score_outcomes(raw, lambda texts: annotate_texts(settings, texts, raw_scores=True))
    if len(scores) < 20 or min(int(correct.sum()), int((~correct).sum())) < MIN_OUTCOMES:
        raise ConfigError(
            f"calibrate: {len(scores)} scored predictions, {int(correct.sum())} right: too few, or all alike, to fit "
            f"a calibrator (at least {MIN_OUTCOMES} right and {MIN_OUTCOMES} wrong); give more labelled data"
        )
    fitted = calibration.fit(scores, correct, method)
    after = calibration.apply(fitted, scores)
    crossed = calibration.cross_fitted(scores, correct, method)
    report = {
        "method": method,
        "fitted_on": str(data) if data else "the training run's validation split",
        "predictions": len(scores),
        "correct": int(correct.sum()),
        "ece_before": calibration.ece(scores, correct),
        "ece_after": calibration.ece(after, correct),
        "ece_cross_fitted": calibration.ece(crossed, correct),
        "reliability_before": calibration.reliability(scores, correct),
        "reliability_after": calibration.reliability(crossed, correct),
    }
    if target_precision is not None:
        found = calibration.threshold_for_precision(after, correct, target_precision)
        report["target_precision"] = {"target": target_precision, **(found or {"threshold": None})}
    card = read_card(path)
    card["score_calibration"] = {"calibrator": fitted, **{k: v for k, v in report.items() if "reliability" not in k}}
    write_card(path, card)
    report["card"] = str(path)
    return report
