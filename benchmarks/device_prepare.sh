#!/usr/bin/env bash
# Everything a GPU run of nlpbatch needs on the lent device machine (../shared/device/README.md), built here:
# the shared prepare.sh (Ray, the fp16 base model, the data in .device/), then the wheels nlpbatch needs that the
# device image lacks (`datasets` and its own dependencies, for training), for the device's Python 3.12, into
# .device/ray so that the README's call 1 installs them with Ray. Run from the project root, venv active:
#   bash benchmarks/device_prepare.sh
# The calls themselves are in benchmarks/gpu.py's docstring.
set -euo pipefail
PY=${PYTHON:-python3}
mkdir -p "$(git rev-parse --git-dir)/info"  # prepare.sh records .device/ in .git/info/exclude
../shared/device/prepare.sh
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64)
# datasets 4.x: 5.x wants huggingface_hub 2, the device's transformers 5.17 wants 1.x
"$PY" -m pip download -q --no-deps "${plat[@]}" -d .device/ray \
  "datasets>=4,<5" "dill>=0.3,<0.4.2" "multiprocess<0.70.20" xxhash "fsspec<=2026.2.0" "requests>=2.32.2" \
  urllib3 idna charset-normalizer certifi
du -sh .device/ray
