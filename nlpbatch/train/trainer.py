"""Driver side of fine-tuning: load and validate data before Ray starts, build the TorchTrainer, export the
final Hugging Face model and metrics.json."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from nlpbatch.config import ConfigError, TrainConfig
from nlpbatch.data.squad import SkipReport
from nlpbatch.tasks import get_task

RUN_NAME = "train"


def ensure_ray(logical_cpus_needed: int = 1) -> None:
    """Join the cluster in RAY_ADDRESS (e.g. under `ray job submit`), else start a local one.

    A local cluster gets at least as many logical CPUs as the job needs: they are scheduling tokens, and a
    2-core laptop can still run 2 workers.
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, logical_cpus_needed), log_to_driver=True)


def load_data(cfg: TrainConfig, skips: SkipReport):
    """Both splits, validated (errors name the file and line / question id) before any Ray work."""
    task = get_task(cfg.task)
    kwargs = {"skip_invalid": cfg.skip_invalid, "skips": skips}
    raw_train = task.load_split(cfg.data_dir, "train", cfg.max_train_examples, **kwargs)
    raw_eval = task.load_split(cfg.data_dir, "validation", cfg.max_eval_examples, **kwargs)
    return raw_train, raw_eval


def _prepare_storage(cfg: TrainConfig, output: Path) -> str:
    storage = cfg.storage_path or str(output / "ray_runs")
    if "://" in storage:
        return storage  # remote storage: Ray's own resume logic applies as is
    run_dir = Path(storage) / RUN_NAME
    if run_dir.exists() and not cfg.resume:
        if not cfg.overwrite:
            raise ConfigError(
                f"{run_dir} holds an earlier training run: pass --resume to continue it or --overwrite to start over"
            )
        shutil.rmtree(run_dir)
    elif cfg.resume and not run_dir.exists():
        print(f"[nlpbatch] --resume: no earlier run in {run_dir}; starting from scratch", flush=True)
    return str(Path(storage).resolve())


def run_training(cfg: TrainConfig) -> dict:
    """Fine-tune with Ray Train; returns the metrics also written to OUTPUT/metrics.json."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from transformers import AutoConfig

    from nlpbatch.models import resolve_model
    from nlpbatch.train.loop import train_loop_per_worker

    t_start = time.perf_counter()
    skips = SkipReport()
    raw_train, raw_eval = load_data(cfg, skips)
    AutoConfig.from_pretrained(resolve_model(cfg.model))  # an unreadable model fails here, not in a worker
    output = Path(cfg.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    storage = _prepare_storage(cfg, output)

    ensure_ray(cfg.num_workers * cfg.cpus_per_worker)
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": asdict(cfg),
            "raw_train": ray.put(raw_train),
            "raw_eval": ray.put(raw_eval),
        },
        scaling_config=ScalingConfig(
            # a (min, max) range makes the run elastic: it starts with what the cluster can give
            num_workers=(cfg.min_workers, cfg.num_workers) if cfg.min_workers else cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    t_fit = time.perf_counter()
    result = trainer.fit()
    fit_seconds = time.perf_counter() - t_fit
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint (no epoch completed)")
    export_checkpoint(result.checkpoint, output)

    summary = result.return_value or {}
    history = summary.get("history", [])
    metrics = {
        "task": cfg.task,
        "final": summary.get("final", {}),
        "history": history,
        "skipped": {"count": skips.count, "examples": skips.skipped},
        "train_examples": len(raw_train),
        "eval_examples": len(raw_eval),
        "timings": {
            "total_seconds": time.perf_counter() - t_start,
            "fit_seconds": fit_seconds,
            "train_loop_seconds": sum(h["train_seconds"] + h["eval_seconds"] for h in history),
        },
        "config": asdict(cfg),
        "world_size": summary.get("world_size"),
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def export_checkpoint(checkpoint, output: Path) -> None:
    """Copy the Hugging Face files of a checkpoint (model, tokenizer, id2label) to OUTPUT, without the
    optimizer state, so `from_pretrained(OUTPUT)` works."""
    from nlpbatch.train.loop import STATE_FILE

    with checkpoint.as_directory() as directory:
        for item in Path(directory).iterdir():
            if item.name != STATE_FILE and item.is_file():
                shutil.copy2(item, output / item.name)
