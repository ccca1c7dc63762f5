"""Optional MLflow tracking (`pip install 'nlpbatch[mlflow]'`): after a run, the driver logs its settings, the
per-epoch metrics, `training.png` and the exported model files to the tracking server given by
--mlflow-tracking-uri (an http(s):// server, databricks, or a local folder / file:// URI)."""

from __future__ import annotations

import os
from pathlib import Path

from nlpbatch.config import ConfigError


def require_mlflow():
    """The mlflow module, or a one-line error naming the extra to install (checked before training starts)."""
    try:
        import mlflow
    except ImportError as err:
        raise ConfigError("--mlflow-tracking-uri needs MLflow: pip install 'nlpbatch[mlflow]'") from err
    return mlflow


def log_run(uri: str, experiment: str, metrics: dict, output: Path) -> str:
    """Log one finished training run; returns the MLflow run id."""
    mlflow = require_mlflow()
    if "://" not in uri or uri.startswith("file:"):
        # the user asked for a local file store: MLflow 3 keeps it behind an opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=metrics.get("run_name")) as run:
        mlflow.log_params({k: "" if v is None else v for k, v in metrics["config"].items()})
        for epoch in metrics.get("history", []):
            values = {"train_loss": epoch["train_loss"], "train_seconds": epoch["train_seconds"]}
            values.update({f"eval_{k}": v for k, v in epoch["eval"].items() if isinstance(v, int | float)})
            mlflow.log_metrics(values, step=epoch["epoch"])
        for item in sorted(Path(output).iterdir()):
            if item.is_file():  # the HF model dir, metrics.json, training.png (not the checkpoints)
                mlflow.log_artifact(str(item), artifact_path="model")
        return run.info.run_id
