"""Shared fixtures: tiny random BERTs built from a config (no download), the shared data, one local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup fails at once instead of timing out
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Dummy credentials for the loopback S3 server, set before Ray starts so its worker processes inherit them
# (as production workers get theirs from the environment or an instance role).
for key, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(key, value)

REPO = Path(__file__).resolve().parents[1]
# Ray workers import what the driver imports by module name: a task defined in the test suite
# (integration/toy_task.py) must be importable there too, as a user's own task module is on their cluster.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "tests"), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("NLPBATCH_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    if not (path / "conll2003" / "train.txt").is_file():
        pytest.fail(f"shared data not found at {path}: set NLPBATCH_DATA_DIR")
    return path


def make_tiny_model(path: Path, task: str, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A randomly initialised BERT with the bundled tokenizer's vocabulary, saved as a HF model dir."""
    import torch
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForTokenClassification,
        AutoTokenizer,
        BertConfig,
    )

    from nlpbatch.data.conll import NER_LABELS
    from nlpbatch.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    if task == "ner":
        config.id2label = dict(enumerate(NER_LABELS))
        config.label2id = {n: i for i, n in enumerate(NER_LABELS)}
        model = AutoModelForTokenClassification.from_config(config)
    else:
        model = AutoModelForQuestionAnswering.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_ner_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_ner"), "ner")


@pytest.fixture(scope="session")
def tiny_qa_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_qa"), "qa")


@pytest.fixture(scope="session")
def trained_ner_model(tmp_path_factory, data_dir) -> Path:
    """The bundled MiniLM fine-tuned in this process for 30 steps on 480 CoNLL sentences (entity F1 well above
    chance), its scores calibrated on 200 validation sentences at the end of training, as `train` does."""
    from nlpbatch.config import load_train_config
    from nlpbatch.train.trainer import run_training

    output = tmp_path_factory.mktemp("trained") / "ner"
    cfg = load_train_config(
        task="ner",
        output=str(output),
        data_dir=str(data_dir),
        epochs=1,
        max_train_examples=480,
        max_eval_examples=200,
        batch_size=16,
        learning_rate=3e-4,
        runner="local",
        keep_checkpoints=0,
        quiet=True,
    )
    run_training(cfg)
    return output


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for all integration tests (starting Ray costs 5-10 s). 4 logical CPUs on 2 cores: room for
    3 Train workers plus the controller. address="local": always a fresh cluster of our own, never one that happens to
    run on the machine (a user's `ray start`, another checkout's tests), which would refuse num_cpus."""
    import ray

    context = ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=True)
    yield context
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 protocol server on 127.0.0.1 (moto's server mode), reached over HTTP by boto3 and pyarrow."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3_bucket(s3_server, request):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    import hashlib
    import re

    slug = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:36].strip("-")
    name = f"nlpbatch-{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
    client.create_bucket(Bucket=name)
    return client, name
