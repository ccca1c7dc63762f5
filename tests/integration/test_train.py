"""Fine-tuning through Ray Train for real: DDP workers, checkpoints, resume after a killed run, export."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlpbatch.config import load_train_config
from nlpbatch.evaluation import eval_config, evaluate_model
from nlpbatch.train.trainer import run_training

pytestmark = pytest.mark.integration


def test_bundled_model_two_workers_learns_ner(ray_cluster, data_dir, tmp_path):
    """A few dozen DDP steps of the bundled MiniLM: the loss falls and F1 rises well above the untrained model's."""
    cfg = load_train_config(
        task="ner",
        output=str(tmp_path / "out"),
        data_dir=str(data_dir),
        num_workers=2,
        epochs=1,
        max_train_examples=960,
        max_eval_examples=200,
        batch_size=16,
        learning_rate=3e-4,
        log_every_steps=10,
    )
    metrics = run_training(cfg)
    final = metrics["final"]
    assert metrics["world_size"] == 2 and final["step"] == 60
    curve = [loss for _, loss in final["loss_curve"]]
    assert curve[-1] < 0.5 * curve[0], f"loss did not fall: {curve}"
    # chance: the same base model with its fresh, untrained head
    from transformers import AutoTokenizer, set_seed

    from nlpbatch.data.conll import load_conll
    from nlpbatch.models import resolve_model
    from nlpbatch.tasks.ner import build_model

    set_seed(cfg.seed)
    untrained = tmp_path / "untrained"
    build_model(resolve_model(None), load_conll(data_dir / "conll2003" / "validation.txt", 1)).save_pretrained(
        untrained
    )
    AutoTokenizer.from_pretrained(resolve_model(None)).save_pretrained(untrained)
    chance, _ = evaluate_model(eval_config("ner", str(untrained)), str(data_dir), max_examples=200)
    assert final["eval"]["overall_f1"] > max(0.3, chance["overall_f1"] + 0.2), (final["eval"], chance)
    # the exported model scores the same outside Ray as the last epoch did inside it
    out = Path(cfg.output)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["final"]["eval"] == final["eval"]
    rescored, _ = evaluate_model(eval_config("ner", str(out)), str(data_dir), max_examples=200)
    assert rescored == final["eval"]
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["1"] == "B-PER" and config["label2id"]["I-MISC"] == 8


