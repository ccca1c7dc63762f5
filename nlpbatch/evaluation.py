"""Score a saved model on any CoNLL / SQuAD file or hub dataset, in this process or on N Ray workers.
Both paths run the same `run_eval`, so their results must be identical."""

from __future__ import annotations

from typing import Any

from nlpbatch.config import TrainConfig
from nlpbatch.data.squad import SkipReport
from nlpbatch.tasks import get_task


def eval_config(task: str, model: str, **kwargs: Any) -> TrainConfig:
    cfg = TrainConfig(task=task, output="", model=model, **{k: v for k, v in kwargs.items() if v is not None})
    cfg.validate()
    return cfg


def _score_in_process(cfg: TrainConfig, raw, rank: int = 0, world: int = 1, device=None):
    import torch
    from transformers import AutoTokenizer

    from nlpbatch.models import resolve_model
    from nlpbatch.train.loop import run_eval

    task = get_task(cfg.task)
    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = task.load_trained(path)
    device = device or torch.device("cpu")
    model.to(device)
    feats = task.eval_features(raw, tokenizer, cfg)
    return run_eval(model, task, feats, raw, cfg, task.collator(tokenizer), device, rank, world)


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
) -> tuple[dict, Any]:
    """(metrics, predictions). num_workers=0 scores in this process; N >= 1 shards the data over N Ray Train
    workers and gathers, which must give the same predictions."""
    task = get_task(cfg.task)
    skips = SkipReport()
    raw = task.load_split(data, split, max_examples, skip_invalid=skip_invalid, skips=skips)
    if num_workers == 0:
        metrics, predictions = _score_in_process(cfg, raw)
    else:
        from dataclasses import asdict

        import ray
        from ray.train import ScalingConfig
        from ray.train.torch import TorchTrainer

        from nlpbatch.train.trainer import ensure_ray

        ensure_ray(num_workers * cfg.cpus_per_worker)
        trainer = TorchTrainer(
            _eval_loop_per_worker,
            train_loop_config={"cfg": asdict(cfg), "raw": ray.put(raw)},
            scaling_config=ScalingConfig(
                num_workers=num_workers,
                use_gpu=cfg.use_gpu,
                resources_per_worker={"CPU": cfg.cpus_per_worker},
            ),
        )
        metrics, predictions = trainer.fit().return_value
    if skips.count:
        metrics["skipped"] = {"count": skips.count, "examples": skips.skipped}
    return metrics, predictions
