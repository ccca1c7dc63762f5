"""The one training loop every task uses, run by every Ray Train worker, plus the evaluation it shares with
single-process scoring. Small `_setup_*` helpers, one epoch function, report + checkpoint per epoch."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from dataclasses import asdict
from typing import Any

import torch

from nlpbatch.config import TrainConfig
from nlpbatch.progress import Progress, progress_mode, say
from nlpbatch.tasks import get_task
from nlpbatch.tasks.base import MODEL_INPUTS, Task
from nlpbatch.train.batches import ResidentBatches
from nlpbatch.train.gather import concat_padded, gather_by_index
from nlpbatch.train.sampler import GlobalBatchSampler

STATE_FILE = "training_state.pt"


def eval_shard(n: int, rank: int, world: int) -> list[int]:
    """This rank's eval indices: DistributedSampler's strided split, padded with repeats to equal length."""
    from torch.utils.data import DistributedSampler

    return list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))


def run_eval(
    model,
    task: Task,
    feats: list[dict],
    raw,
    cfg: TrainConfig,
    collate,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    progress: str = "lines",
) -> tuple[dict, Any]:
    """Predict this rank's shard, gather all shards in dataset order, score exactly as one process would.
    Rank 0 reports its batches (`progress`: a progress.MODES name)."""
    shard = sorted(eval_shard(len(feats), rank, world), key=lambda i: len(feats[i]["input_ids"]), reverse=True)
    indices, outputs = [], {}
    starts = range(0, len(shard), cfg.eval_batch_size)
    bar = Progress("evaluate", len(starts), "batches", progress if rank == 0 and not cfg.quiet else "quiet")
    model.eval()
    with torch.no_grad(), _autocast(device):
        for start in starts:
            batch = collate([feats[i] for i in shard[start : start + cfg.eval_batch_size]])
            indices.append(batch.pop("index"))
            batch = {k: v.to(device) for k, v in batch.items()}
            # the inputs only: no loss computed (and gold ids of types the model lacks never reach its head)
            output = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
            for name, (tensor, pad) in task.outputs_to_gather(output, batch).items():
                outputs.setdefault(name, ([], pad))[0].append(tensor)
            bar.update(1)
    if bar.mode != "quiet":
        bar.close()
    index = torch.cat(indices).to(device)
    arrays = {name: (concat_padded(chunks, pad), pad) for name, (chunks, pad) in outputs.items()}
    gathered = gather_by_index(index, arrays, expected=len(feats))
    return task.score(gathered, feats, raw, model.config, cfg)


def _autocast(device: torch.device):
    # bf16 autocast on GPU workers only; CPU runs stay fp32.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _setup_model(task: Task, cfg: TrainConfig, raw_train, checkpoint_dir: str | None):
    from transformers import AutoTokenizer, set_seed

    from nlpbatch.models import resolve_model

    set_seed(cfg.seed)  # the new head's initialisation is the same on every rank and every run
    source = checkpoint_dir or resolve_model(cfg.model)
    return AutoTokenizer.from_pretrained(source), task.build_model(source, raw_train, cfg)


def _setup_optimizer(model, cfg: TrainConfig, total_steps: int, device: torch.device):
    from transformers import get_linear_schedule_with_warmup

    decay = [p for p in model.parameters() if p.ndim >= 2]  # no weight decay on biases and LayerNorm
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        fused=device.type == "cuda",
    )
    warmup = int(cfg.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def _save_checkpoint(directory: str, model, tokenizer, optimizer, scheduler, state: dict) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Writing model shards" bar an epoch is noise in the run's log
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **state},
        os.path.join(directory, STATE_FILE),
    )


def _quiet_ray_train_reports() -> None:
    """Ray Train's worker logs every `report` (a 10-line TrainingReport an epoch) at INFO under a logger named by its
    file's path, outside `ray.train`, so the LoggingConfig level misses it: raised here unless --verbose."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: its lines stay
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


