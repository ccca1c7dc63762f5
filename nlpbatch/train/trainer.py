"""Driver side of fine-tuning: load and validate data before Ray starts, build the TorchTrainer, export the
final Hugging Face model and metrics.json."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from nlpbatch.config import ConfigError, TrainConfig, short_run_batch_size
from nlpbatch.data.squad import SkipReport
from nlpbatch.model_card import write_card
from nlpbatch.progress import say
from nlpbatch.raycluster import ensure_ray
from nlpbatch.storage import filesystem_for, join
from nlpbatch.tasks import get_task

RUN_FILE = "nlpbatch_run.json"  # in the run's storage folder: the settings a checkpoint is only valid for


def load_data(cfg: TrainConfig, train_skips: SkipReport, eval_skips: SkipReport):
    """Both splits, validated (errors name the file and line / question id) before any Ray work, and what each
    labelling-tool file gave, per split ({"train": [...], "validation": [...]}, from `spans.REPORTS`)."""
    from nlpbatch.data import spans as span_files

    before = len(span_files.REPORTS)
    task = get_task(cfg.task)
    options = cfg.data_options()
    from nlpbatch.data import fetch_data

    raw_train = task.load_split(
        fetch_data(cfg.train or cfg.data_dir),
        "train",
        cfg.max_train_examples,
        skip_invalid=cfg.skip_invalid,
        skips=train_skips,
        labels=cfg.labels,
        **options,
    )
    middle = len(span_files.REPORTS)
    raw_eval = task.load_split(  # the training labels, in their order, plus any type only validation has
        fetch_data(cfg.validation or cfg.data_dir),
        "validation",
        cfg.max_eval_examples,
        skip_invalid=cfg.skip_invalid,
        skips=eval_skips,
        labels=task.label_names(raw_train) or None,
        **options,
    )
    files = {"train": span_files.REPORTS[before:middle], "validation": span_files.REPORTS[middle:]}
    return raw_train, raw_eval, files


def learned_nothing(ev: dict) -> str | None:
    """What is wrong when a trained model's validation predictions carry no signal (only `O`, one class), with the
    usual fixes; None when they do."""
    fixes = (
        "usual fixes: more epochs (--epochs 5), a warm start from a fine-tuned model of a related task (--model "
        "runs/ner: any model of the task, its head replaced for your labels), a higher --learning-rate (1e-4), or "
        "more labelled examples"
    )
    if "per_type" in ev and "overall_f1" in ev:  # NER
        gold = sum(t.get("number", 0) for t in ev["per_type"].values())
        if gold and ev["overall_precision"] == 0 and ev["overall_recall"] == 0:
            return (
                f"the model found none of the {gold} validation entities (F1 0.0000): it predicts O everywhere; {fixes}"
            )
    matrix = (ev.get("confusion_matrix") or {}).get("rows_gold_columns_predicted")
    if matrix and len(matrix) > 1:  # classify: one predicted column holds every example
        predicted = [sum(column) for column in zip(*matrix)]
        gold = [sum(row) for row in matrix]
        if sum(1 for n in predicted if n) == 1 and sum(1 for n in gold if n) > 1:
            label = ev["confusion_matrix"]["labels"][next(i for i, n in enumerate(predicted) if n)]
            return f"the model predicts {label!r} for every validation example; {fixes}"
    return None


def run_identity(cfg: TrainConfig, output: Path, labels: list[str]) -> tuple[str, dict]:
    """(run name, fingerprint). The name comes from the task and the output, so two outputs (or NER and QA into
    one storage path) never share checkpoints; the fingerprint lists the settings that make a checkpoint
    incompatible, so `--resume` cannot continue a different run."""
    name = cfg.run_name or f"{cfg.task}-{output.name}-{hashlib.sha256(str(output).encode()).hexdigest()[:8]}"
    fingerprint = {
        "task": cfg.task,
        "model": cfg.model or "bundled:all-MiniLM-L6-v2",
        "labels": labels,
        "max_length": cfg.max_length,
        **get_task(cfg.task).fingerprint(cfg),
    }
    return name, fingerprint


def _prepare_storage(cfg: TrainConfig, output: Path, name: str, fingerprint: dict):
    """(storage path, pyarrow filesystem or None) for Ray Train, after the same --resume / --overwrite rules on
    local and remote storage: an earlier run is continued only with --resume and only if its fingerprint matches,
    and discarded only with --overwrite."""
    from pyarrow import fs

    from nlpbatch.storage import read_json, write_json

    uri = cfg.storage_path or str(output / "ray_runs")
    filesystem, path = filesystem_for(uri)
    run_dir = join(path, name)
    shown = join(uri.rstrip("/"), name)
    exists = filesystem.get_file_info(run_dir).type != fs.FileType.NotFound
    if exists and not cfg.resume:
        if not cfg.overwrite:
            raise ConfigError(
                f"{shown} holds an earlier training run: pass --resume to continue it or --overwrite to start over"
            )
        filesystem.delete_dir(run_dir)
        exists = False
    if exists:
        saved = read_json(filesystem, join(run_dir, RUN_FILE)) or {}
        differ = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
        if differ:
            detail = ", ".join(f"{k}: {saved.get(k)!r} there, {fingerprint.get(k)!r} now" for k in differ)
            raise ConfigError(f"--resume: {shown} is another run ({detail}); use --overwrite or another --output")
    elif cfg.resume:
        say(f"--resume: no earlier run in {shown}; starting from scratch")
    filesystem.create_dir(run_dir, recursive=True)
    write_json(filesystem, join(run_dir, RUN_FILE), fingerprint)
    if isinstance(filesystem, fs.LocalFileSystem):
        return path, None
    return path, filesystem


def run_training(cfg: TrainConfig) -> dict:
    """Fine-tune with Ray Train; returns the metrics also written to OUTPUT/metrics.json."""
    from transformers import AutoConfig

    from nlpbatch.models import resolve_model, worker_model

    t_start = time.perf_counter()
    if cfg.mlflow_tracking_uri:
        from nlpbatch.tracking import require_mlflow

        require_mlflow()  # a missing extra fails now, not after hours of training
    skips, eval_skips = SkipReport(), SkipReport()
    raw_train, raw_eval, read = load_data(cfg, skips, eval_skips)
    # what each labelling-tool file gave (used, skipped, resolved; the annotators' agreement): into metrics.json
    data_files = read["train"] + read["validation"]
    AutoConfig.from_pretrained(resolve_model(cfg.model))  # an unreadable model fails here, not in a worker
    output = Path(cfg.output).resolve()
    labels = get_task(cfg.task).label_names(raw_train)
    name, fingerprint = run_identity(cfg, output, labels)
    output.mkdir(parents=True, exist_ok=True)
    storage, storage_fs = _prepare_storage(cfg, output, name, fingerprint)

    from transformers import AutoTokenizer

    task = get_task(cfg.task)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    train_feats = task.train_features(raw_train, tokenizer, cfg)  # once, here: not once per worker
    eval_feats = task.eval_features(raw_eval, tokenizer, cfg)
    if cfg.batch_size is None:  # 16, or 8 for a short run (config.short_run_batch_size)
        cfg = dataclasses.replace(cfg, batch_size=short_run_batch_size(len(train_feats), cfg.epochs, cfg.num_workers))
    config = {
        "cfg": {**asdict(cfg), "model": worker_model(cfg.model)},
        "raw_train": raw_train,
        "raw_eval": raw_eval,
        "train_feats": train_feats,
        "eval_feats": eval_feats,
        "fingerprint": fingerprint,
        "verbose": os.environ.get("NLPBATCH_VERBOSE") == "1",
    }
    t_fit = time.perf_counter()
    local = cfg.local_training()
    if local:
        summary, checkpoint = _train_here(cfg, config, join(storage, name))
    else:
        summary, checkpoint = _train_on_ray(cfg, config, name, storage, storage_fs)
    fit_seconds = time.perf_counter() - t_fit
    if checkpoint is None:
        raise RuntimeError("training finished without a checkpoint (no epoch completed)")
    with checkpoint as directory:
        export_checkpoint(directory, output)
    if cfg.keep_checkpoints == 0:  # the exported model is what the user keeps: the run's checkpoints go
        uri = cfg.storage_path or str(output / "ray_runs")
        filesystem, path = filesystem_for(uri)
        filesystem.delete_dir(join(path, name))
        say(f"--keep-checkpoints 0: deleted the run's checkpoints ({join(uri.rstrip('/'), name)})")

    from nlpbatch.metrics import with_skipped_questions

    # skipped validation questions score 0, as the official script scores a missing answer
    history = [{**h, "eval": with_skipped_questions(h["eval"], eval_skips.count)} for h in summary.get("history", [])]
    final = summary.get("final", {})
    if final:
        final = {**final, "eval": with_skipped_questions(final["eval"], eval_skips.count)}
    # how it was trained (task, windows, labels) and what its validation chose (QA: the null threshold)
    card = get_task(cfg.task).card_settings(final.get("eval", {}), cfg, read["train"])
    warning = learned_nothing(final.get("eval", {}))
    if warning:
        say(f"warning: {warning}")
    write_card(output, {**fingerprint, "run_name": name, **card})
    calibrated = _calibrate(cfg, output, raw_eval)
    metrics = {
        "task": cfg.task,
        "final": final,
        "history": history,
        "skipped": {
            "count": skips.count + eval_skips.count,
            "validation": eval_skips.count,
            "examples": skips.skipped + eval_skips.skipped,
        },
        "run_name": name,
        "train_examples": len(raw_train),
        "eval_examples": len(raw_eval),
        **({"data_files": data_files} if data_files else {}),
        **({"warnings": [warning]} if warning else {}),
        **({"calibration": calibrated} if calibrated else {}),
        "timings": {
            "total_seconds": time.perf_counter() - t_start,
            "fit_seconds": fit_seconds,
            "train_loop_seconds": sum(h["train_seconds"] + h["eval_seconds"] for h in history),
        },
        "config": asdict(cfg),
        "world_size": summary.get("world_size"),
        "runner": "local" if local else "ray",
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if history:
        from nlpbatch.plots import save_training_plot

        save_training_plot(metrics, output)
    if cfg.mlflow_tracking_uri:
        from nlpbatch.tracking import log_run

        run_id = log_run(cfg.mlflow_tracking_uri, cfg.mlflow_experiment, metrics, output)
        say(f"logged to MLflow {cfg.mlflow_tracking_uri}: experiment {cfg.mlflow_experiment}, run {run_id}")
    return metrics


def _calibrate(cfg: TrainConfig, output: Path, raw_eval) -> dict | None:
    """The exported model's score calibrator, fitted on the validation split (`evaluation.calibrate_model`), for
    tasks whose scores have one; a validation split too small to fit one is said, never a failed run."""
    if not cfg.calibrate or get_task(cfg.task).score_outcomes is None:
        return None
    from nlpbatch.evaluation import calibrate_model

    try:
        report = calibrate_model(str(output), raw=raw_eval)
    except Exception as err:  # the model is trained and exported: a calibrator that cannot be fitted is said
        why = str(err).replace("calibrate: ", "", 1) if isinstance(err, ConfigError) else f"{type(err).__name__}: {err}"
        say(f"scores not calibrated: {why}")
        return None
    say(
        f"scores calibrated on validation ({report['predictions']} predictions): expected calibration error "
        f"{report['ece_before']:.3f} -> {report['ece_cross_fitted']:.3f}"
    )
    return report


def export_checkpoint(directory: str, output: Path) -> None:
    """Copy the Hugging Face files of a checkpoint directory (model, tokenizer, id2label) to OUTPUT, without the
    optimizer state, so `from_pretrained(OUTPUT)` works."""
    from nlpbatch.train.loop import STATE_FILE

    for item in Path(directory).iterdir():
        if item.name != STATE_FILE and item.is_file():
            shutil.copy2(item, output / item.name)


def _train_here(cfg: TrainConfig, config: dict, run_dir: str):
    """One worker in this process: (the loop's summary, a context giving the last checkpoint's directory)."""
    import contextlib

    from nlpbatch.train.loop import LocalSession, train_loop_per_worker

    say(f"{cfg.task}: training in this process, one worker (--runner ray: Ray Train, a cluster)")
    session = LocalSession(run_dir, cfg.keep_checkpoints, cfg.use_gpu)
    summary = train_loop_per_worker(config, session)
    latest = session.latest()
    return summary, (contextlib.nullcontext(latest) if latest else None)


def _train_on_ray(cfg: TrainConfig, config: dict, name: str, storage: str, storage_fs):
    """Ray Train's data-parallel workers: (the rank-0 loop's summary, a context giving the checkpoint's directory)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from nlpbatch.train.loop import train_loop_per_worker

    ensure_ray(cfg.num_workers * cfg.cpus_per_worker)
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}
    refs = {k: ray.put(config[k]) for k in ("raw_train", "raw_eval", "train_feats", "eval_feats")}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**config, **refs},
        scaling_config=ScalingConfig(
            # a (min, max) range makes the run elastic: it starts with what the cluster can give
            num_workers=(cfg.min_workers, cfg.num_workers) if cfg.min_workers else cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(num_to_keep=max(1, cfg.keep_checkpoints)),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            # Ray Train's own INFO lines (worker group, checkpoints reported) stay in its logs unless --verbose
            logging_config=LoggingConfig(log_level="INFO" if config["verbose"] else "WARNING"),
        ),
    )
    result = trainer.fit()
    return result.return_value or {}, (result.checkpoint.as_directory() if result.checkpoint else None)
