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