def _cli_train(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "nlpbatch", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _three_epochs(data_dir, model, **kw) -> dict:
    """The run the resume tests kill and resume: 3 epochs of 1,500 sentences on one worker."""
    return dict(
        task="ner",
        data_dir=str(data_dir),
        model=str(model),
        epochs=3,
        num_workers=1,
        max_train_examples=1500,
        max_eval_examples=100,
        batch_size=8,
        log_every_steps=20,
        **kw,
    )


def test_killed_run_resumes_to_the_same_result(ray_cluster, tiny_ner_model, data_dir, tmp_path):
    common = _three_epochs(data_dir, tiny_ner_model)
    reference = run_training(load_train_config(output=str(tmp_path / "ref"), **common))

    # the same run as a CLI process on the same cluster, killed once its first checkpoint is registered
    out = tmp_path / "killed"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"]}
    flags = [
        "ner",
        "--output",
        str(out),
        "--data-dir",
        str(data_dir),
        "--model",
        str(tiny_ner_model),
        "--epochs",
        "3",
        "--num-workers",
        "1",
        "--max-train-examples",
        "1500",
        "--max-eval-examples",
        "100",
        "--batch-size",
        "8",
    ]
    proc = _cli_train(flags, env)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(out.glob("ray_runs/*/checkpoint_manager_*")):
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted:\n" + proc.stdout.read().decode()[-3000:]
    assert list(out.glob("ray_runs/*/checkpoint_manager_*")), "no checkpoint within 240 s"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()

    resumed = run_training(load_train_config(output=str(out), resume=True, **common))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["final"]["eval"] == reference["final"]["eval"]
    assert resumed["final"]["train_loss"] == pytest.approx(reference["final"]["train_loss"], rel=1e-6)


def test_one_worker_in_this_process_trains_as_ray_train_does_and_resumes(
    ray_cluster, tiny_ner_model, data_dir, tmp_path
):
    """--runner local (what `auto` picks for one worker without a cluster): the same loop as one Ray Train worker,
    the same losses and scores; a CLI run killed after its first epoch resumes to the uninterrupted result."""
    small = {**_three_epochs(data_dir, tiny_ner_model, quiet=True), "epochs": 2, "max_train_examples": 400}
    on_ray = run_training(load_train_config(output=str(tmp_path / "ray"), runner="ray", **small))
    alone = run_training(load_train_config(output=str(tmp_path / "alone"), runner="local", **small))
    assert (on_ray["runner"], alone["runner"]) == ("ray", "local")
    assert alone["final"]["eval"] == on_ray["final"]["eval"]
    assert [h["train_loss"] for h in alone["history"]] == pytest.approx(
        [h["train_loss"] for h in on_ray["history"]], rel=1e-6
    )

    common = _three_epochs(data_dir, tiny_ner_model, quiet=True)  # long enough to be killed after its first epoch
    here = run_training(load_train_config(output=str(tmp_path / "here"), runner="local", **common))

    out = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster named: auto trains here
    flags = ["ner", "--output", str(out), "--data-dir", str(data_dir), "--model", str(tiny_ner_model)]
    flags += ["--epochs", "3", "--num-workers", "1", "--max-train-examples", "1500", "--max-eval-examples", "100"]
    proc = _cli_train([*flags, "--batch-size", "8", "--log-every-steps", "20"], env)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(out.glob("ray_runs/*/checkpoint_000001")):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted:\n" + proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists() and not list(out.glob("ray_runs/*/checkpoint_000003"))
    resumed = run_training(load_train_config(output=str(out), resume=True, runner="local", **common))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["final"]["eval"] == here["final"]["eval"]
    assert resumed["final"]["train_loss"] == pytest.approx(here["final"]["train_loss"], rel=1e-6)
    assert len(list(out.glob("ray_runs/*/checkpoint_*"))) == 1  # --keep-checkpoints 1


def test_existing_run_needs_resume_or_overwrite(tmp_path, data_dir):
    from nlpbatch.config import ConfigError
    from nlpbatch.data.conll import NER_LABELS
    from nlpbatch.train.trainer import run_identity

    cfg = load_train_config(
        task="ner", output=str(tmp_path), data_dir=str(data_dir), max_train_examples=5, max_eval_examples=5
    )
    name, _ = run_identity(cfg, tmp_path.resolve(), NER_LABELS)
    (tmp_path / "ray_runs" / name).mkdir(parents=True)
    with pytest.raises(ConfigError, match="--resume .* --overwrite"):
        run_training(cfg)


def test_runs_never_mix_on_remote_storage(
    ray_cluster, tiny_ner_model, tiny_qa_model, data_dir, s3_server, s3_bucket, tmp_path, monkeypatch
):
    """NER then QA into one s3:// storage path: each run has its own identity; reruns need --resume/--overwrite
    on S3 exactly as on local disk, and --resume refuses a run trained with other settings, naming them."""
    from nlpbatch.config import ConfigError

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    storage = f"s3://{s3_bucket[1]}/ckpt"
    common = dict(data_dir=str(data_dir), epochs=1, max_train_examples=40, max_eval_examples=10, storage_path=storage)
    ner = run_training(load_train_config(task="ner", output=str(tmp_path / "ner"), model=str(tiny_ner_model), **common))
    qa = run_training(load_train_config(task="qa", output=str(tmp_path / "qa"), model=str(tiny_qa_model), **common))
    assert ner["run_name"] != qa["run_name"] and "exact_match" in qa["final"]["eval"]  # QA trained, not NER reloaded
    assert [h["epoch"] for h in qa["history"]] == [1]
    keys = [o["Key"] for o in s3_bucket[0].list_objects_v2(Bucket=s3_bucket[1], Prefix="ckpt/")["Contents"]]
    assert {k.split("/")[1] for k in keys} - {""} == {ner["run_name"], qa["run_name"]}

    again = dict(task="ner", output=str(tmp_path / "ner"), model=str(tiny_ner_model), **common)
    with pytest.raises(ConfigError, match="holds an earlier training run: pass --resume .* or --overwrite"):
        run_training(load_train_config(**again, learning_rate=5e-4))
    with pytest.raises(ConfigError, match=r"--resume: .* is another run \(max_length: 512 there, 128 now\)"):
        run_training(load_train_config(**again, resume=True, max_length=128))
    exported = json.loads((tmp_path / "qa" / "nlpbatch.json").read_text())
    assert (exported["task"], exported["max_length"], exported["doc_stride"]) == ("qa", 384, 128)


def test_qa_two_workers_trains_and_evaluates(ray_cluster, tiny_qa_model, data_dir, tmp_path):
    cfg = load_train_config(
        task="qa",
        output=str(tmp_path / "qa"),
        data_dir=str(data_dir),
        model=str(tiny_qa_model),
        num_workers=2,
        epochs=2,
        max_train_examples=300,
        max_eval_examples=40,
        max_length=192,
        doc_stride=64,
        batch_size=16,
        batch_tokens=16 * 192,  # token-budget steps, split over 2 DDP workers (the NER tests use --batch-size)
        learning_rate=1e-3,
        log_every_steps=5,
    )
    metrics = run_training(cfg)
    first, last = metrics["history"][0], metrics["history"][-1]
    assert last["train_loss"] < first["first_loss"], metrics["history"]
    assert last["eval"]["n"] == 40 and 0 <= last["eval"]["f1"] <= 100
    rescored, preds = evaluate_model(
        eval_config("qa", cfg.output, max_length=192, doc_stride=64), str(data_dir), max_examples=40
    )
    assert rescored == last["eval"] and len(preds) == 40


@pytest.mark.parametrize("quiet", [False, True], ids=["progress", "quiet"])
def test_cli_training_reports_progress_once(ray_cluster, tiny_ner_model, data_dir, tmp_path, quiet):
    # --model relative to the working directory, as users type it: the Train workers run elsewhere
    flags = ["ner", "--output", str(tmp_path / "out"), "--data-dir", str(data_dir), "--model", tiny_ner_model.name]
    flags += ["--epochs", "1", "--max-train-examples", "200", "--max-eval-examples", "50", "--batch-size", "8"]
    mlruns = tmp_path / "mlruns"
    flags += ["--quiet"] if quiet else ["--mlflow-tracking-uri", mlruns.as_uri(), "--mlflow-experiment", "ci"]
    proc = subprocess.run(
        [sys.executable, "-m", "nlpbatch", "train", *flags],
        env={**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"]},
        cwd=tiny_ner_model.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["final"]["eval"]["overall_f1"] >= 0.0  # stdout: the result only
    ours = [line.split("[nlpbatch] ", 1)[1] for line in proc.stderr.splitlines() if "[nlpbatch] " in line]
    # each line once (Ray Train's print patch used to echo every worker line twice)
    assert sum("25 steps total" in line for line in ours) == 1, ours
    assert sum(line.startswith("epoch 1/1: ") for line in ours) == 1, ours
    progress = [line for line in ours if line.startswith(("train: ", "evaluate: "))]
    if quiet:
        assert progress == []
    else:
        assert any(line.startswith("train: 25/25 steps (100%)") and "ETA 0:00" in line for line in progress), ours
        assert any(line.startswith("evaluate: ") and "batches (100%)" in line for line in progress), ours
    assert "LOAD REPORT" not in proc.stderr and "Loading weights" not in proc.stderr
    assert "Reporting training result" not in proc.stderr  # Ray Train's per-epoch TrainingReport, unless --verbose
    assert "constructor arguments in the object store" not in proc.stderr  # Ray's line about its own actors
    assert "\x1b[" not in proc.stderr  # a log file or a cron mail: no ANSI colour codes from Ray's worker prefixes
    from PIL import Image

    with Image.open(tmp_path / "out" / "training.png") as plot:  # loss and F1 curves beside metrics.json
        assert plot.size[0] > 500 and len(set(plot.convert("L").getdata())) > 10
    if not quiet:  # the run in MLflow (a local file store): params, per-epoch metrics, the model files
        import mlflow

        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        client = mlflow.tracking.MlflowClient(tracking_uri=mlruns.as_uri())
        [run] = client.search_runs([client.get_experiment_by_name("ci").experiment_id])
        assert run.data.params["learning_rate"] == "0.0002" and run.data.params["max_train_examples"] == "200"
        f1 = json.loads(proc.stdout)["final"]["eval"]["overall_f1"]
        assert run.data.metrics["eval_overall_f1"] == pytest.approx(f1)
        logged = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
        assert {"model/config.json", "model/model.safetensors", "model/training.png"} <= logged
