"""`ray job submit ... -- python jobs/train.py jobs/configs/train_ner.yaml [KEY=VALUE ...]`: fine-tune from a YAML
job config. Thin by design: all logic lives in the nlpbatch package."""

import json
import sys

import yaml

from nlpbatch.config import load_train_config
from nlpbatch.train.trainer import run_training

if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python jobs/train.py CONFIG.yaml [key=value ...]")
    overrides = dict(arg.split("=", 1) for arg in sys.argv[2:])
    cfg = load_train_config(sys.argv[1], **{k: yaml.safe_load(v) for k, v in overrides.items()})
    print(json.dumps(run_training(cfg)["final"], indent=2))
