"""Every shipped YAML config loads; bad keys and values are all reported at once, naming the key."""

from pathlib import Path

import pytest
import yaml

from nlpbatch.config import ConfigError, load_train_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "jobs" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_job_configs_load(path):
    from nlpbatch.config import load_annotate_config

    loader = load_annotate_config if path.name.startswith("annotate") else load_train_config
    assert loader(path).task in ("ner", "qa")


def test_all_errors_reported_together(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: ner\noutput: x\nepocs: 3\nlearning_rate: fast\nbatch_size: 0\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    message = str(err.value)
    assert "epocs: unknown key" in message and "learning_rate: expected float" in message
    assert "batch_size: must be >= 1, got 0" in message


def test_cli_overrides_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: ner\noutput: x\nepochs: 3\n")
    assert load_train_config(path, epochs=1).epochs == 1
    with pytest.raises(ConfigError, match="batch_size: must be >= 1"):
        load_train_config(path, batch_size=0)


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(raw))
    for name, node in raw["available_node_types"].items():
        assert node.get("min_workers", 0) <= node.get("max_workers", 0) or name == raw["head_node_type"]


def test_windows_are_the_documented_ones():
    qa, ner = load_train_config(task="qa", output="x"), load_train_config(task="ner", output="x")
    assert (qa.max_length, ner.max_length) == (384, 512)  # stored, not None: JSON and checkpoints say it
    assert load_train_config(task="ner", output="x", max_length=128).max_length == 128  # no QA stride check for NER
    with pytest.raises(ConfigError, match="doc_stride: 200 must be in"):
        load_train_config(task="qa", output="x", max_length=384, doc_stride=200)


def test_evaluate_uses_the_windows_the_model_was_trained_with(tmp_path):
    import json

    from nlpbatch.evaluation import eval_config

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "nlpbatch.json").write_text(json.dumps({"task": "qa", "max_length": 256, "doc_stride": 64}))
    cfg = eval_config("qa", str(tmp_path))
    assert (cfg.max_length, cfg.doc_stride) == (256, 64)
    assert eval_config("qa", str(tmp_path), max_length=128, doc_stride=32).max_length == 128
    with pytest.raises(ConfigError, match="is a qa model: use `nlpbatch evaluate qa`"):
        eval_config("ner", str(tmp_path))
