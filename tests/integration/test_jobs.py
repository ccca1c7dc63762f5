"""`ray job submit` for real: a local Ray head with its job server, jobs submitted through the Jobs SDK."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from .ray_procs import agent_ports, free_port, stop_head

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
EXCLUDES = [".venv", ".ci-venv", ".git", "runs", "benchmarks/out", "**/__pycache__"]


@pytest.fixture()
def ray_head():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port, dash = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayjob", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 chars
    ray = str(Path(sys.executable).parent / "ray")
    proc = subprocess.run(
        [
            ray,
            "start",
            "--head",
            f"--port={port}",
            f"--dashboard-port={dash}",
            "--num-cpus=3",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--temp-dir={temp_dir}",
            *agent_ports(),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    try:
        yield f"http://127.0.0.1:{dash}"
    finally:
        stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(client, **kwargs) -> str:
    """The head's job agent starts a few seconds after `ray start` returns: retry until it answers."""
    deadline = time.time() + 60
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.time() > deadline:
                raise
            time.sleep(1)


def _wait(client, job_id, timeout=240):
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(1)
    raise TimeoutError(client.get_job_logs(job_id)[-3000:])


def test_annotate_job_submitted_to_job_server(ray_head, tiny_ner_model, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    pq.write_table(pa.table({"id": ["a", "b"], "text": ["Angela Merkel in Paris.", None]}), tmp_path / "in.parquet")
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "ner",
                "model": str(tiny_ner_model),
                "input": str(tmp_path / "in.parquet"),
                "output": str(tmp_path / "out"),
            }
        )
    )
    client = JobSubmissionClient(ray_head)
    runtime_env = {
        "working_dir": str(REPO),
        "excludes": EXCLUDES,
        "env_vars": {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"},
    }
    job = _submit(client, entrypoint=f"{sys.executable} jobs/annotate.py {config}", runtime_env=runtime_env)
    assert _wait(client, job) == JobStatus.SUCCEEDED, client.get_job_logs(job)[-3000:]
    manifest = json.loads((tmp_path / "out" / "_SUCCESS.json").read_text())
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_rejected"]) == (2, 1, 1)
    assert '"rows_out": 1' in client.get_job_logs(job)

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "task": "ner",
                "model": str(tiny_ner_model),
                "input": str(tmp_path / "nope"),
                "output": str(tmp_path / "out2"),
            }
        )
    )
    failing = _submit(client, entrypoint=f"{sys.executable} jobs/annotate.py {bad}", runtime_env=runtime_env)
    assert _wait(client, failing) == JobStatus.FAILED
    assert "nope: no such file, directory or prefix" in client.get_job_logs(failing)