class RaySession:
    """A Ray Train worker's place in the run: its rank, device, restored checkpoint and reports."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def get(self, ref):
        import ray

        return ray.get(ref)

    def checkpoint(self):
        """A context manager giving the restored checkpoint's directory, or None."""
        import ray.train

        restored = ray.train.get_checkpoint()
        return restored.as_directory() if restored else contextlib.nullcontext(None)

    def prepare(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model)  # moves to device; DDP when world > 1

    def report(self, metrics: dict, directory: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(directory) if directory else None
        ray.train.report(_flat(metrics), checkpoint=checkpoint)


class LocalSession:
    """This process alone, no cluster: the same loop, one worker; each epoch's checkpoint copied to
    `run_dir/checkpoint_<epoch>` (the newest `keep` kept), the newest restored by --resume."""

    rank, world = 0, 1

    def __init__(self, run_dir: str, keep: int, use_gpu: bool):
        self.run_dir, self.keep = run_dir, max(1, keep)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    def get(self, value):
        return value

    def _complete(self) -> list[str]:
        """The run's complete checkpoints, oldest first (a `.partial` copy a stopped run left is not one)."""
        if not os.path.isdir(self.run_dir):
            return []
        return sorted(n for n in os.listdir(self.run_dir) if n.startswith("checkpoint_") and "." not in n)

    def latest(self) -> str | None:
        found = self._complete()
        return os.path.join(self.run_dir, found[-1]) if found else None

    def checkpoint(self):
        return contextlib.nullcontext(self.latest())

    def prepare(self, model):
        return model.to(self.device)

    def report(self, metrics: dict, directory: str | None) -> None:
        import shutil

        final = os.path.join(self.run_dir, f"checkpoint_{metrics['epoch']:06d}")
        partial = final + ".partial"  # a run stopped while copying never leaves a checkpoint --resume would take
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(directory, partial)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in self._complete()[: -self.keep]:
            shutil.rmtree(os.path.join(self.run_dir, old), ignore_errors=True)


def train_loop_per_worker(config: dict, session: RaySession | LocalSession | None = None) -> dict:
    """Ray Train entry point (or, with a LocalSession, this process's). `config`: {"cfg": TrainConfig as dict,
    "raw_train"/"raw_eval": the raw splits (object refs under Ray), "train_feats"/"eval_feats": their features
    (tokenized once, on the driver), "fingerprint"}."""
    session = session or RaySession()
    if not config.get("verbose") and isinstance(session, RaySession):
        _quiet_ray_train_reports()
    cfg = TrainConfig(**config["cfg"])
    task = get_task(cfg.task)
    raw_train, raw_eval = session.get(config["raw_train"]), session.get(config["raw_eval"])
    rank, world, device = session.rank, session.world, session.device

    state: dict = {"epoch": 0, "step": 0, "history": []}
    with session.checkpoint() as ckpt_dir:
        tokenizer, model = _setup_model(task, cfg, raw_train, ckpt_dir)
        saved = torch.load(os.path.join(ckpt_dir, STATE_FILE), weights_only=False) if ckpt_dir else None

    if saved and saved.get("fingerprint", config["fingerprint"]) != config["fingerprint"]:
        raise ValueError(f"checkpoint of another run: {saved['fingerprint']} != {config['fingerprint']}")
    train_feats, eval_feats = session.get(config["train_feats"]), session.get(config["eval_feats"])
    collate = task.collator(tokenizer)
    batches = ResidentBatches(train_feats, collate, device)  # on the device before the loop
    lengths = batches.lengths.tolist() if cfg.group_by_length else None
    sampler = GlobalBatchSampler(len(train_feats), cfg.batch_size, rank, world, cfg.seed, lengths, cfg.batch_tokens)
    steps_per_epoch = len(sampler)  # epoch 1's: token-budget epochs differ a little
    total_steps = min(cfg.max_steps or math.inf, sum(sampler.steps(e) for e in range(cfg.epochs)))

    model = session.prepare(model)
    module = model.module if hasattr(model, "module") else model
    optimizer, scheduler = _setup_optimizer(module, cfg, total_steps, device)
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = {k: saved[k] for k in ("epoch", "step", "history")}
    if rank == 0:
        unit = f"{cfg.batch_tokens} padded tokens" if cfg.batch_tokens else cfg.batch_size
        say(
            f"{cfg.task}: {len(train_feats)} train / {len(eval_feats)} eval features, {world} worker(s), "
            f"global batch {unit}, {steps_per_epoch} steps/epoch, {total_steps} steps total"
            + (f", resuming after epoch {state['epoch']}" if saved else "")
        )
    # a Ray worker's stdout is never a terminal: lines; this process's may be: a bar there
    mode = "quiet" if cfg.quiet or rank != 0 else ("lines" if isinstance(session, RaySession) else progress_mode())
    bar = Progress("train", total_steps, "steps", mode, every_seconds=20, start=state["step"])

    metrics: dict = state["history"][-1] if state["history"] else {}
    for epoch in range(state["epoch"], cfg.epochs):
        if state["step"] >= total_steps:
            break
        t0 = time.perf_counter()
        train_stats = _train_epoch(
            model, batches, sampler, optimizer, scheduler, cfg, device, epoch, state, total_steps, rank, bar
        )
        t1 = time.perf_counter()
        eval_metrics, _ = run_eval(module, task, eval_feats, raw_eval, cfg, collate, device, rank, world)
        metrics = {
            "epoch": epoch + 1,
            "step": state["step"],
            **train_stats,
            "train_seconds": t1 - t0,
            "eval_seconds": time.perf_counter() - t1,
            "eval": eval_metrics,
        }
        state["epoch"] = epoch + 1
        state["history"].append(metrics)
        if rank == 0:
            say(f"epoch {epoch + 1}/{cfg.epochs}: {_headline(cfg.task, metrics)}")
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                _save_checkpoint(
                    tmp, module, tokenizer, optimizer, scheduler, {**state, "fingerprint": config["fingerprint"]}
                )
            session.report(metrics, tmp if rank == 0 else None)
    if mode != "quiet":
        bar.close()
    return {"final": metrics, "history": state["history"], "config": asdict(cfg), "world_size": world}


def _train_epoch(
    model, batches, sampler, optimizer, scheduler, cfg, device, epoch, state, total_steps, rank, bar
) -> dict:
    sampler.set_epoch(epoch)
    # Dropout RNG keyed by (seed, epoch, rank): a resumed run replays the same epoch bit for bit.
    torch.manual_seed(cfg.seed + 1000 * epoch + rank)
    model.train()
    # losses stay on the device and are read at logging steps only: a .item() per step would make the host wait
    # for the GPU every step
    losses, curve, tokens = [], [], 0
    start = time.perf_counter()
    for indices in sampler:
        batch = batches(indices)
        tokens += batches.tokens(indices)
        with _autocast(device):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        state["step"] += 1
        if state["step"] % cfg.log_every_steps == 0:
            recent = _mean(losses[-cfg.log_every_steps :])
            curve.append([state["step"], recent])
            bar.set(loss=round(recent, 4))
        bar.update(1, epoch=f"{epoch + 1}/{cfg.epochs}")
        if state["step"] >= total_steps:
            break
    seconds = time.perf_counter() - start
    return {
        "train_loss": _mean(losses) if losses else 0.0,
        "first_loss": losses[0].item() if losses else None,
        "loss_curve": curve,
        "train_tokens_per_second_rank0": tokens / seconds if seconds else 0.0,
    }


def _mean(losses: list[torch.Tensor]) -> float:
    return torch.stack(losses).double().mean().item()


def _headline(task: str, metrics: dict) -> str:
    score = get_task(task).headline(metrics["eval"])
    return f"train loss {metrics['train_loss']:.4f}, eval {score} ({metrics['train_seconds']:.1f} s train)"


def _flat(metrics: dict) -> dict:
    """Scalar metrics for Ray's reporting (nested per-type scores stay in metrics.json)."""
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    flat.update({f"eval_{k}": v for k, v in metrics["eval"].items() if isinstance(v, int | float)})
    return flat
