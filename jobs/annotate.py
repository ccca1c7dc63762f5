"""`ray job submit ... -- python jobs/annotate.py jobs/configs/annotate_ner.yaml [key=value ...]`: annotate a
corpus from a YAML job config. Thin by design: all logic lives in the nlpbatch package."""

import json
import sys

from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.cli import run_job
from nlpbatch.config import config_from_argv, load_annotate_config


def main() -> int:
    manifest = run_annotation(config_from_argv(load_annotate_config, sys.argv[1:]))
    print(json.dumps({k: manifest[k] for k in ("run_id", "rows_in", "rows_out", "rows_rejected")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
