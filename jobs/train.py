"""`ray job submit ... -- python jobs/train.py jobs/configs/train_ner.yaml [key=value ...]`: fine-tune from a YAML
job config. Thin by design: all logic lives in the nlpbatch package."""

import json
import sys

from nlpbatch.cli import run_job
from nlpbatch.config import config_from_argv, load_train_config
from nlpbatch.train.trainer import run_training


def main() -> int:
    print(json.dumps(run_training(config_from_argv(load_train_config, sys.argv[1:]))["final"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
