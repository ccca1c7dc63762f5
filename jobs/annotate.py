"""`ray job submit ... -- python jobs/annotate.py jobs/configs/annotate_ner.yaml [key=value ...]`: annotate a
corpus from a YAML job config. Thin by design: all logic lives in the nlpbatch package."""

import json
import sys

import yaml

from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.config import load_annotate_config

if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python jobs/annotate.py CONFIG.yaml [key=value ...]")
    overrides = dict(arg.split("=", 1) for arg in sys.argv[2:])
    manifest = run_annotation(load_annotate_config(sys.argv[1], **{k: yaml.safe_load(v) for k, v in overrides.items()}))
    print(json.dumps({k: manifest[k] for k in ("run_id", "rows_in", "rows_out", "rows_rejected")}, indent=2))
